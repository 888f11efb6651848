"""Redis that answers reads but refuses writes, with a Redis of the test's own: out of memory under
noeviction, a read-only replica (a failover under way), writes paused (``CLIENT PAUSE WRITE``, as
a failover does). Logins, refreshes and logouts answer 503 or tell the truth, and leave nothing
half done: no session the client never received, no refresh token spent for nothing, no logout
that PostgreSQL recorded while the access token goes on passing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from forwardauth import config
from forwardauth.http.app import create_app
from forwardauth.stores import users
from forwardauth.stores.postgres import Connection, Database

from .stores import OwnRedis
from .support import PASSWORD, AppServer, MakeClient, free_port
from .test_oauth import basic, token
from .test_web import auth_status, login

Client = Any
PAUSE_MS = 60_000  # ended by CLIENT UNPAUSE once the request under test has answered


@pytest.fixture
async def app(aiohttp_client: Any, settings: config.Settings, own_redis: OwnRedis) -> AsyncIterator[Client]:
    yield await aiohttp_client(AppServer(create_app(dataclasses.replace(settings, redis_url=own_redis.url))))


def live_sessions(database: Database, user: users.User) -> int:
    """Refresh tokens of the user that could still be used (rows of any state, for a discarded login)."""

    def count(conn: Connection) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM refresh_tokens WHERE user_id = %s", (user.id,))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    return database.call(count)


def refuse_writes(server: OwnRedis, how: str) -> Callable[[], None]:
    """Make ``server`` refuse writes ``how``; returns what undoes it."""
    client = server.client()
    if how == "out_of_memory":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        return lambda: client.config_set("maxmemory", 0)
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that is not there
    return lambda: client.execute_command("REPLICAOF", "NO", "ONE")


def unavailable(response: Any) -> None:
    assert response.status == 503 and response.headers["Retry-After"]


@pytest.mark.parametrize("how", ["out_of_memory", "read_only"])
async def test_a_login_redis_will_not_record_is_a_503_and_leaves_no_session(
    app: Client,
    own_redis: OwnRedis,
    make_user: Callable[..., users.User],
    make_client: MakeClient,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    user = make_user()
    oauth_app, secret = make_client()
    restore = refuse_writes(own_redis, how)
    api = await app.post("/login", json={"username": user.username, "password": PASSWORD})
    unavailable(api)
    assert (await api.json())["error"] == "temporarily_unavailable"
    page = await app.post(
        "/login",
        data={"username": user.username, "password": PASSWORD},
        headers={"Accept": "text/html"},
        allow_redirects=False,
    )
    unavailable(page)
    assert "Set-Cookie" not in page.headers
    status, body = await token(
        app,
        {"grant_type": "password", "username": user.username, "password": PASSWORD},
        basic(oauth_app.id, secret or ""),
    )
    assert status == 503 and body["error"] == "temporarily_unavailable"
    assert live_sessions(database, user) == 0  # nothing the client never received
    assert "Traceback" not in caplog.text

    restore()
    tokens = await login(app, user)
    assert await auth_status(app, tokens["access_token"]) == 200
    assert live_sessions(database, user) == 1


@pytest.mark.parametrize("how", ["out_of_memory", "read_only"])
async def test_a_refresh_redis_will_not_record_is_refused_before_the_token_is_spent(
    app: Client, own_redis: OwnRedis, make_user: Callable[..., users.User], how: str
) -> None:
    tokens = await login(app, make_user())
    restore = refuse_writes(own_redis, how)
    unavailable(await app.post("/refresh", json={"refresh_token": tokens["refresh_token"]}))
    restore()
    renewed = await app.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status == 200
    assert await auth_status(app, (await renewed.json())["access_token"]) == 200


async def test_a_refresh_while_writes_are_paused_spends_nothing(
    app: Client, own_redis: OwnRedis, make_user: Callable[..., users.User]
) -> None:
    """Issue 21.3: the rotation committed, then Redis timed out, and the retry was judged a replay.
    The write is tried first now: the 503 comes before the token is spent."""
    tokens = await login(app, make_user())
    admin = own_redis.client()
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    try:
        unavailable(await app.post("/refresh", json={"refresh_token": tokens["refresh_token"]}))
        assert await auth_status(app, tokens["access_token"]) == 200  # reads go on
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    retried = await app.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert retried.status == 200
    assert await auth_status(app, (await retried.json())["access_token"]) == 200


async def test_a_logout_while_writes_are_paused_says_so_and_completes_when_redis_returns(
    app: Client, own_redis: OwnRedis, make_user: Callable[..., users.User], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21.4: PostgreSQL ended the session, Redis refused, the answer was a 503 and the access
    token kept passing. Now: 202, the revocation queued, done as soon as Redis takes writes."""
    tokens = await login(app, make_user())
    kept = await login(app, make_user())
    admin = own_redis.client()
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    try:
        response = await app.post("/logout", json={}, headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert response.status == 202
        assert await response.json() == {"logged_out": True, "revocation_pending": True}
        assert "session(s) queued" in caplog.text
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")

    async def refused() -> bool:
        return await auth_status(app, tokens["access_token"]) == 401

    await poll(refused, 10, "the queued revocation")
    assert await auth_status(app, kept["access_token"]) == 200  # only that session
    refresh = await app.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status == 401  # PostgreSQL had ended it at once
    assert "Traceback" not in caplog.text


async def poll(check: Callable[[], Any], timeout: float, what: str) -> None:
    """``wait_until`` for a coroutine check, on the running loop (the app under test runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
