"""The connections to Redis and PostgreSQL, owned here and nowhere else.

Redis is used from the event loop (redis.asyncio with hiredis), with retries on connection
errors so a Redis restart heals by itself. PostgreSQL is used through psycopg2 in a bounded
thread pool with a connection pool of the same size: blocking calls never run on the loop, and
a broken connection is dropped from the pool rather than handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.pool
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

log = logging.getLogger("forwardauth.connections")

OUTAGE_LOG_SECONDS = 10.0

# Errors meaning "the store is unreachable right now": answered with 503, never 500.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
POSTGRES_DOWN = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


class OutageLog:
    """Reports a store outage once per interval, not once per request: a dead Redis under
    thousands of checks a second would otherwise flood the log. Each report says how many
    failures it stands for."""

    def __init__(self, interval: float = OUTAGE_LOG_SECONDS) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def failed(self, store: str, exc: BaseException) -> None:
        now = time.monotonic()
        count = self._unreported.get(store, 0) + 1
        if now - self._last.get(store, -self._interval) < self._interval:
            self._unreported[store] = count
            return
        self._last[store], self._unreported[store] = now, 0
        log.warning("%s unavailable (%s): answering 503; %d failure(s) since the last report",
                    store, type(exc).__name__, count)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    max_connections: int = 64
    socket_timeout: float = 1.0
    connect_timeout: float = 1.0
    retries: int = 2

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        return cls(url=url)

    def client(self) -> aioredis.Redis:
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.01), self.retries)
        return aioredis.Redis.from_url(
            self.url,
            max_connections=self.max_connections,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.connect_timeout,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
            decode_responses=False,
        )


class Database:
    """A psycopg2 pool plus the threads that use it; ``run`` is the only way in."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="pg")

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        # Created lazily in a worker thread, so a down PostgreSQL delays nothing at start.
        # minconn = maxconn: psycopg2 keeps at most minconn idle connections and closes the
        # rest on return, so a smaller minconn would mean a new connection per call.
        if self._pool is None:
            self._pool = psycopg2.pool.ThreadedConnectionPool(self._size, self._size, self._dsn, connect_timeout=3)
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection in a transaction: committed on success, rolled back on error."""
        pool = self._get_pool()
        conn = self._live_connection(pool)
        broken = False
        try:
            with conn:
                yield conn
        except POSTGRES_DOWN:
            broken = True
            raise
        finally:
            pool.putconn(conn, close=broken or bool(conn.closed))

    @staticmethod
    def _live_connection(pool: psycopg2.pool.ThreadedConnectionPool) -> psycopg2.extensions.connection:
        """A pooled connection that still answers.

        After a PostgreSQL restart every pooled connection is dead. Each is pinged when taken
        (one round trip, nothing next to a password hash), so a dead one is replaced here,
        before the caller's statements run, and a restart costs no request.
        """
        for _ in range(pool.maxconn + 1):
            conn = pool.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()  # end the ping's transaction: the caller starts clean
                return conn
            except POSTGRES_DOWN:
                pool.putconn(conn, close=True)
        return pool.getconn()  # fresh: it connects now, or raises if PostgreSQL is down

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a transaction, in the calling thread."""
        with self.connection() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the thread pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.call, fn, *args)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (no connection) in the same bounded pool, e.g. a password hash."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.closeall()
