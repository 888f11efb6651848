"""Brute-force regulation on /login and the password grant, with real Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from forwardauth import config
from forwardauth.http.app import create_app
from forwardauth.stores import users

from . import http
from .support import PASSWORD, Stack
from .test_oauth import basic
from .test_web import audit_events

Client = Any


@pytest.fixture
async def strict(aiohttp_client: Any, env: dict[str, str]) -> Client:
    """An app allowing 3 failures per address and username within a minute."""
    settings = config.load(
        {
            **env,
            "FORWARDAUTH_LOGIN_MAX_FAILURES": "3",
            "FORWARDAUTH_LOGIN_WINDOW": "60",
            # counters of its own: other tests' failures from 127.0.0.1 must not count
            "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}rl{secrets.token_hex(3)}:",
        }
    )
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
    from forwardauth.stores import clients

    user = make_user()
    app, secret = database.call(clients.create, f"rl-{user.username}", ["password"], [], [], False)
    form = {"grant_type": "password", "username": user.username, "password": "wrong"}
    for _ in range(3):
        response = await strict.post("/oauth/token", data=form, headers=basic(app.id, secret))
        assert response.status == 400
    response = await strict.post("/oauth/token", data={**form, "password": PASSWORD}, headers=basic(app.id, secret))
    assert response.status == 429 and response.headers["Retry-After"]
    assert audit_events(database, user.username).count("login_throttled") == 1


# --- the real client, and a username sprayed from everywhere ---------------------------------------

BEHIND_THE_PROXY = "198.51.100.7"  # the tests' client is 127.0.0.1, a trusted proxy by default


def from_address(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"{address}, 127.0.0.1", **headers}


async def attempt_from(client: Client, address: str, username: str, password: str, **headers: str) -> Any:
    return await client.post(
        "/login", json={"username": username, "password": password}, headers=from_address(address, **headers)
    )


async def test_one_client_behind_the_proxy_locks_out_only_itself(
    strict: Client, make_user: Callable[..., users.User]
) -> None:
    """Counted by the client the proxy forwards for, not by the proxy: 20 failures with random
    usernames from one client throttle that client, and no one else."""
    user = make_user()
    statuses = [
        (await attempt_from(strict, "192.0.2.1", f"nobody-{secrets.token_hex(4)}", "wrong")).status for _ in range(20)
    ]
    assert set(statuses) == {401, 429} and statuses[-1] == 429  # the attacker is held...
    assert (await attempt_from(strict, BEHIND_THE_PROXY, user.username, PASSWORD)).status == 200  # ...no one else


async def test_forwarded_for_from_an_untrusted_sender_is_not_believed(
    aiohttp_client: Any, env: dict[str, str], make_user: Callable[..., users.User]
) -> None:
    """A client that is no proxy of ours cannot dodge its limit by naming other addresses."""
    settings = config.load(
        {
            **env,
            "FORWARDAUTH_LOGIN_MAX_FAILURES": "3",
            "FORWARDAUTH_LOGIN_WINDOW": "60",
            "FORWARDAUTH_TRUSTED_PROXIES": "10.99.0.0/16",
            "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}rl{secrets.token_hex(3)}:",
        }
    )
    client = await aiohttp_client(create_app(settings))
    user = make_user()
    for index in range(3):
        assert (await attempt_from(client, f"192.0.2.{index + 10}", user.username, "wrong")).status == 401
    assert (await attempt_from(client, "192.0.2.99", user.username, PASSWORD)).status == 429


async def test_a_sprayed_username_does_not_lock_the_user_out_where_they_signed_in_before(
    strict: Client, make_user: Callable[..., users.User]
) -> None:
    """Failures from anywhere count against the username (x10), but only for clients the user
    never signed in from: their own address, or their browser (device cookie), still gets in."""
    user = make_user()
    home = "203.0.113.10"
    assert (await attempt_from(strict, home, user.username, PASSWORD)).status == 200
    form = await strict.post(
        "/login",
        data={"username": user.username, "password": PASSWORD},
        headers=from_address("203.0.113.20"),
        allow_redirects=False,
    )
    assert form.status == 303
    device = form.cookies["forwardauth_device"]
    assert device["httponly"] and device["samesite"] == "Lax" and device["path"] == "/"
    strict.session.cookie_jar.clear()
    for index in range(30):  # 3 failures x 10, one from each of 30 addresses
        assert (await attempt_from(strict, f"192.0.2.{index + 1}", user.username, "wrong")).status == 401
    elsewhere = await attempt_from(strict, "192.0.2.200", user.username, PASSWORD)
    assert elsewhere.status == 429 and int(elsewhere.headers["Retry-After"]) <= 61  # a stranger waits
    assert (await attempt_from(strict, home, user.username, PASSWORD)).status == 200  # the user does not
    cookie = {"Cookie": f"forwardauth_device={device.value}"}
    assert (await attempt_from(strict, "192.0.2.201", user.username, PASSWORD, **cookie)).status == 200
    forged = {"Cookie": "forwardauth_device=" + secrets.token_urlsafe(32)}
    assert (await attempt_from(strict, "192.0.2.202", user.username, PASSWORD, **forged)).status == 429


async def test_a_known_client_is_still_held_by_its_own_limit(
    strict: Client, make_user: Callable[..., users.User]
) -> None:
    """Known for the username is no licence to guess: the pair limit holds a known address too."""
    user = make_user()
    home = "203.0.113.11"
    assert (await attempt_from(strict, home, user.username, PASSWORD)).status == 200
    for _ in range(3):
        assert (await attempt_from(strict, home, user.username, "wrong")).status == 401
    assert (await attempt_from(strict, home, user.username, PASSWORD)).status == 429


def test_through_nginx_one_client_locks_out_only_itself(
    proxy_stack: Callable[..., Stack], make_user: Callable[..., users.User], env: dict[str, str]
) -> None:
    """The same through the shipped nginx config, which appends the peer to X-Forwarded-For (the
    tests' clients name themselves in it: they all connect from 127.0.0.1, itself trusted)."""
    prefix = f"{env['FORWARDAUTH_REDIS_PREFIX']}rl{secrets.token_hex(3)}:"
    stack = proxy_stack(
        "nginx",
        {"FORWARDAUTH_LOGIN_MAX_FAILURES": "3", "FORWARDAUTH_LOGIN_WINDOW": "60", "FORWARDAUTH_REDIS_PREFIX": prefix},
    )
    user = make_user()
    base = stack.url + "/forwardauth"
    statuses = [
        http.post_json(
            base + "/login",
            {"username": f"nobody-{secrets.token_hex(4)}", "password": "wrong"},
            {"X-Forwarded-For": "192.0.2.1"},
        ).status
        for _ in range(20)
    ]
    assert set(statuses) == {401, 429} and statuses[-1] == 429
    assert (
        http.post_json(
            base + "/login", {"username": user.username, "password": PASSWORD}, {"X-Forwarded-For": BEHIND_THE_PROXY}
        ).status
        == 200
    )
