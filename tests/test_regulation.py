"""Brute-force regulation on /login and the password grant, with real Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from forwardauth import config, users
from forwardauth.web import create_app

from .conftest import PASSWORD
from .test_oauth import basic
from .test_web import audit_events

Client = Any


@pytest.fixture
async def strict(aiohttp_client: Any, env: dict[str, str]) -> Client:
    """An app allowing 3 failures per address and username within a minute."""
    settings = config.load({**env, "FORWARDAUTH_LOGIN_MAX_FAILURES": "3", "FORWARDAUTH_LOGIN_WINDOW": "60",
                            # counters of its own: other tests' failures from 127.0.0.1 must not count
                            "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}rl{secrets.token_hex(3)}:"})
    return await aiohttp_client(create_app(settings))


async def attempt(client: Client, username: str, password: str) -> Any:
    return await client.post("/login", json={"username": username, "password": password})


async def test_failures_lead_to_429_with_retry_after(strict: Client, make_user: Callable[..., users.User]) -> None:
    user = make_user()
    for _ in range(3):
        assert (await attempt(strict, user.username, "wrong")).status == 401
    throttled = await attempt(strict, user.username, PASSWORD)  # even the right password waits
    assert throttled.status == 429
    retry_after = int(throttled.headers["Retry-After"])
    assert retry_after >= 1 and retry_after <= 61  # the window is 60 s
    assert (await throttled.json())["error"] == "too_many_attempts"
    # the form gets a page saying so
    page = await strict.post("/login", data={"username": user.username, "password": PASSWORD})
    assert page.status == 429 and "Too many failed attempts" in await page.text()


async def test_a_success_clears_the_pair_and_other_users_are_unaffected(
    strict: Client, make_user: Callable[..., users.User]
) -> None:
    user, other = make_user(), make_user()
    for _ in range(2):
        await attempt(strict, user.username, "wrong")
    assert (await attempt(strict, user.username, PASSWORD)).status == 200
    for _ in range(2):  # counting starts again after the success
        assert (await attempt(strict, user.username, "wrong")).status == 401
    assert (await attempt(strict, user.username, PASSWORD)).status == 200
    assert (await attempt(strict, other.username, PASSWORD)).status == 200


async def test_throttling_is_audited_and_applies_to_the_password_grant(
    strict: Client, make_user: Callable[..., users.User], database: Any
) -> None:
    from forwardauth import clients

    user = make_user()
    app, secret = database.call(clients.create, f"rl-{user.username}", ["password"], [], [], False)
    form = {"grant_type": "password", "username": user.username, "password": "wrong"}
    for _ in range(3):
        response = await strict.post("/oauth/token", data=form, headers=basic(app.id, secret))
        assert response.status == 400
    response = await strict.post("/oauth/token", data={**form, "password": PASSWORD},
                                 headers=basic(app.id, secret))
    assert response.status == 429 and response.headers["Retry-After"]
    assert audit_events(database, user.username).count("login_throttled") == 1
