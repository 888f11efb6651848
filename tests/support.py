"""What the tests share besides fixtures: the test servers' addresses, polling with a deadline,
free ports, processes stopped by pid, ``forwardauth serve`` in a child process, throwaway databases.

Test modules import these from here; ``conftest`` holds the fixtures (and imports these too).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import redis
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from forwardauth.dev import demo
from forwardauth.http import limits
from forwardauth.stores import clients, users
from forwardauth.stores.postgres import Connection, Database

MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
# "embedded": use the embedded stores even when the machine's answer (how a bare machine is tested).
STORES_VARIABLE = "FORWARDAUTH_TEST_STORES"


def _postgres_answers(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RunStores:
    """The PostgreSQL and Redis the run uses: ``FORWARDAUTH_TEST_POSTGRES`` / ``FORWARDAUTH_TEST_REDIS``,
    else the machine's own on their usual ports, else (a bare machine: nothing answers there, or
    ``FORWARDAUTH_TEST_STORES=embedded``) the embedded ones `make run` uses, started for the run
    in a private folder and stopped at its end (``close``)."""

    def __init__(self) -> None:
        self._embedded: contextlib.ExitStack | None = None
        force = os.environ.get(STORES_VARIABLE, "") == "embedded"
        postgres = os.environ.get("FORWARDAUTH_TEST_POSTGRES") or (
            None if force or not _postgres_answers(MACHINE_POSTGRES) else MACHINE_POSTGRES
        )
        redis_url = os.environ.get("FORWARDAUTH_TEST_REDIS") or (
            None if force or not _redis_answers(MACHINE_REDIS) else MACHINE_REDIS
        )
        self.started: list[str] = []
        if postgres is None or redis_url is None:
            postgres, redis_url = self._start(postgres, redis_url)
        self.postgres, self.redis = postgres, redis_url

    def _start(self, postgres: str | None, redis_url: str | None) -> tuple[str, str]:
        from forwardauth import config
        from forwardauth.dev import embedded

        folder = Path(tempfile.mkdtemp(prefix="forwardauth-test-stores-"))
        environ = {"FORWARDAUTH_DATA_DIR": str(folder / "data")}
        if postgres is not None:
            environ["FORWARDAUTH_DATABASE_URL"] = postgres
        if redis_url is not None:
            environ["FORWARDAUTH_REDIS_URL"] = redis_url
        self.started = [name for name, url in (("PostgreSQL", postgres), ("Redis", redis_url)) if url is None]
        self._embedded = contextlib.ExitStack()
        self._embedded.callback(shutil.rmtree, folder, True)
        settings = self._embedded.enter_context(embedded.stores(config.load(environ)))
        atexit.register(self.close)  # also in a process that is not pytest's (it has no unconfigure)
        assert settings.database_url is not None and settings.redis_url is not None
        # Processes the run starts (multiprocessing's spawn imports this module again) use these
        # stores instead of starting embedded ones of their own, which nothing would stop.
        os.environ["FORWARDAUTH_TEST_POSTGRES"] = settings.database_url
        os.environ["FORWARDAUTH_TEST_REDIS"] = settings.redis_url
        return settings.database_url, settings.redis_url

    def describe(self) -> str:
        """For the header of the run: which stores, and whether embedded ones were started."""
        if not self.started:
            return f"stores: PostgreSQL {self.postgres.split('@')[-1]}, Redis {self.redis}"
        return (
            f"stores: embedded {' and '.join(self.started)} started for this run (none answered at "
            f"{MACHINE_POSTGRES.split('@')[-1]} / {MACHINE_REDIS}, or {STORES_VARIABLE}=embedded)"
        )

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None


STORES = RunStores()
ADMIN_URL = STORES.postgres
REDIS_URL = STORES.redis
PASSWORD = "correct horse battery staple"
# Fast Argon2 parameters for tests; production defaults are measured in perf/.
FAST_ARGON2 = {
    "FORWARDAUTH_ARGON2_TIME_COST": "1",
    "FORWARDAUTH_ARGON2_MEMORY_COST": "1024",
    "FORWARDAUTH_ARGON2_PARALLELISM": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


POLL_SECONDS = 0.05  # how often wait_until looks again, until its deadline


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled is not up yet
            last = exc
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (its host, or socket folder, kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """An empty database on the test server, dropped (connections and all) afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(ADMIN_URL, name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def database_at(version: int, prefix: str) -> Iterator[str]:
    """A throwaway database migrated up to ``version`` only: how an upgrade finds it."""
    from forwardauth.stores import migrations

    with throwaway_database(prefix) as url, pytest.MonkeyPatch.context() as patch:
        everything = migrations.available()
        patch.setattr(migrations, "available", lambda: [m for m in everything if m.version <= version])
        migrations.migrate(url)
        patch.setattr(migrations, "available", lambda: everything)
        yield url


def execute(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """One statement on its own connection, committed; its rows, if any."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def rows(database: Database, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of one query, on the test's pool."""

    def query(conn: Connection) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    return database.call(query)


def backdate_sessions(database: Database, user: users.User, seconds: int = 60) -> None:
    """Backdate the user's refresh tokens, as for a browser whose access cookie has since
    expired: one issued a moment ago makes the login page suspect a redirect loop."""

    def backdate(conn: Connection) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE refresh_tokens SET created_at = created_at - make_interval(secs => %s) WHERE user_id = %s",
                (seconds, user.id),
            )

    database.call(backdate)


MakeClient = Callable[..., tuple[clients.Client, str | None]]
MakeApp = Callable[..., Awaitable[Any]]  # the conftest fixture: extra FORWARDAUTH_* -> test client


def csrf_of(html: str) -> str:
    """The CSRF token of the form on a page."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


class AppServer(TestServer):
    """aiohttp's test server, running the application as ``forwardauth serve`` does."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return limits.Runner(self.app, **kwargs)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (graceful), SIGKILL after ``timeout``; then nothing of its process group survives."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers started in its session


class Service:
    """``forwardauth serve`` in a child process (its own process group), stopped by pid."""

    def __init__(self, env: Mapping[str, str], port: int, workers: int = 1, cwd: Path | None = None) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = (cwd or Path.cwd()) / f"forwardauth-{port}.log"
        full_env = {**os.environ, **env, "FORWARDAUTH_PORT": str(port), "FORWARDAUTH_WORKERS": str(workers)}
        self._out = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "forwardauth", "serve"],
            env=full_env,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"forwardauth exited: {self.log.read_text()[-2000:]}")
            with urllib.request.urlopen(self.base + "/readyz", timeout=1) as response:
                return bool(response.status == 200)

        wait_until(ready, timeout, "forwardauth /readyz")

    def stop(self, timeout: float = 20.0) -> int:
        stop_process(self.process, timeout)
        self._out.close()
        return int(self.process.returncode)


class Stack:
    """A real proxy from deploy/ in front of the echo upstream, forwardauth behind it."""

    def __init__(self, kind: str, service: Service, url: str) -> None:
        self.kind = kind
        self.service = service
        self.url = url


def require_program(name: str) -> str:
    """The program's path; skip when it is missing, except in CI where that is a failure."""
    found = demo.find_program(name)
    if found is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Caller:
    """A user of the boundary tests with a live access token (None: no token at all)."""

    def __init__(self, name: str, user: users.User | None, token: str | None) -> None:
        self.name, self.user, self.token = name, user, token

    @property
    def is_admin(self) -> bool:
        return self.user is not None and "admin" in self.user.roles

    def headers(self, **extra: str) -> list[tuple[str, str]]:
        """``Accept: application/json`` (API client), the bearer token if any, then ``extra``."""
        found = [("Accept", "application/json")]
        if self.token:
            found.append(("Authorization", f"Bearer {self.token}"))
        return found + list(extra.items())
