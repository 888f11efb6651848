"""The measurements besides the /auth table: revocation propagation, memory per worker and per live
token, live tokens by the million, and the in-turn comparisons of ``--compare-rules`` and
``--compare-pat``."""

from __future__ import annotations

import argparse
import http.client
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from harness import REDIS_URL, WORKERS, Starter, cpu_seconds, free_port, worker_pids, worker_rss_mb, wrk

from forwardauth.constants import RedisKeys
from forwardauth.core.tokens import new_id


def status_of(port: int, token: str) -> int:
    """GET /auth on a new connection (so that any worker may answer), without client overhead."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/auth", headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def measure_extras(start: Starter, database_url: str) -> dict[str, str]:
    """Revocation propagation, RSS per worker, Redis memory per live token (login throughput: logins.py)."""
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
        rss = worker_rss_mb(port)
        out["rss"] = f"RSS per worker after those trials: {', '.join(f'{r:.0f} MB' for r in rss)}"
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
        grown = int(client.info("memory")["used_memory"])
        for key in client.scan_iter(match=prefix + "*", count=5000):
            client.delete(key)
        client.close()
        out["redis"] = (
            f"Redis memory per live token (its key plus a one-token session set, {count:,} tokens): "
            f"{(grown - before) / count:.0f} bytes"
        )
    finally:
        ctx.__exit__(None, None, None)
    return out


def compare_rules(servers: list[tuple[str, Starter, Path]], rounds: int, args: argparse.Namespace) -> None:
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
            ctx.__exit__(None, None, None)

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


def million_tokens(start: Starter, tokens: Path, args: argparse.Namespace) -> str:
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
        ctx.__exit__(None, None, None)
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
