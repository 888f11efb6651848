"""Fixtures on real servers: a fresh PostgreSQL database per run and a Redis key prefix per run.

PostgreSQL and Redis are the machine's own (127.0.0.1:5432 and :6379 unless
``FORWARDAUTH_TEST_POSTGRES`` / ``FORWARDAUTH_TEST_REDIS`` say otherwise); on a machine where none
answers there, the embedded ones (as for ``make run``), started for the run (support.RunStores).
Nothing is mocked.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from forwardauth import config
from forwardauth.constants import RedisKeys
from forwardauth.core.passwords import Passwords
from forwardauth.dev import demo
from forwardauth.http.app import create_app
from forwardauth.redisurl import RedisSettings
from forwardauth.stores import clients, migrations, users
from forwardauth.stores.postgres import Database
from forwardauth.stores.redis import RedisClient, close, connect

# The shared helpers. Those not used here (`as` themselves) stay importable from conftest for
# tests written before tests/support.py; import them from tests.support.
from .support import ADMIN_URL as ADMIN_URL
from .support import (
    FAST_ARGON2,
    PASSWORD,
    REDIS_URL,
    STORES,
    AppServer,
    Caller,
    MakeApp,
    MakeClient,
    Service,
    Stack,
    free_port,
    require_program,
    stop_process,
    throwaway_database,
)
from .support import backdate_sessions as backdate_sessions
from .support import wait_until as wait_until

# Store URLs no server answers (the discard port): a test on ``pure_settings`` that reached a
# store would fail at once instead of passing on the machine's own.
NO_STORES = {
    "FORWARDAUTH_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
    "FORWARDAUTH_REDIS_URL": "redis://127.0.0.1:9/0",
}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of its own for this test run, migrated, dropped at the end."""
    with throwaway_database("forwardauth_test") as url:
        migrations.migrate(url)
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own for this run; its keys are deleted at the end."""
    prefix = f"fatest:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def service_environment(tmp_path: Path) -> dict[str, str]:
    """A test service's FORWARDAUTH_* variables, but for its stores."""
    return {
        "FORWARDAUTH_DATA_DIR": str(tmp_path / "data"),
        "FORWARDAUTH_ISSUER": "http://auth.example.test",
        "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
        "FORWARDAUTH_COOKIE_SECURE": "false",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
        # Every test logs in from 127.0.0.1: only the throttling tests set a real limit.
        "FORWARDAUTH_LOGIN_MAX_FAILURES": "100000",
        **FAST_ARGON2,
    }


@pytest.fixture
def env(database_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    """The FORWARDAUTH_* environment of a test service. Its Redis keys are the test's own (under
    the run's prefix, deleted with it): services of other tests, with keys of their own, never
    take its queued work (back-channel logouts) nor count its failed logins."""
    return {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": f"{redis_prefix}{secrets.token_hex(3)}:",
        **service_environment(tmp_path),
    }


@pytest.fixture
def settings(env: Mapping[str, str]) -> config.Settings:
    return config.load(env)


@pytest.fixture
def pure_settings(tmp_path: Path) -> config.Settings:
    """``settings`` without the stores (and without creating the run's database): for a test that
    reaches none, so ``pytest -m unit`` runs it."""
    return config.load({**service_environment(tmp_path), **NO_STORES})


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[RedisClient]:
    """An asyncio Redis client on the test Redis, closed afterwards."""
    client = connect(RedisSettings.from_url(REDIS_URL))
    yield client
    await close(client)


@pytest.fixture
def keys(redis_prefix: str) -> RedisKeys:
    """A Redis key layout of the test's own, under the run's prefix."""
    return RedisKeys(redis_prefix + secrets.token_hex(4) + ":")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, 2)
    yield db
    db.close()


@pytest.fixture
def make_user(database: Database, settings: config.Settings) -> Callable[..., users.User]:
    """Create a user with a unique name (the database is shared by the whole run)."""
    passwords = Passwords.from_settings(settings)

    def make(
        roles: tuple[str, ...] = ("user",),
        email: str | None = "someone@example.test",
        password: str = PASSWORD,
        name: str | None = None,
    ) -> users.User:
        username = name or f"user-{secrets.token_hex(4)}"
        return database.call(users.create, passwords, username, password, roles, email)

    return make


@pytest.fixture
def make_client(database: Database) -> MakeClient:
    """Register an OAuth2 client with a unique id; returns it and its secret (None when public)."""

    def make(
        grants: tuple[str, ...] = ("password", "refresh_token"),
        scopes: tuple[str, ...] = ("read", "write"),
        roles: tuple[str, ...] = (),
        public: bool = False,
    ) -> tuple[clients.Client, str | None]:
        return database.call(
            clients.create, f"app-{secrets.token_hex(4)}", list(grants), list(scopes), list(roles), public
        )

    return make


@pytest.fixture
async def client(aiohttp_client: Any, settings: config.Settings) -> AsyncIterator[Any]:
    """An aiohttp test client on the real application, real PostgreSQL and Redis."""
    yield await aiohttp_client(AppServer(create_app(settings)))


@pytest.fixture
def make_app(aiohttp_client: Any, env: dict[str, str]) -> MakeApp:
    """A test client on the real application, with extra FORWARDAUTH_* settings."""

    async def make(**extra: str) -> Any:
        return await aiohttp_client(AppServer(create_app(config.load({**env, **extra}))))

    return make


@pytest.fixture
async def app(make_app: MakeApp) -> Any:
    return await make_app()


@pytest.fixture
def service(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``forwardauth serve`` processes on free ports; all are stopped afterwards."""
    started: list[Service] = []

    def start(workers: int = 1, extra: Mapping[str, str] | None = None) -> Service:
        svc = Service({**env, **(extra or {})}, free_port(), workers, cwd=tmp_path)
        started.append(svc)
        svc.wait_ready()
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture
def proxy_stack(service: Callable[..., Service], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``proxy_stack("nginx" | "traefik" | "caddy")`` starts the whole chain on free ports."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(kind: str, extra: Mapping[str, str] | None = None) -> Stack:
        require_program(kind)
        public_port, app_port = free_port(), free_port()
        upstream = demo.start_upstream(app_port, tmp_path / f"upstream-{kind}")
        processes.append(upstream)
        environment = {**demo.stack_environment(public_port), **(extra or {})}
        svc = service(extra=environment)
        proxy = demo.Proxy(
            kind,
            tmp_path / kind,
            public_port,
            f"127.0.0.1:{svc.port}",
            f"127.0.0.1:{app_port}",
            header_names=demo.header_names_of(environment),
        )
        processes.append(proxy.start())
        url = f"http://127.0.0.1:{public_port}"
        demo.wait_for_http(f"http://127.0.0.1:{app_port}/", 20, upstream)
        demo.wait_for_http(url + "/forwardauth/healthz", 30, processes[-1])
        return Stack(kind, svc, url)

    yield start
    for process in reversed(processes):
        stop_process(process)


# --- real backends behind the shipped proxies (tests/test_boundary.py, tests/test_vhosts.py) ---------

# deploy/policy.example.yml's shape on the test hosts: a public area and health checks without a
# token, admin paths and an admin-only virtual host for role admin, any signed-in user elsewhere.
BOUNDARY_POLICY = """\
default: authenticated
rules:
  - host: secret.example.test
    roles: [admin]
  - path: /public
    policy: bypass
  - path: /healthz
    methods: [GET, HEAD]
    policy: bypass
  - path: /admin
    roles: [admin]
  - path_regex: "^/api/v[0-9]+/admin(/|$)"
    roles: [admin]
"""


@pytest.fixture(scope="session")
def real_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Any]]:
    """``real_backends("echo" | "php" | "tomcat")``: that backend, started once per run."""
    from . import backends

    root = tmp_path_factory.mktemp("backends")
    cache = tmp_path_factory.getbasetemp().parent / "forwardauth-backend-cache"  # kept across runs
    started: dict[str, backends.Backend] = {}

    def get(kind: str) -> backends.Backend:
        if kind not in started:
            reason = backends.missing(kind)
            if reason is not None:
                if os.environ.get("CI"):
                    pytest.fail(reason + " (.ci/run installs it)")
                pytest.skip(reason)
            started[kind] = backends.start(kind, free_port(), root / kind, cache)
        return started[kind]

    yield get
    for backend in started.values():
        stop_process(backend.process)


@pytest.fixture(scope="session")
def boundary_service(
    database_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One ``forwardauth serve`` with BOUNDARY_POLICY behind every proxy of the boundary tests."""
    root = tmp_path_factory.mktemp("boundary")
    policy = root / "policy.yml"
    policy.write_text(BOUNDARY_POLICY)
    env = {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": redis_prefix,
        "FORWARDAUTH_DATA_DIR": str(root / "data"),
        "FORWARDAUTH_ISSUER": "http://auth.example.test/forwardauth",
        "FORWARDAUTH_LOGIN_URL": "/forwardauth/login",
        "FORWARDAUTH_ALLOWED_DOMAINS": "example.test",
        "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
        "FORWARDAUTH_COOKIE_SECURE": "false",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
        "FORWARDAUTH_LOGIN_MAX_FAILURES": "100000",
        "FORWARDAUTH_POLICY_FILE": str(policy),
        # the callers sign in once per run: their tokens must outlive a slow run of the suite
        "FORWARDAUTH_ACCESS_TTL": "6h",
        "FORWARDAUTH_REFRESH_TTL": "6h",
        **FAST_ARGON2,
    }
    svc = Service(env, free_port(), cwd=root)
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def boundary_callers(boundary_service: Service, database_url: str) -> dict[str, Caller]:
    """``none``, ``user`` (role user) and ``admin`` (roles admin, user), logged in once per run."""
    from . import http

    settings = config.load(
        {"FORWARDAUTH_DATABASE_URL": database_url, "FORWARDAUTH_REDIS_URL": REDIS_URL, **FAST_ARGON2}
    )
    db = Database(database_url, 1)
    try:
        callers = {"none": Caller("none", None, None)}
        for name, roles in (("user", ("user",)), ("admin", ("admin", "user"))):
            username = f"{name}-{secrets.token_hex(4)}"
            user = db.call(users.create, Passwords.from_settings(settings), username, PASSWORD, roles, None)
            answer = http.login(boundary_service.base, username, PASSWORD)
            assert answer.status == 200, answer.text
            callers[name] = Caller(name, user, str(answer.json()["access_token"]))
        return callers
    finally:
        db.close()


@pytest.fixture(scope="module")
def front(boundary_service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """``front(kind, app_addr, edit=None, name="")``: a proxy from deploy/ (nginx, Traefik, Caddy)
    in front of ``app_addr`` and ``boundary_service``, once per module; returns its base URL.

    ``edit(proxy)`` may rewrite the files ``Proxy.configure`` wrote before the proxy starts
    (``name`` then tells such variants apart).
    """
    root = tmp_path_factory.mktemp("front")
    started: dict[tuple[str, str, str], str] = {}
    processes: list[subprocess.Popen[bytes]] = []

    def get(kind: str, app_addr: str, edit: Callable[[demo.Proxy], None] | None = None, name: str = "") -> str:
        key = (kind, app_addr, name)
        if key not in started:
            require_program(kind)
            port = free_port()
            proxy = demo.Proxy(kind, root / f"{kind}-{port}", port, f"127.0.0.1:{boundary_service.port}", app_addr)
            proxy.configure()
            if edit is not None:
                edit(proxy)
            processes.append(proxy.launch())
            url = f"http://127.0.0.1:{port}"
            demo.wait_for_http(url + "/forwardauth/healthz", 30, processes[-1])
            started[key] = url
        return started[key]

    yield get
    for process in reversed(processes):
        stop_process(process)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A Redis server of the test's own (tests.stores.OwnRedis, which imports this module), for
    outages the machine's Redis must not suffer."""
    from .stores import OwnRedis

    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh Chromium context on the module's ``browser`` fixture (a Playwright Browser)."""
    ctx = browser.new_context()
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


# --- `pytest -m unit`: the tests that need no store and no server ---------------------------------

# Fixtures that reach PostgreSQL or Redis or start a server. A test that uses none of them (nor is
# in a module marked ``servers``, for one that starts processes itself) is marked ``unit``.
NEEDS_SERVERS = frozenset(
    {
        "database_url",
        "redis_prefix",
        "aiohttp_client",
        "service",
        "proxy_stack",
        "boundary_service",
        "real_backends",
        "front",
        "boundary_callers",
        "own_redis",
        "browser",
        "context",
    }
)


def pytest_report_header(config: pytest.Config) -> str:
    return STORES.describe()


def pytest_unconfigure(config: pytest.Config) -> None:
    STORES.close()  # embedded stores started for the run, if any


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not NEEDS_SERVERS.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("servers"):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def mailbox() -> Iterator[Any]:
    """A real SMTP server (aiosmtpd, plain, on a free port) collecting every message: a
    tests.mailbox.Mailbox (FORWARDAUTH_SMTP_URL = ``mailbox.url()``; ``mailbox.wait_for(to)``)."""
    from .mailbox import Mailbox

    box = Mailbox().start()
    yield box
    box.stop()
