"""/metrics: forwardauth's own aggregator against prometheus_client's multiprocess mode, in process.

Three measurements, each a ratio taken in one run (the machine is shared: absolutes move):

1. the cost of one more aiohttp middleware layer on a request (what composing ``observe`` and
   ``errors`` as two ordinary middlewares costs over one calling the other);
2. counting one ``/auth`` answer: the own aggregator's increments (what ``metrics.observe`` does)
   against prometheus_client's multiprocess counters and histogram (mmap files, a lock per value),
   alone and through the whole middleware chain;
3. a scrape that adds up N workers: ``Metrics.exposition`` over N snapshot files against
   ``MultiProcessCollector`` over N workers' mmap files, for the same series.

    .venv/bin/python perf/metrics_bench.py [--workers 2 8 32] [--rounds 5] [--nested-from 97cb64d]

``--nested-from REV`` adds the composition of that commit, where ``observe`` called ``errors``
itself (one aiohttp layer for both), loaded from git beside today's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# prometheus_client picks its value class when first imported: multiprocess only if this is set.
PROM_DIR = Path(tempfile.mkdtemp(prefix="fa-prom-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROM_DIR)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from bisect import bisect_left  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, cast  # noqa: E402

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402
from aiohttp.typedefs import Handler, Middleware  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from forwardauth import config  # noqa: E402
from forwardauth.http.errors import errors  # noqa: E402
from forwardauth.http.metrics import (  # noqa: E402
    BUCKETS,
    COUNTERS,
    DURATION,
    REASONS,
    Decisions,
    HandlerStats,
    Metrics,
    Totals,
    observe,
)
from forwardauth.http.services import build_services  # noqa: E402
from forwardauth.logs import enter_request, leave_request  # noqa: E402
from forwardauth.safefiles import write_private  # noqa: E402

# Store URLs nothing answers: nothing here reaches a store.
SETTINGS = config.load(
    {
        "FORWARDAUTH_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "FORWARDAUTH_REDIS_URL": "redis://127.0.0.1:9/0",
        "FORWARDAUTH_SIGNING_ALG": "HS256",
        "FORWARDAUTH_HMAC_SECRET": "perf-only-secret-" + "x" * 32,
    }
)
# The series a busy server has: its handlers, each with a few statuses, and every decision.
HANDLERS = (
    "auth",
    "login",
    "login_form",
    "refresh",
    "logout",
    "logout_form",
    "forbidden",
    "token",
    "revoke",
    "introspect",
    "jwks",
    "metadata",
    "openapi_json",
    "healthz",
    "readyz",
    "prometheus",
)
STATUSES = (200, 303, 400, 401, 403, 503)
CALLS = 200_000  # per timing of a loop


# --- 1 and 2: per request ---------------------------------------------------------------------


async def auth(request: web.Request) -> web.Response:
    return web.Response()


@web.middleware
async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def prometheus_observe() -> Middleware:
    """What ``metrics.observe`` does, counted in prometheus_client's multiprocess metrics."""
    requests = Counter(*COUNTERS["requests"], registry=None)  # a scrape reads the files, not a registry
    duration = Histogram(*DURATION, ("handler",), buckets=BUCKETS, registry=None)
    children: dict[tuple[object, int], tuple[Any, Any]] = {}

    @web.middleware
    async def observe_prometheus(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 0
        start = time.perf_counter()
        current = enter_request(request)
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            if status:
                elapsed = time.perf_counter() - start
                try:
                    counter, histogram = children[handler, status]
                except KeyError:
                    name = getattr(handler, "__name__", "unmatched")
                    counter = requests.labels(name, str(status))
                    histogram = duration.labels(name)
                    children[handler, status] = counter, histogram
                counter.inc()
                histogram.observe(elapsed)
            leave_request(current)

    return observe_prometheus


async def per_request(chains: dict[str, list[Middleware]], rounds: int) -> dict[str, float]:
    """Best seconds per request of an app with each chain and a handler that does nothing; the
    chains take turns in short runs, so a busy moment of the machine hits them alike."""
    handles = {}
    for name, middlewares in chains.items():
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/auth", auth)
        app.freeze()
        # The app's own entry, without a socket: only the chain is timed.
        handles[name] = app._handle, make_mocked_request("GET", "/auth", app=app)
    best = dict.fromkeys(chains, float("inf"))
    for _ in range(rounds * 10):
        for name, (handle, request) in handles.items():
            start = time.perf_counter()
            for _ in range(CALLS // 10):
                await handle(request)
            best[name] = min(best[name], (time.perf_counter() - start) / (CALLS // 10))
    return best


def loop_seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        step()
    return (time.perf_counter() - start) / CALLS


def increments(rounds: int) -> tuple[float, float]:
    """Seconds to count one /auth answer (status, latency bucket, decision): own, prometheus_client."""
    stats = HandlerStats("auth")
    decisions = Decisions()

    def own() -> None:
        stats.statuses[200] += 1
        stats.buckets[bisect_left(BUCKETS, 0.00004)] += 1
        stats.seconds += 0.00004
        decisions.allowed += 1

    counter = Counter("bench_requests", "", ("handler", "status"), registry=None).labels("auth", "200")
    histogram = Histogram("bench_duration_seconds", "", ("handler",), buckets=BUCKETS, registry=None).labels("auth")
    decision = Counter("bench_decisions", "", ("decision", "reason"), registry=None).labels("allow", "allowed")

    def prometheus() -> None:
        counter.inc()
        histogram.observe(0.00004)
        decision.inc()

    own_times, prometheus_times = [], []
    for _ in range(rounds):
        own_times.append(loop_seconds(own))
        prometheus_times.append(loop_seconds(prometheus))
    return min(own_times), min(prometheus_times)


def own_parts() -> tuple[Any, Any]:
    services = build_services(SETTINGS)
    return services.claims, services.revocations


# --- 3: a scrape over N workers -----------------------------------------------------------------


def traffic(count: Callable[[str, int, float], None], decide: Callable[[str], None]) -> None:
    """The same answers for either aggregator: every handler x status, every decision."""
    for handler in HANDLERS:
        for status in STATUSES:
            count(handler, status, 0.0004)
    for reason in REASONS:
        decide(reason)


def own_worker(directory: Path, number: int) -> None:
    """One worker's snapshot file, as ``Metrics`` writes it (``Totals`` of the same answers)."""
    totals = Totals()
    histograms: dict[str, list[float]] = {}

    def count(handler: str, status: int, seconds: float) -> None:
        totals.count(("requests", handler, str(status)), 1)
        values = histograms.setdefault(handler, [0.0] * (len(BUCKETS) + 2))
        values[bisect_left(BUCKETS, seconds)] += 1
        values[-1] += seconds

    traffic(count, lambda reason: totals.count(("auth_decisions", "allow", reason), 1))
    for handler, values in histograms.items():
        totals.count_histogram((handler,), values)
    write_private(directory / f"worker-{number}.json", totals.dumps())


def prometheus_worker() -> None:
    """One worker's process: its own mmap files (named by pid) in PROMETHEUS_MULTIPROC_DIR."""
    requests = Counter(*COUNTERS["requests"], registry=None)
    duration = Histogram(*DURATION, ("handler",), buckets=BUCKETS, registry=None)
    decisions = Counter(*COUNTERS["auth_decisions"], registry=None)

    def count(handler: str, status: int, seconds: float) -> None:
        requests.labels(handler, str(status)).inc()
        duration.labels(handler).observe(seconds)

    traffic(count, lambda reason: decisions.labels("allow", reason).inc())


def run_workers(target: Callable[..., None], workers: int, *args: Any) -> None:
    context = multiprocessing.get_context("fork")
    for _ in range(workers):
        process = context.Process(target=target, args=args)
        process.start()
        process.join()
        assert process.exitcode == 0


def scrape_seconds(scrape: Callable[[], bytes], rounds: int) -> tuple[float, int]:
    size = len(scrape())
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        scrape()
        times.append(time.perf_counter() - start)
    return min(times), size


def scrapes(workers: int, rounds: int) -> tuple[float, float, int, int]:
    own_dir = Path(tempfile.mkdtemp(prefix="fa-own-"))
    own_dir.chmod(0o700)
    prom_dir = PROM_DIR / f"n{workers}"
    prom_dir.mkdir()
    try:
        for number in range(workers):
            own_worker(own_dir, number)
        run_workers(_in_dir, workers, prom_dir)
        scraper = Metrics(*own_parts(), own_dir)
        own, own_bytes = scrape_seconds(scraper.exposition, rounds)

        def prometheus() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(prom_dir))
            return generate_latest(registry)

        prom, prom_bytes = scrape_seconds(prometheus, rounds)
        return own, prom, own_bytes, prom_bytes
    finally:
        shutil.rmtree(own_dir, ignore_errors=True)


def _in_dir(directory: Path) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # this child's files go to ``directory``
    prometheus_worker()


def nested_from(revision: str, metrics: Metrics) -> Middleware:
    """``observe(metrics, errors)`` as ``http/metrics.py`` wrote it at ``revision``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:forwardauth/http/metrics.py"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("metrics_then")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:forwardauth/http/metrics.py", "exec"), module.__dict__)  # noqa: S102
    then = module.Metrics(metrics._claims, metrics._revocations)
    return cast(Middleware, module.observe(then, errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nested-from", metavar="REV", help="also time that commit's nested observe(errors)")
    args = parser.parse_args()
    try:
        metrics = Metrics(*own_parts())
        chains = {
            "[observe, errors]": [observe(metrics), errors],
            "[observe, errors, passthrough]": [observe(metrics), errors, passthrough],
            "[errors]": [errors],
            "[observe with prometheus_client, errors]": [prometheus_observe(), errors],
        }
        if args.nested_from:
            chains[f"[observe calling errors] ({args.nested_from})"] = [nested_from(args.nested_from, metrics)]
        best = asyncio.run(per_request(chains, args.rounds))
        print(f"per request through the middleware chain (best of {args.rounds * 10} x {CALLS // 10:,}):")
        base = best["[observe, errors]"]
        for name, seconds in best.items():
            print(f"  {name:42} {seconds * 1e6:6.2f} us  x{seconds / base:.3f}")
        layer = best["[observe, errors, passthrough]"] - base
        counting = base - best["[errors]"]
        prom = best["[observe with prometheus_client, errors]"] - best["[errors]"]
        print(f"  one more middleware layer: {layer * 1e6:+.2f} us a request")
        if args.nested_from:
            then = best[f"[observe calling errors] ({args.nested_from})"]
            print(f"  ordinary composition against the nested one: {(base - then) * 1e6:+.2f} us a request")
        print(f"  observe itself: own {counting * 1e6:.2f} us, prometheus_client {prom * 1e6:.2f} us")

        own, prometheus = increments(args.rounds)
        print(f"counting one /auth answer, increments alone: own {own * 1e9:.0f} ns, ", end="")
        print(f"prometheus_client multiprocess {prometheus * 1e9:.0f} ns (x{prometheus / own:.1f})")

        print(f"a scrape adding up N workers (best of {args.rounds * 4}):")
        for workers in args.workers:
            own_s, prom_s, own_bytes, prom_bytes = scrapes(workers, args.rounds * 4)
            print(
                f"  N={workers:3}: own {own_s * 1e3:7.2f} ms, prometheus_client {prom_s * 1e3:7.2f} ms "
                f"(x{prom_s / own_s:.1f}); exposition {own_bytes:,} / {prom_bytes:,} bytes"
            )
    finally:
        shutil.rmtree(PROM_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
