"""The connections to Redis and PostgreSQL, owned here and nowhere else.

Redis is used from the event loop (redis.asyncio with hiredis), with retries on connection
errors so a Redis restart heals by itself. PostgreSQL is used through psycopg2 in a bounded
thread pool with a connection pool of the same size: blocking calls never run on the loop, and
a broken connection is dropped from the pool rather than handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
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

# Errors meaning "the store is unreachable right now": answered with 503, never 500.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
POSTGRES_DOWN = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


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
        if self._pool is None:
            self._pool = psycopg2.pool.ThreadedConnectionPool(0, self._size, self._dsn, connect_timeout=3)
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection in a transaction: committed on success, rolled back on error."""
        pool = self._get_pool()
        conn = pool.getconn()
        broken = False
        try:
            with conn:
                yield conn
        except POSTGRES_DOWN:
            broken = True
            raise
        finally:
            pool.putconn(conn, close=broken or bool(conn.closed))

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
