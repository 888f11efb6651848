"""/auth throughput and latency, side by side in one run: the machine is shared and noisy, so
the ratios between configurations measured minutes apart are what count, not absolutes.

Configurations: nginx answering 200 itself (the machine's ceiling), bare aiohttp + uvloop (the
floor of Python's own overhead), and forwardauth in several settings; plus the full chain a
user deploys through nginx, Traefik, Caddy and Envoy (``<proxy> -> forwardauth -> static``)
against the same proxy alone (proxies.py). wrk drives each with a Lua script rotating through
1,000 users' tokens. The other measurements are in extras.py and logins.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import extras
import instructions
import logins
import proxies
import psycopg2
from harness import ADMIN_URL as ADMIN_URL
from harness import PERF, REDIS_URL, USERS, WORKERS, Starter, forwardauth, started
from harness import free_port as free_port
from harness import process as process
from harness import wait_http as wait_http
from harness import worker_rss_mb as worker_rss_mb
from harness import wrk as wrk

from forwardauth import config
from forwardauth.constants import RedisKeys
from forwardauth.core import pats
from forwardauth.core.pats import PatClaims
from forwardauth.core.tokens import Identity, TokenService
from forwardauth.core.tokens import new_id as new_id
from forwardauth.dev.demo import find_program
from forwardauth.keys import load_ring
from forwardauth.redisurl import RedisSettings
from forwardauth.stores import migrations
from forwardauth.stores.patrecords import PatRecords
from forwardauth.stores.redis import connect
from forwardauth.stores.revocation import Revocations

# free_port, process, wait_http, worker_rss_mb and wrk are read from here by drills.py.
HMAC_SECRET = "perf-only-secret-" + "x" * 32
PAT_TTL = 3600  # the personal access tokens' lifetime: the run's


def hundred_rules(path: Path) -> Path:
    """99 rules that do not match the benchmark's host, then the one that does: all 100 are evaluated."""
    lines = ["default: deny", "rules:"]
    for i in range(99):
        lines += [f"  - host: service{i}.internal.example", f"    path: /area{i}", "    roles: [team" + str(i) + "]"]
    lines += ["  - host: app.example.com", "    policy: authenticated"]
    path.write_text("\n".join(lines) + "\n")
    return path


def mint_tokens(settings: config.Settings, target: Path, count: int = USERS, revoked: bool = False) -> None:
    """Tokens for ``count`` users, live in Redis (or registered then revoked), one per line:
    what wrk rotates through."""
    ring = load_ring(settings)
    service = TokenService(ring, settings.issuer, settings.audience, settings.access_ttl, settings.leeway)

    async def register(minted: list[tuple[str, str]]) -> None:
        assert settings.redis_url is not None
        revocations = Revocations(connect(RedisSettings.from_url(settings.redis_url)), RedisKeys(settings.redis_prefix))
        for sid, jti in minted:
            await revocations.register(sid, jti, settings.access_ttl)
            if revoked:
                await revocations.revoke(sid, jti)
        await revocations.close()

    tokens, live = [], []
    for n in range(count):
        identity = Identity(subject=f"user-{n}", username=f"user{n}", roles=("user",), email=f"u{n}@example.com")
        sid = new_id()
        minted = service.mint(identity, sid)
        tokens.append(minted.token)
        live.append((sid, minted.claims.jti))
    asyncio.run(register(live))
    target.write_text("\n".join(tokens) + "\n")


def mint_personal_tokens(settings: config.Settings, target: Path, count: int = USERS) -> None:
    """Personal access tokens for ``count`` users, live in Redis as ``token add`` leaves them (a
    record and a registration; PostgreSQL is not on /auth's path), one ``Basic user:token``
    header value per line, as git and ``curl -u`` send them."""

    async def publish(made: list[tuple[str, PatClaims]]) -> None:
        assert settings.redis_url is not None
        client, keys = connect(RedisSettings.from_url(settings.redis_url)), RedisKeys(settings.redis_prefix)
        revocations, records = Revocations(client, keys), PatRecords(client, keys)
        for key, claims in made:
            await records.put(key, claims, PAT_TTL)
            await revocations.register(claims.sid, claims.jti, PAT_TTL)
        await revocations.close()

    lines, made = [], []
    expires = int(time.time()) + PAT_TTL
    for n in range(count):
        identity = Identity(subject=f"user-{n}", username=f"user{n}", roles=("user",), email=f"u{n}@example.com")
        token, token_id = pats.new_token(), new_id()
        made.append((pats.digest(token), pats.PatClaims(pats.sid_of(token_id), token_id, identity, ("read",), expires)))
        lines.append("Basic " + base64.b64encode(f"user{n}:{token}".encode()).decode())
    asyncio.run(publish(made))
    target.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--only",
        nargs="*",
        help="run only the configurations whose name contains one of these; 'chain' runs every proxy row, "
        "'nginx', 'traefik', 'caddy' or 'envoy' a proxy's two",
    )
    parser.add_argument(
        "--logins",
        type=int,
        metavar="SECONDS",
        help="only measure login throughput per core (production Argon2id), SECONDS per run",
    )
    parser.add_argument(
        "--compare-rules",
        type=int,
        metavar="ROUNDS",
        help="only compare no policy, 0 rules and 100 rules, in turn for ROUNDS rounds",
    )
    parser.add_argument(
        "--compare-pat",
        type=int,
        metavar="ROUNDS",
        help="only compare session tokens with personal access tokens (Basic), in turn for ROUNDS rounds",
    )
    parser.add_argument(
        "--instructions", action="store_true", help="only count instructions per request under callgrind"
    )
    parser.add_argument("--old", type=Path, metavar="DIR", help="with --instructions: rows for this source tree too")
    args = parser.parse_args()
    for program in ("valgrind",) if args.instructions else ("wrk", "nginx"):
        if not find_program(program):
            sys.exit(f"perf/run needs {program} (apt-get install {program})")
    nginx = find_program("nginx") or "nginx"
    work = Path(tempfile.mkdtemp(prefix="forwardauth-perf-"))
    with throwaway_database() as database_url:
        try:
            run(args, work, database_url, nginx)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A migrated database of its own on the machine's PostgreSQL, dropped afterwards."""
    name = f"forwardauth_perf_{secrets.token_hex(4)}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        database_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        migrations.migrate(database_url)
        yield database_url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def run(args: argparse.Namespace, work: Path, database_url: str, nginx: str) -> None:
    prefix = f"perf:{secrets.token_hex(4)}:"
    base_env = {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": prefix,
        "FORWARDAUTH_DATA_DIR": str(work / "data"),
        "FORWARDAUTH_ISSUER": "https://auth.example.com",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
    }
    hs_env = {**base_env, "FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET": HMAC_SECRET}
    rs_tokens, hs_tokens = work / "rs256.txt", work / "hs256.txt"
    mint_tokens(config.load(base_env), rs_tokens)
    mint_tokens(config.load(hs_env), hs_tokens)
    pat_tokens = work / "pat.txt"
    mint_personal_tokens(config.load(base_env), pat_tokens)
    policy = hundred_rules(work / "policy.yml")

    def fa(env: dict[str, str], workers: int) -> Starter:
        return forwardauth(work, env, workers)

    def simple(args_for: Callable[[int], list[str]]) -> Starter:
        return lambda port: started(args_for(port), None, work / f"proc-{port}.log", f"http://127.0.0.1:{port}/")

    def nginx_alone(port: int) -> list[str]:
        return [nginx, "-p", str(work), "-c", str(proxies.nginx_conf(work / f"n{port}", port, WORKERS, "ceiling"))]

    # The ceiling and the floor get the same requests as forwardauth, token included: reading a
    # request is the server's cost, not the check's (without the token they did ~8% less work).
    configurations: list[tuple[str, Starter, Path | None, str]] = [
        ("nginx return 200 (ceiling)", simple(nginx_alone), rs_tokens, "/auth"),
        (
            f"bare aiohttp+uvloop, {WORKERS} workers (floor)",
            simple(lambda p: [sys.executable, str(PERF / "bare.py"), str(p), str(WORKERS)]),
            rs_tokens,
            "/auth",
        ),
        ("forwardauth RS256, 1 worker", fa(base_env, 1), rs_tokens, "/auth"),
        (f"forwardauth RS256, {WORKERS} workers", fa(base_env, WORKERS), rs_tokens, "/auth"),
        (
            f"forwardauth RS256, {WORKERS} workers, 100 rules",
            fa({**base_env, "FORWARDAUTH_POLICY_FILE": str(policy)}, WORKERS),
            rs_tokens,
            "/auth",
        ),
        (
            f"forwardauth RS256, {WORKERS} workers, Redis on every check (local cache off)",
            fa({**base_env, "FORWARDAUTH_LOCAL_CACHE": "false"}, WORKERS),
            rs_tokens,
            "/auth",
        ),
        (f"forwardauth HS256, {WORKERS} workers", fa(hs_env, WORKERS), hs_tokens, "/auth"),
        # Compare with the RS256 row of the same workers (issue 17: at least 0.9 of it).
        (
            f"forwardauth personal access token, Basic, {WORKERS} workers",
            fa(base_env, WORKERS),
            pat_tokens,
            "/auth",
        ),
    ]
    results: list[tuple[str, dict[str, float]]] = []
    if args.instructions:
        print(instructions.table(base_env, {"rs": rs_tokens, "pat": pat_tokens}, policy, work, args.old))
        return
    if args.logins:
        for line in logins.measure(base_env, database_url, work, args.logins):
            print(line)
        return
    if args.compare_rules:
        no_rules = work / "no-rules.yml"
        no_rules.write_text("default: authenticated\nrules: []\n")
        extras.compare_rules(
            [
                ("no policy file", fa(base_env, WORKERS), rs_tokens),
                (
                    "policy, 0 rules",
                    fa({**base_env, "FORWARDAUTH_POLICY_FILE": str(no_rules)}, WORKERS),
                    rs_tokens,
                ),
                (
                    "policy, 100 rules",
                    fa({**base_env, "FORWARDAUTH_POLICY_FILE": str(policy)}, WORKERS),
                    rs_tokens,
                ),
            ],
            args.compare_rules,
            args,
        )
        return  # (the finally below still cleans up)
    if args.compare_pat:  # the same server twice: session tokens against personal access tokens
        extras.compare_rules(
            [
                ("session token (RS256)", fa(base_env, WORKERS), rs_tokens),
                ("personal access token, Basic", fa(base_env, WORKERS), pat_tokens),
            ],
            args.compare_pat,
            args,
        )
        return
    for label, start, tokens, path in configurations:
        if args.only and not any(o in label for o in args.only):
            continue
        port = free_port()
        ctx = start(port)
        try:
            wrk(f"http://127.0.0.1:{port}{path}", tokens, 2, args.connections)  # warm up
            results.append((label, wrk(f"http://127.0.0.1:{port}{path}", tokens, args.seconds, args.connections)))
        finally:
            ctx.__exit__(None, None, None)
        print(f"{label}: {results[-1][1]}", file=sys.stderr, flush=True)
    # The full chain a user deploys, through each proxy, against the same proxy alone.
    results += proxies.measure(args, work, nginx, fa(base_env, WORKERS), rs_tokens)
    lines = {} if args.only else extras.measure_extras(fa(base_env, WORKERS), database_url)
    if not args.only:
        lines["logins"] = "\n".join(logins.measure(base_env, database_url, work, args.seconds))
    if not args.only or any("million" in o for o in args.only):
        lines["million"] = extras.million_tokens(
            fa({**base_env, "FORWARDAUTH_LOCAL_CACHE": "false"}, WORKERS), rs_tokens, args
        )
    report(results, args)
    for line in [*proxies.ratios(results), *lines.values()]:
        print(line)


def report(results: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> None:
    by_label = dict(results)
    ceiling = next((r["rps"] for label, r in results if "ceiling" in label), None)
    floor = next((r["rps"] for label, r in results if "floor" in label), None)
    print(
        f"\nwrk -t2 -c{args.connections} -d{args.seconds}s, {USERS} users' tokens rotating, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    print("| configuration | requests/s | p50 ms | p99 ms | p99.9 ms | non-2xx | vs nginx | vs bare aiohttp |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in by_label.items():
        vs_nginx = f"{r['rps'] / ceiling:.2f}" if ceiling else "-"
        vs_floor = f"{r['rps'] / floor:.2f}" if floor else "-"
        print(
            f"| {label} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | "
            f"{int(r['non2xx'])} | {vs_nginx} | {vs_floor} |"
        )


if __name__ == "__main__":
    main()
