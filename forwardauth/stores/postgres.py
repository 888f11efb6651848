"""The connection to PostgreSQL, owned here and nowhere else: psycopg2 in a bounded thread pool
with a connection pool of the same size, so blocking calls never run on the event loop, and a
broken connection is dropped from the pool rather than handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.pool

T = TypeVar("T")
P = ParamSpec("P")
Connection = psycopg2.extensions.connection

# Errors meaning "PostgreSQL is unreachable right now": answered with 503, never 500.
POSTGRES_DOWN = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


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
    def connection(self) -> Iterator[Connection]:
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
    def _live_connection(pool: psycopg2.pool.ThreadedConnectionPool) -> Connection:
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

    # Typed with ParamSpec: mypy checks each call's arguments against ``fn``'s parameters.
    def call(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args)`` in a transaction, in the calling thread."""
        with self.connection() as conn:
            return fn(conn, *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, *args)`` in the thread pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self.call, fn, *args, **kwargs))

    async def run_blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args)`` (no connection) in the same bounded pool, e.g. a password hash."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.closeall()
