"""Prometheus metrics, summed over the worker processes, at a cost the hot path does not notice.

Each worker counts in plain memory: ints in dicts and slotted objects, a bisect for the latency
bucket. No lock (one thread), no I/O per request, and every label from a fixed set (handlers,
status codes, decision reasons), so nothing grows with traffic. Once a second, and when it
stops, a worker writes its counters to a file of its own in a folder the supervisor made for
this server (write, then rename: a reader never sees half a file). ``GET /metrics`` brings the
answering worker's own file up to date and adds up all the files, so the other workers' share
is at most about a second old. A dead worker's file stays and its replacement writes a new one;
files only grow, so no sum goes back, whichever worker answers. Files are 0600 in a 0700 folder;
one that is not this user's, is writable by others or holds anything but known series with
non-negative counts is ignored (and logged once a minute), never a failed scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from time import perf_counter

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from forwardauth.core.cache import ClaimsCache
from forwardauth.logs import enter_request, leave_request
from forwardauth.safefiles import Throttle, UnsafePath, check_dir, read_checked, write_private
from forwardauth.stores.revocation import Revocations

log = logging.getLogger("forwardauth.metrics")
access = logging.getLogger("forwardauth.access")

SNAPSHOT_SECONDS = 1.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
# Upper bounds of the latency buckets, in seconds: /auth takes tens of microseconds, a login
# (Argon2id) tens of milliseconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "unmatched"  # the handler label of requests no route took (404, 405)
STATUSES = 600  # HTTP status codes are 100 to 599 (RFC 9110)
MAX_HANDLERS = 256  # a bound on the handler table, whatever aiohttp hands the middleware
MAX_SNAPSHOT = 1 << 20  # bytes: a worker's file is a few kilobytes
SKIPPED = Throttle(60.0)  # a bad snapshot file is met on every scrape: said once a minute

Key = tuple[str, ...]  # a series: its name, then its label values


@dataclass(slots=True)
class Decisions:
    """/auth answers, one attribute per reason: the handler adds 1 to the one that applies."""

    bypass: int = 0  # a bypass rule: 200 without a token
    allowed: int = 0  # a live token the rules accept
    no_token: int = 0  # 401
    invalid_token: int = 0  # 401: bad signature, expired, malformed, two tokens, too long
    revoked: int = 0  # 401: a valid signature, but not live in Redis
    forbidden_rule: int = 0  # 403: a deny rule
    forbidden_role: int = 0  # 403: a live token without the user or role the rule wants
    step_up: int = 0  # 401: a live user's token whose sign-in lacks the second factor or recency the rule wants


ALLOWING = frozenset({"bypass", "allowed"})
REASONS = tuple(f.name for f in fields(Decisions))


class HandlerStats:
    """Answers and latency of one handler (an endpoint; /auth and /auth/envoy/ share ``auth``).

    Lists indexed by status code and by bucket: the cheapest increments Python has.
    """

    __slots__ = ("buckets", "name", "seconds", "statuses")

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses = [0] * STATUSES  # answers by status code
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.seconds = 0.0


@dataclass(slots=True)
class Totals:
    """Counter values by series, and histograms (bucket counts, then the sum) by handler: one
    worker's, or several added up."""

    counters: dict[Key, float] = field(default_factory=dict)
    histograms: dict[Key, list[float]] = field(default_factory=dict)

    def count(self, key: Key, value: float) -> None:
        self.counters[key] = self.counters.get(key, 0) + value

    def count_histogram(self, key: Key, values: list[float]) -> None:
        mine = self.histograms.get(key)
        self.histograms[key] = list(values) if mine is None else [a + b for a, b in zip(mine, values, strict=True)]

    def add(self, other: Totals) -> None:
        for key, value in other.counters.items():
            self.count(key, value)
        for key, values in other.histograms.items():
            self.count_histogram(key, values)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "counters": [[list(k), v] for k, v in self.counters.items()],
                "histograms": [[list(k), v] for k, v in self.histograms.items()],
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> Totals:
        """A snapshot read back, or ``BadSnapshot``: every series must be one this code writes,
        with the right labels, and every value a finite number, never negative."""
        try:
            parsed = orjson.loads(data)
            counters, histograms = parsed["counters"], parsed["histograms"]
            if not isinstance(counters, list) or not isinstance(histograms, list):
                raise BadSnapshot("counters and histograms must be lists")
            totals = cls()
            for key, value in counters:
                totals.counters[_counter_key(key)] = _amount(value)
            for key, values in histograms:
                if not isinstance(values, list) or len(values) != len(BUCKETS) + 2:
                    raise BadSnapshot(f"a histogram has {len(BUCKETS) + 2} values")
                totals.histograms[_histogram_key(key)] = [_amount(v) for v in values]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadSnapshot(str(exc) or type(exc).__name__) from None
        return totals


class BadSnapshot(ValueError):
    """A snapshot file that is not what a worker writes: ignored whole."""


def _amount(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadSnapshot(f"not a count: {str(value)[:40]!r}")
    return value


def _labels(key: object, size: int) -> tuple[str, ...]:
    if not isinstance(key, list) or len(key) != size or not all(isinstance(p, str) and len(p) <= 100 for p in key):
        raise BadSnapshot(f"a series key must be {size} short strings")
    return tuple(key)


def _counter_key(key: object) -> Key:
    name = key[0] if isinstance(key, list) and key else None
    if not isinstance(name, str) or name not in COUNTERS:
        raise BadSnapshot(f"unknown counter {str(name)[:40]!r}")
    return _labels(key, 1 + len(COUNTERS[name][2]))


def _histogram_key(key: object) -> Key:
    return _labels(key, 1)


# Counter series: name in Totals -> (Prometheus name without _total, help, label names).
COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requests": ("forwardauth_requests", "Requests answered, by handler and status.", ("handler", "status")),
    "auth_decisions": (
        "forwardauth_auth_decisions",
        "/auth answers: decision (allow, deny) and why.",
        ("decision", "reason"),
    ),
    "store_errors": ("forwardauth_store_errors", "Requests answered 503 because a store was unreachable.", ("store",)),
    "claims_cache": (
        "forwardauth_claims_cache_lookups",
        "Tokens looked up in the verified-claims memory: hit, or miss (signature checked).",
        ("result",),
    ),
    "live_tokens": (
        "forwardauth_live_token_checks",
        "Live-token checks answered from memory or by Redis.",
        ("source",),
    ),
    # Checks by Redis over round trips: how many concurrent checks one MGET answered (livekeys).
    "live_token_lookups": (
        "forwardauth_live_token_redis_commands",
        "Redis commands that answered live-token checks (each for the keys asked meanwhile).",
        (),
    ),
}
DURATION = ("forwardauth_request_duration_seconds", "Time from routing to the answer, by handler.")


class Metrics:
    """One worker's counters, its snapshot file, and ``/metrics`` for the whole server."""

    def __init__(self, claims: ClaimsCache, revocations: Revocations, directory: Path | None = None) -> None:
        self.handlers: dict[object, HandlerStats] = {}  # what aiohttp passes a middleware -> its stats
        self._by_name: dict[str, HandlerStats] = {UNMATCHED: HandlerStats(UNMATCHED)}
        self.decisions = Decisions()
        self.store_errors = {"redis": 0, "postgres": 0}
        self._claims = claims
        self._revocations = revocations
        self.directory = directory
        # Pid and a random part: a restarted worker never takes over a dead one's file.
        self.file = directory / f"worker-{os.getpid()}-{secrets.token_hex(4)}.json" if directory else None

    def stats_for(self, request: web.Request, handler: Handler) -> HandlerStats:
        """The stats of a handler not seen yet (the slow path, once per handler).

        A route's handler is the same object on every request, so it is remembered; what
        answers 404 or 405 is made anew each time, so it is counted as unmatched, never kept.
        """
        if not isinstance(request.match_info.route, web.ResourceRoute):
            return self._by_name[UNMATCHED]
        stats = self.named(getattr(handler, "__name__", UNMATCHED))
        if len(self.handlers) < MAX_HANDLERS:
            self.handlers[handler] = stats
        return stats

    def named(self, name: str) -> HandlerStats:
        """The stats of the handler called ``name`` (made on first use)."""
        return self._by_name.setdefault(name, HandlerStats(name))

    def totals(self) -> Totals:
        """This worker's counters now."""
        totals = Totals()
        for stats in self._by_name.values():
            for status, n in enumerate(stats.statuses):
                if n:
                    totals.count(("requests", stats.name, str(status)), n)
            if any(stats.buckets):
                totals.count_histogram((stats.name,), [*stats.buckets, stats.seconds])
        for reason in REASONS:
            decision = "allow" if reason in ALLOWING else "deny"
            totals.count(("auth_decisions", decision, reason), getattr(self.decisions, reason))
        for store, n in self.store_errors.items():
            totals.count(("store_errors", store), n)
        totals.count(("claims_cache", "hit"), self._claims.hits)
        totals.count(("claims_cache", "miss"), self._claims.misses)
        local = self._revocations.local
        totals.count(("live_tokens", "memory"), local.hits if local is not None else 0)
        totals.count(("live_tokens", "redis"), self._revocations.lookups)
        totals.count(("live_token_lookups",), self._revocations.live_keys.commands)
        return totals

    def server_totals(self) -> Totals:
        """Every worker's counters: this one's now, the others' from their last snapshot.

        This worker writes its own snapshot first: a later scrape, whichever worker answers it,
        then reads files that have only grown since, so no sum goes back (a live count newer
        than its file would: Prometheus takes any decrease for a restart).
        """
        totals = self.totals()
        if self.file is not None:
            try:
                self._write(totals)
            except OSError as exc:
                log.warning("metrics snapshot not written: %s", exc)
        if self.directory is not None:
            for path in self._others():
                try:
                    other = Totals.loads(read_checked(path, "metrics snapshot", secret=False, max_bytes=MAX_SNAPSHOT))
                except (UnsafePath, BadSnapshot) as exc:
                    if SKIPPED.ready(path.name):
                        log.warning("metrics snapshot %s ignored: %s", path.name, exc)
                    continue
                totals.add(other)
        return totals

    def _others(self) -> list[Path]:
        """The other workers' snapshot files, when the folder is still this user's alone (0700)."""
        assert self.directory is not None
        try:
            check_dir(self.directory, "metrics folder", private=True, allow_root=False)
        except UnsafePath as exc:
            if SKIPPED.ready(str(self.directory)):
                log.error("other workers' metrics ignored: %s", exc)
            return []
        return [path for path in self.directory.glob("worker-*.json") if path != self.file]

    def exposition(self) -> bytes:
        """The Prometheus text format of :meth:`server_totals`."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Exposition(self.server_totals()))
        return generate_latest(registry)

    def write_snapshot(self) -> None:
        if self.file is not None:
            self._write(self.totals())

    def _write(self, totals: Totals) -> None:
        assert self.file is not None
        write_private(self.file, totals.dumps())  # 0600; readers see the old file or the new one, never half

    async def publish(self) -> None:
        """Write a snapshot every SNAPSHOT_SECONDS until cancelled."""
        failing = False
        while True:
            try:
                self.write_snapshot()
                failing = False
            except OSError as exc:
                if not failing:
                    log.warning("metrics snapshot not written: %s", exc)
                failing = True
            await asyncio.sleep(SNAPSHOT_SECONDS)

    def final_snapshot(self) -> None:
        """On a graceful stop, after the last request: what the next /metrics must still count."""
        with contextlib.suppress(OSError):
            self.write_snapshot()


class Exposition(Collector):
    """Totals as Prometheus metric families."""

    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(prom, text, labels=labels) for name, (prom, text, labels) in COUNTERS.items()
        }
        for (name, *labels), value in sorted(self._totals.counters.items()):
            families[name].add_metric(labels, value)
        yield from families.values()
        histogram = HistogramMetricFamily(*DURATION, labels=("handler",))
        bounds = [str(b) for b in BUCKETS] + ["+Inf"]
        for key, values in sorted(self._totals.histograms.items()):
            *counts, seconds = values
            cumulative, running = [], 0.0
            for bound, n in zip(bounds, counts, strict=True):
                running += n
                cumulative.append((bound, running))
            histogram.add_metric(list(key), cumulative, seconds)
        yield histogram


def observe(metrics: Metrics) -> Middleware:
    """The outermost middleware: count and time every answer, the error middleware's included.

    It also makes its request the current one for the log lines written meanwhile (see logs). The
    DEBUG line per request is decided when the app is built, as the log level is. ``handler`` is
    the rest of the chain aiohttp built for the route, the same object on every request of it (see
    ``Metrics.stats_for``). Being a layer of its own rather than calling the error middleware
    itself costs /auth nothing measurable (perf/README.md).
    """
    handlers = metrics.handlers
    debug = access_debug()

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 0  # stays 0 when nothing was answered (cancelled)
        start = perf_counter()
        current = enter_request(request)
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if status:
                try:
                    stats = handlers[handler]
                except KeyError:
                    stats = metrics.stats_for(request, handler)
                answered(stats, request, status, perf_counter() - start, debug)
            leave_request(current)

    return observe


def access_debug() -> bool:
    """Whether each answer gets a DEBUG line: decided when the app is built, as the log level is."""
    return access.isEnabledFor(logging.DEBUG)


def answered(stats: HandlerStats, request: web.Request, status: int, elapsed: float, debug: bool) -> None:
    """Count one answer (``observe``, and /auth's own chain in hotpath), and log it at DEBUG."""
    if status < STATUSES:
        stats.statuses[status] += 1
    stats.buckets[bisect_left(BUCKETS, elapsed)] += 1
    stats.seconds += elapsed
    if debug:
        path = request.rel_url.raw_path  # as sent: no query (it may hold secrets), nothing decoded
        access.debug(
            "%s %s %d",
            request.method,
            path,
            status,
            extra={"method": request.method, "path": path, "status": status, "duration_ms": round(elapsed * 1000, 3)},
        )
