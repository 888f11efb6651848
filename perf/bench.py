"""/auth throughput and latency, side by side in one run: the machine is shared and noisy, so
the ratios between configurations measured minutes apart are what count, not absolutes.

Configurations: nginx answering 200 itself (the machine's ceiling), bare aiohttp + uvloop (the
floor of Python's own overhead), and forwardauth in several settings; plus the full chain a
user deploys (nginx auth_request -> forwardauth -> static upstream) against nginx alone.
wrk drives each with a Lua script rotating through 1,000 users' tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from forwardauth import config
from forwardauth.constants import RedisKeys
from forwardauth.core import pats
from forwardauth.core.pats import PatClaims
from forwardauth.core.tokens import Identity, TokenService, new_id
from forwardauth.dev.demo import find_program
from forwardauth.keys import load_ring
from forwardauth.redisurl import RedisSettings
from forwardauth.stores import migrations
from forwardauth.stores.patrecords import PatRecords
from forwardauth.stores.redis import connect
from forwardauth.stores.revocation import Revocations

PERF = Path(__file__).resolve().parent
ADMIN_URL = os.environ.get("FORWARDAUTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FORWARDAUTH_TEST_REDIS", "redis://127.0.0.1:6379/0")
USERS = 1000
WORKERS = os.cpu_count() or 2
HMAC_SECRET = "perf-only-secret-" + "x" * 32
PAT_TTL = 3600  # the personal access tokens' lifetime: the run's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answered: up (the chain answers 401 without a token)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        if log:
            out.close()  # type: ignore[union-attr]


def wrk(
    url: str,
    tokens: Path | None,
    seconds: int,
    connections: int,
    script: str = "auth.lua",
    extra_env: dict[str, str] | None = None,
) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "TOKENS"} | (extra_env or {})
    if tokens is not None:
        env["TOKENS"] = str(tokens)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(PERF / script), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not match:
        raise RuntimeError(out)
    return dict(json.loads(match.group(1)))


def nginx_conf(workdir: Path, port: int, workers: int, mode: str, auth_port: int = 0) -> Path:
    """nginx on ``port``: ``ceiling`` answers 200 itself; ``proxy`` proxies to a static 200 server;
    ``chain`` does the same behind auth_request to forwardauth on ``auth_port``.

    (``return`` runs before the access phase, so a protected location must proxy somewhere for
    auth_request to run at all.)
    """
    workdir.mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"  {k}_temp_path {workdir}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    static_port = free_port()
    body = (
        "    location / { return 200; }\n"
        if mode == "ceiling"
        else (
            "    location / {\n"
            + (
                "      auth_request /_auth;\n      auth_request_set $user $upstream_http_x_auth_user;\n"
                "      proxy_set_header X-Auth-User $user;\n"
                if mode == "chain"
                else ""
            )
            + '      proxy_pass http://static;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
            "    }\n"
            "    location = /_auth {\n      internal;\n      proxy_pass http://forwardauth/auth;\n"
            '      proxy_pass_request_body off;\n      proxy_set_header Content-Length "";\n'
            "      proxy_set_header X-Original-URL https://app.example.com$request_uri;\n"
            "      proxy_set_header X-Original-Method $request_method;\n"
            '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n    }\n'
        )
    )
    upstreams = (
        ""
        if mode == "ceiling"
        else (
            f"  upstream static {{ server 127.0.0.1:{static_port}; keepalive 256; }}\n"
            f"  upstream forwardauth {{ server 127.0.0.1:{auth_port or static_port}; keepalive 256; }}\n"
            f"  server {{ listen 127.0.0.1:{static_port}; location / {{ return 200; }} }}\n"
        )
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes {workers};\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n{temp}{upstreams}"
        f"  server {{\n    listen 127.0.0.1:{port} reuseport;\n{body}  }}\n}}\n"
    )
    return conf


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
    parser.add_argument("--only", nargs="*", help="run only these configurations")
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
    args = parser.parse_args()
    for program in ("wrk", "nginx"):
        if not find_program(program):
            sys.exit(f"perf/run needs {program} (apt-get install {program})")
    nginx = find_program("nginx")
    assert nginx is not None
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

    def forwardauth(env: dict[str, str], workers: int) -> Callable[[int], object]:
        def start(port: int) -> object:
            full = {**env, "FORWARDAUTH_PORT": str(port), "FORWARDAUTH_WORKERS": str(workers)}
            ctx = process([sys.executable, "-m", "forwardauth", "serve"], full, work / f"fa-{port}.log")
            ctx.__enter__()
            wait_http(f"http://127.0.0.1:{port}/readyz")
            return ctx

        return start

    def simple(args_for: Callable[[int], list[str]], ready: str = "/") -> Callable[[int], object]:
        def start(port: int) -> object:
            ctx = process(args_for(port), None, work / f"proc-{port}.log")
            ctx.__enter__()
            wait_http(f"http://127.0.0.1:{port}{ready}")
            return ctx

        return start

    def nginx_alone(port: int) -> list[str]:
        return [nginx, "-p", str(work), "-c", str(nginx_conf(work / f"n{port}", port, WORKERS, "ceiling"))]

    configurations: list[tuple[str, Callable[[int], object], Path | None, str]] = [
        ("nginx return 200 (ceiling)", simple(nginx_alone), None, "/auth"),
        (
            f"bare aiohttp+uvloop, {WORKERS} workers (floor)",
            simple(lambda p: [sys.executable, str(PERF / "bare.py"), str(p), str(WORKERS)]),
            None,
            "/auth",
        ),
        ("forwardauth RS256, 1 worker", forwardauth(base_env, 1), rs_tokens, "/auth"),
        (f"forwardauth RS256, {WORKERS} workers", forwardauth(base_env, WORKERS), rs_tokens, "/auth"),
        (
            f"forwardauth RS256, {WORKERS} workers, 100 rules",
            forwardauth({**base_env, "FORWARDAUTH_POLICY_FILE": str(policy)}, WORKERS),
            rs_tokens,
            "/auth",
        ),
        (
            f"forwardauth RS256, {WORKERS} workers, Redis EXISTS on every request",
            forwardauth({**base_env, "FORWARDAUTH_LOCAL_CACHE": "false"}, WORKERS),
            rs_tokens,
            "/auth",
        ),
        (f"forwardauth HS256, {WORKERS} workers", forwardauth(hs_env, WORKERS), hs_tokens, "/auth"),
        # Compare with the RS256 row of the same workers (issue 17: at least 0.9 of it).
        (
            f"forwardauth personal access token, Basic, {WORKERS} workers",
            forwardauth(base_env, WORKERS),
            pat_tokens,
            "/auth",
        ),
    ]
    results: list[tuple[str, dict[str, float]]] = []
    if args.compare_rules:
        no_rules = work / "no-rules.yml"
        no_rules.write_text("default: authenticated\nrules: []\n")
        compare_rules(
            [
                ("no policy file", forwardauth(base_env, WORKERS), rs_tokens),
                (
                    "policy, 0 rules",
                    forwardauth({**base_env, "FORWARDAUTH_POLICY_FILE": str(no_rules)}, WORKERS),
                    rs_tokens,
                ),
                (
                    "policy, 100 rules",
                    forwardauth({**base_env, "FORWARDAUTH_POLICY_FILE": str(policy)}, WORKERS),
                    rs_tokens,
                ),
            ],
            args.compare_rules,
            args,
        )
        return  # (the finally below still cleans up)
    if args.compare_pat:  # the same server twice: session tokens against personal access tokens
        compare_rules(
            [
                ("session token (RS256)", forwardauth(base_env, WORKERS), rs_tokens),
                ("personal access token, Basic", forwardauth(base_env, WORKERS), pat_tokens),
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
            ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
        print(f"{label}: {results[-1][1]}", file=sys.stderr, flush=True)
    # The full chain a user deploys, against the same nginx proxying without auth_request.
    if not args.only or any("chain" in o for o in args.only):
        fa_port = free_port()
        fa = forwardauth(base_env, WORKERS)(fa_port)
        try:
            for label, mode in (
                ("nginx (1 worker) -> static upstream, no auth", "proxy"),
                (f"nginx (1 worker) auth_request -> forwardauth {WORKERS} workers -> static", "chain"),
            ):
                front = free_port()
                conf = nginx_conf(work / f"c{front}", front, 1, mode, fa_port)
                proxy = simple(lambda p, conf=conf: [nginx, "-p", str(work), "-c", str(conf)])(front)
                try:
                    wrk(f"http://127.0.0.1:{front}/page", rs_tokens, 2, args.connections)
                    results.append(
                        (label, wrk(f"http://127.0.0.1:{front}/page", rs_tokens, args.seconds, args.connections))
                    )
                finally:
                    proxy.__exit__(None, None, None)  # type: ignore[attr-defined]
                print(f"{label}: {results[-1][1]}", file=sys.stderr, flush=True)
        finally:
            fa.__exit__(None, None, None)  # type: ignore[attr-defined]
    extras = {} if args.only else measure_extras(forwardauth(base_env, WORKERS), database_url)
    if not args.only or any("million" in o for o in args.only):
        extras["million"] = million_tokens(
            forwardauth({**base_env, "FORWARDAUTH_LOCAL_CACHE": "false"}, WORKERS), rs_tokens, args
        )
    report(results, args)
    for line in extras.values():
        print(line)


def worker_pids(port: int) -> list[int]:
    """The forwardauth worker processes serving ``port`` (found by their environment in /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"spawn_main" in cmdline and f"FORWARDAUTH_PORT={port}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def worker_rss_mb(port: int) -> list[float]:
    """RSS of each forwardauth worker serving ``port``."""
    sizes = []
    for pid in worker_pids(port):
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return sizes


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def status_of(port: int, token: str) -> int:
    """GET /auth on a new connection (so that any worker may answer), without client overhead."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/auth", headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def measure_extras(start: Callable[[int], object], database_url: str) -> dict[str, str]:
    """Revocation propagation, RSS per worker, Redis memory per live token."""
    import httpx
    import redis

    from forwardauth.core.passwords import Passwords
    from forwardauth.stores import users
    from forwardauth.stores.postgres import Database

    port = free_port()
    ctx = start(port)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, str] = {}
    try:
        db = Database(database_url, 1)
        name = f"perf-{secrets.token_hex(3)}"
        db.call(users.create, Passwords(1, 1024, 1), name, "perf bench passphrase", ("user",), None)
        db.close()
        delays = []
        for _ in range(100):
            token = httpx.post(base + "/login", json={"username": name, "password": "perf bench passphrase"}).json()[
                "access_token"
            ]
            for _ in range(4 * WORKERS):  # every worker remembers it as live
                assert status_of(port, token) == 200
            logout = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            started = time.perf_counter()
            logout.request("POST", "/logout", headers={"Authorization": f"Bearer {token}"})
            logout.getresponse().read()
            revoked = time.perf_counter()
            logout.close()
            refused = 0  # consecutive refusals over new connections (they land on any worker)
            while refused < 4 * WORKERS:
                refused = refused + 1 if status_of(port, token) == 401 else 0
            delays.append(((revoked - started) * 1000, (time.perf_counter() - revoked) * 1000))
        calls = sorted(d[0] for d in delays)
        after = sorted(d[1] for d in delays)
        out["propagation"] = (
            f"Revocation propagation ({WORKERS} workers, local cache on, 100 trials): the logout call took p50 "
            f"{calls[49]:.1f} ms (max {calls[-1]:.1f}); from its answer to {4 * WORKERS} consecutive 401s on new "
            f"connections (any worker): p50 {after[49]:.1f} ms, max {after[-1]:.1f} ms, those checks included"
        )
        login_env = {"LOGIN_USER": name, "LOGIN_PASSWORD": "perf bench passphrase"}
        logins = wrk(base + "/login", None, 10, 8, "login.lua", login_env)
        out["logins"] = (
            f"Login throughput, production Argon2id (t=3, m=64 MiB, p=4), {WORKERS} workers x "
            f"{config.load({}).db_pool_size} threads, 8 connections: {logins['rps']:.1f} logins/s, "
            f"p50 {logins['p50_ms']:.0f} ms, p99 {logins['p99_ms']:.0f} ms, non-2xx "
            f"{int(logins['non2xx'])}"
        )
        rss = worker_rss_mb(port)
        out["rss"] = f"RSS per worker after the run: {', '.join(f'{r:.0f} MB' for r in rss)}"
        client = redis.Redis.from_url(REDIS_URL)
        before = int(client.info("memory")["used_memory"])
        prefix = f"perfmem:{secrets.token_hex(3)}:"
        keys = RedisKeys(prefix)
        pipe = client.pipeline(transaction=False)
        count = 10_000
        for n in range(count):
            sid, jti = new_id(), new_id()
            pipe.set(keys.access_token(sid, jti), b"1", ex=900)
            pipe.sadd(keys.session_tokens(sid), jti)
            pipe.expire(keys.session_tokens(sid), 900)
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
        after = int(client.info("memory")["used_memory"])
        for key in client.scan_iter(match=prefix + "*", count=5000):
            client.delete(key)
        client.close()
        out["redis"] = (
            f"Redis memory per live token (its key plus a one-token session set, {count:,} tokens): "
            f"{(after - before) / count:.0f} bytes"
        )
    finally:
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
    return out


def compare_rules(
    servers: list[tuple[str, Callable[[int], object], Path]], rounds: int, args: argparse.Namespace
) -> None:
    """All servers up at once, each driven with its own tokens, measured in turn, the order
    rotating each round (so none is always first or last); each is compared with the last (the
    100-rule policy; the personal access tokens).

    Two measures per run: requests/s, which moves with the machine and with how the kernel
    spreads wrk's connections over the workers, and the workers' CPU time per request (from
    /proc), which is the cost of one /auth itself and steadier.
    """
    ports = [free_port() for _ in servers]
    contexts = []
    rates: list[list[float]] = [[] for _ in servers]
    cpu_us: list[list[float]] = [[] for _ in servers]
    try:
        for (_, start, _), port in zip(servers, ports, strict=True):
            contexts.append(start(port))
        pids = [worker_pids(port) for port in ports]
        for (_, _, tokens), port in zip(servers, ports, strict=True):
            wrk(f"http://127.0.0.1:{port}/auth", tokens, 2, args.connections)
        order = list(range(len(servers)))
        for round_ in range(rounds):
            for i in order[round_ % len(order) :] + order[: round_ % len(order)]:
                before = cpu_seconds(pids[i])
                result = wrk(f"http://127.0.0.1:{ports[i]}/auth", servers[i][2], args.seconds, args.connections)
                cpu_us[i].append((cpu_seconds(pids[i]) - before) / result["requests"] * 1e6)
                rates[i].append(result["rps"])
    finally:
        for ctx in contexts:
            ctx.__exit__(None, None, None)  # type: ignore[attr-defined]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    for (label, _, _), rate, cpu in zip(servers, rates, cpu_us, strict=True):
        print(
            f"{label}: {', '.join(f'{r:,.0f}' for r in rate)} req/s; "
            f"CPU per request {', '.join(f'{c:.1f}' for c in cpu)} us"
        )
    ruled = servers[-1][0]
    for (label, _, _), rate, cpu in zip(servers[:-1], rates, cpu_us, strict=False):
        rate_ratios = sorted(r / p for p, r in zip(rate, rates[-1], strict=True))
        cpu_ratios = sorted(r / p for p, r in zip(cpu, cpu_us[-1], strict=True))
        print(
            f"{ruled} vs {label}: CPU per request x{median(cpu_ratios):.3f} "
            f"({(median(cpu_ratios) - 1) * 100:+.1f}%; rounds {', '.join(f'{r:.3f}' for r in cpu_ratios)}), "
            f"requests/s x{median(rate_ratios):.3f} (rounds {', '.join(f'{r:.3f}' for r in rate_ratios)})"
        )


def million_tokens(start: Callable[[int], object], tokens: Path, args: argparse.Namespace) -> str:
    """/auth with a Redis round trip on every request, beside 1,000 and then 1,000,000 live tokens."""
    import redis

    port = free_port()
    ctx = start(port)
    url = f"http://127.0.0.1:{port}/auth"
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"perfmillion:{secrets.token_hex(3)}:"
    keys = RedisKeys(prefix)
    try:
        wrk(url, tokens, 2, args.connections)
        small = wrk(url, tokens, args.seconds, args.connections)
        pipe = client.pipeline(transaction=False)
        for n in range(1, 1_000_001):
            pipe.set(keys.access_token(f"s{n}", f"j{n}"), b"1", ex=1800)
            if n % 10_000 == 0:
                pipe.execute()
        pipe.execute()
        live = client.dbsize()
        large = wrk(url, tokens, args.seconds, args.connections)
    finally:
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
        for batch in _batches(client.scan_iter(match=prefix + "*", count=10_000), 10_000):
            client.delete(*batch)
        client.close()
    return (
        f"Live tokens in Redis, Redis EXISTS on every request: with 1,000 -> {small['rps']:,.0f}/s, p50 "
        f"{small['p50_ms']:.2f} ms, p99 {small['p99_ms']:.2f} ms; with {live:,} keys -> {large['rps']:,.0f}/s, "
        f"p50 {large['p50_ms']:.2f} ms, p99 {large['p99_ms']:.2f} ms"
    )


def _batches(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
