"""Outage drills: kill and restart Redis, then PostgreSQL, under wrk load, and count.

Each drill runs forwardauth (2 workers) on a Redis and a PostgreSQL of its own (free ports, so
they may be killed), drives ``/auth`` with wrk and the 1,000-token rotation of ``auth.lua``,
and beside it a prober that sends requests whose right answer it knows, with a timestamp:

- tokens that were revoked, and a forged one: any 2xx is a **false pass**;
- in the Redis drill, the live tokens once Redis is back empty (it keeps nothing on disk, so
  they no longer exist): any 2xx after Redis answers again is a false pass too;
- in the PostgreSQL drill, logins with the right and with a wrong password (a 2xx for a wrong
  one is a false pass).

Usage: ``perf/run-drills``; ``perf/run-drills --soak 60`` for the soak run instead (see
perf/README.md). Needs wrk and the PostgreSQL server programs
(Debian's, as for the tests).
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF.parent))  # the tests' own store servers

import bench  # noqa: E402

from forwardauth import config  # noqa: E402
from forwardauth.core.passwords import Passwords  # noqa: E402
from forwardauth.stores import migrations, users  # noqa: E402
from forwardauth.stores.postgres import Database  # noqa: E402
from tests.stores import OwnPostgres, OwnRedis  # noqa: E402
from tests.support import FAST_ARGON2, PASSWORD  # noqa: E402


@dataclass
class Probe:
    """What the prober saw: (monotonic time, kind, status or 0 for a failed connection)."""

    answers: list[tuple[float, str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def statuses(self, kind: str, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(s for t, k, s in self.answers if k == kind and since <= t < until)


def call(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def probe(port: int, requests: dict[str, tuple[str, str, dict[str, str], bytes | None]], seen: Probe) -> None:
    """Send each kind of request in turn, on a new connection each (any worker may answer)."""
    while not seen.stop.is_set():
        for kind, (method, path, headers, body) in requests.items():
            seen.answers.append((time.monotonic(), kind, call(port, method, path, headers, body)))


@contextmanager
def forwardauth(env: dict[str, str], work: Path) -> Iterator[int]:
    port = bench.free_port()
    full = {**env, "FORWARDAUTH_PORT": str(port), "FORWARDAUTH_WORKERS": str(bench.WORKERS)}
    with bench.process([sys.executable, "-m", "forwardauth", "serve"], full, work / f"fa-{port}.log"):
        bench.wait_http(f"http://127.0.0.1:{port}/readyz")
        yield port


def first_time(seen: Probe, kind: str, since: float, wanted: set[int]) -> float | None:
    return next((t for t, k, s in seen.answers if k == kind and t >= since and s in wanted), None)


def redis_drill(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[str]:
    redis_server = OwnRedis(work / "redis")
    redis_server.start()
    try:
        env = {**env, "FORWARDAUTH_REDIS_URL": redis_server.url}
        settings = config.load(env)
        live, revoked = work / "live.txt", work / "revoked.txt"
        bench.mint_tokens(settings, live)
        bench.mint_tokens(settings, revoked, count=50, revoked=True)
        old_token = live.read_text().split()[0]
        revoked_token = revoked.read_text().split()[0]
        forged = old_token[:-4] + ("AAAA" if not old_token.endswith("AAAA") else "BBBB")
        with forwardauth(env, work) as port:
            seen = Probe()
            kinds = {
                kind: ("GET", "/auth", {"Authorization": f"Bearer {token}"}, None)
                for kind, token in (("live", old_token), ("revoked", revoked_token), ("forged", forged))
            }
            with ThreadPoolExecutor(2) as pool:
                load = pool.submit(bench.wrk, f"http://127.0.0.1:{port}/auth", live, args.seconds, args.connections)
                prober = pool.submit(probe, port, kinds, seen)
                time.sleep(args.seconds * 0.25)  # a drill's timeline, not a wait for readiness
                killed = time.monotonic()
                redis_server.kill()
                time.sleep(args.outage)
                redis_server.start()
                back = time.monotonic()  # Redis answers PING again (start() waited for it)
                result = load.result()
                seen.stop.set()
                prober.result()
    finally:
        redis_server.kill()
    false_passes = sum(seen.statuses(k)[200] for k in ("revoked", "forged")) + seen.statuses("live", since=back)[200]
    first_503 = first_time(seen, "live", killed, {503})
    recovered = first_time(seen, "live", back, {401})
    memory_passes = seen.statuses("live", killed, first_503 or killed)[200]
    return [
        f"Redis killed (SIGKILL) after {args.seconds * 0.25:.0f} s of wrk -c{args.connections} "
        f"-d{args.seconds}s, restarted empty {args.outage:.0f} s later:",
        f"  wrk: {result['requests']:,.0f} requests, {result['non2xx']:,.0f} non-2xx "
        f"(503 during the outage, then 401: the tokens died with Redis), {result['socket_errors']:,.0f} socket errors",
        f"  prober: {len(seen.answers):,} requests; false passes: {false_passes}; "
        f"statuses live {dict(seen.statuses('live'))}, revoked {dict(seen.statuses('revoked'))}, "
        f"forged {dict(seen.statuses('forged'))}; 500s: "
        f"{sum(seen.statuses(k)[500] for k in kinds)}",
        f"  fail-closed after the kill: {fmt_ms(first_503, killed)} "
        f"({memory_passes} live-token checks passed from memory before the loss was seen)",
        f"  recovery after Redis answered again: {fmt_ms(recovered, back)} to the right answer (401)",
    ]


def postgres_drill(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[str]:
    postgres = OwnPostgres()
    postgres.start()
    try:
        env = {**env, "FORWARDAUTH_DATABASE_URL": postgres.url, **FAST_ARGON2}
        migrations.migrate(postgres.url)
        db = Database(postgres.url, 1)
        db.call(users.create, Passwords(1, 1024, 1), "drill", PASSWORD, ("user",), None)
        db.close()
        settings = config.load(env)
        live = work / "pg-live.txt"
        bench.mint_tokens(settings, live)
        with forwardauth(env, work) as port:
            seen = Probe()

            def login(password: str) -> tuple[str, str, dict[str, str], bytes]:
                body = json.dumps({"username": "drill", "password": password}).encode()
                return "POST", "/login", {"Content-Type": "application/json"}, body

            kinds = {"login": login(PASSWORD), "wrong password": login("not " + PASSWORD)}
            with ThreadPoolExecutor(2) as pool:
                load = pool.submit(bench.wrk, f"http://127.0.0.1:{port}/auth", live, args.seconds, args.connections)
                prober = pool.submit(probe, port, kinds, seen)
                time.sleep(args.seconds * 0.25)  # a drill's timeline, not a wait for readiness
                killed = time.monotonic()
                postgres.stop(signal.SIGQUIT)  # immediate shutdown: as a crash
                time.sleep(args.outage)
                postgres.start()
                back = time.monotonic()
                result = load.result()
                seen.stop.set()
                prober.result()
    finally:
        postgres.remove()
    false_passes = seen.statuses("wrong password")[200]
    recovered = first_time(seen, "login", back, {200})
    return [
        f"PostgreSQL killed (SIGQUIT, immediate shutdown) after {args.seconds * 0.25:.0f} s of wrk "
        f"-c{args.connections} -d{args.seconds}s, restarted {args.outage:.0f} s later:",
        f"  wrk /auth: {result['requests']:,.0f} requests, {result['non2xx']:,.0f} non-2xx, "
        f"{result['socket_errors']:,.0f} socket errors",
        f"  prober logins: {len(seen.answers):,}; false passes: {false_passes}; statuses right password "
        f"{dict(seen.statuses('login'))}, wrong password {dict(seen.statuses('wrong password'))}; during the "
        f"outage {dict(seen.statuses('login', killed, back))}",
        f"  recovery after PostgreSQL accepted connections again: {fmt_ms(recovered, back)} to the first login",
    ]


def soak(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[str]:
    """/auth at the highest rate the machine sustains for ``--soak`` seconds: errors and the
    workers' memory before and after (after a warm-up, so caches are full before the first reading)."""
    settings = config.load(env)
    live = work / "soak.txt"
    bench.mint_tokens(settings, live)
    with forwardauth(env, work) as port:
        url = f"http://127.0.0.1:{port}/auth"
        bench.wrk(url, live, 10, args.connections)
        before = bench.worker_rss_mb(port)
        result = bench.wrk(url, live, args.soak, args.connections)
        after = bench.worker_rss_mb(port)
    growth = (sum(after) - sum(before)) / sum(before) * 100
    return [
        f"Soak: wrk -c{args.connections} -d{args.soak}s on /auth ({bench.WORKERS} workers, after a 10 s warm-up):",
        f"  {result['requests']:,.0f} requests, {result['rps']:,.0f}/s, p99 {result['p99_ms']:.2f} ms, "
        f"{result['non2xx']:,.0f} non-2xx, {result['socket_errors']:,.0f} socket errors",
        f"  worker RSS {' + '.join(f'{m:.1f}' for m in before)} MB before, "
        f"{' + '.join(f'{m:.1f}' for m in after)} MB after: {growth:+.2f}%",
    ]


def fmt_ms(when: float | None, since: float) -> str:
    return "never" if when is None else f"{(when - since) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=16, help="wrk duration of each drill")
    parser.add_argument("--outage", type=float, default=3.0, help="seconds a store stays down")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--soak", type=int, metavar="SECONDS", help="only the soak run, this long")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forwardauth-drills-"))
    env = {
        "FORWARDAUTH_REDIS_PREFIX": f"drill:{secrets.token_hex(4)}:",
        "FORWARDAUTH_DATA_DIR": str(work / "data"),
        "FORWARDAUTH_ISSUER": "https://auth.example.com",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
        # the prober's wrong passwords all come from 127.0.0.1: no throttling in the way
        "FORWARDAUTH_LOGIN_MAX_FAILURES": "1000000",
    }
    try:
        with bench.throwaway_database() as database_url:
            if args.soak:
                print(
                    "\n".join(
                        soak(
                            args,
                            work,
                            {**env, "FORWARDAUTH_DATABASE_URL": database_url, "FORWARDAUTH_REDIS_URL": bench.REDIS_URL},
                        )
                    )
                )
                return
            lines = redis_drill(args, work, {**env, "FORWARDAUTH_DATABASE_URL": database_url})
        redis_server = OwnRedis(work / "redis-pg")
        redis_server.start()
        try:
            lines += postgres_drill(args, work, {**env, "FORWARDAUTH_REDIS_URL": redis_server.url})
        finally:
            redis_server.kill()
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
