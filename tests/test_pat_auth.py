"""/auth with personal access tokens (issue 17), in process and on a 2-worker service: Bearer and
Basic (``curl -u``), the owner's name only, never a password check, exactly one credential, the
headers, the memory that keeps Redis off the path, and a revocation every worker obeys at once."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from forwardauth import config
from forwardauth.accounts import pats
from forwardauth.accounts.services import build_account_services
from forwardauth.core.passwords import Passwords
from forwardauth.core.pats import PREFIX
from forwardauth.core.policyfile import from_data
from forwardauth.http import authz
from forwardauth.stores import users

from .support import PASSWORD, Service, wait_until
from .test_web import Client, MakeUser, login, services_of

DAY = 86400


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """``support.wait_until`` for a check of this test's own event loop (which must keep running)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(services: Any, user: users.User, scopes: tuple[str, ...] = ("repo:read",)) -> tuple[str, str]:
    """(the token's id, the token) of a fresh token of ``user``."""
    info, token = await pats.create(services, user.username, f"ci-{len(scopes)}", list(scopes), 30 * DAY, "test")
    return info.id, token


async def test_bearer_and_basic_pass_with_the_users_headers(client: Client, make_user: MakeUser) -> None:
    user = make_user(roles=("user", "dev"))
    _, token = await new_token(services_of(client), user, ("repo:read", "repo:write"))
    for headers in (bearer(token), basic(user.username, token), basic(user.username.upper(), token)):
        response = await client.get("/auth", headers=headers)
        assert response.status == 200, headers
        assert response.headers["X-Auth-User"] == user.username
        assert response.headers["X-Auth-Roles"] == "user,dev"
        assert response.headers["X-Auth-Subject"] == user.id
        assert response.headers["X-Auth-AMR"] == "pat"
        assert response.headers["X-Auth-Scopes"] == "repo:read repo:write"


async def test_basic_with_another_users_name_is_refused(client: Client, make_user: MakeUser) -> None:
    owner, other = make_user(), make_user()
    _, token = await new_token(services_of(client), owner)
    for name in (other.username, "", "nobody-" + owner.username):
        response = await client.get("/auth", headers=basic(name, token))
        assert response.status == 401, name
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_a_plain_password_in_basic_is_refused_without_hashing(
    client: Client, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Argon2 per request would be a denial-of-service lever: a Basic password that is not a
    token is never checked, right or wrong. Beside a session cookie it is the application's (a
    Basic login of its own): the cookie decides, as before."""
    user = make_user()
    session = (await login(client, user))["access_token"]
    hashed: list[str] = []
    monkeypatch.setattr(Passwords, "verify", lambda self, stored, password: hashed.append(password))
    cookie = {"Cookie": f"{services_of(client).settings.cookie_name}={session}"}
    for headers in (basic(user.username, PASSWORD), basic(user.username, "wrong")):
        response = await client.get("/auth", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    beside = await client.get("/auth", headers={**basic("app-login", "app-password"), **cookie})
    assert beside.status == 200 and beside.headers["X-Auth-AMR"] == "pwd"  # the session's answer
    assert hashed == []


async def test_exactly_one_credential(client: Client, make_user: MakeUser) -> None:
    """A token with our cookie beside it is two credentials: refused, whichever would win."""
    user = make_user()
    _, token = await new_token(services_of(client), user)
    session = (await login(client, user))["access_token"]
    cookie = {"Cookie": f"{services_of(client).settings.cookie_name}={session}"}
    for headers in ({**bearer(token), **cookie}, {**basic(user.username, token), **cookie}):
        assert (await client.get("/auth", headers=headers)).status == 401
    # Also once the worker remembers the token's header (its next requests are not parsed again).
    for headers in (bearer(token), basic(user.username, token)):
        assert (await client.get("/auth", headers=headers)).status == 200
        assert (await client.get("/auth", headers={**headers, **cookie})).status == 401
        assert (await client.get("/auth", headers={**headers, "Cookie": "other=1"})).status == 200
    # A token in the cookie is none: tokens travel in the Authorization header only.
    cookie_token = {"Cookie": f"{services_of(client).settings.cookie_name}={token}"}
    assert (await client.get("/auth", headers=cookie_token)).status == 401


@pytest.mark.parametrize(
    "token",
    [PREFIX + "A" * 43, PREFIX + "A" * 42, PREFIX + "A" * 42 + "!", PREFIX, PREFIX + "A" * 44],
    ids=["unknown", "short", "bad-character", "prefix-only", "long"],
)
async def test_tokens_of_no_record_are_refused(client: Client, token: str) -> None:
    for headers in (bearer(token), basic("someone", token)):
        response = await client.get("/auth", headers=headers)
        assert response.status == 401
    assert len(services_of(client).pats) == 0


async def test_after_the_first_check_no_redis(
    client: Client, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is read once per worker; liveness is answered from memory while subscribed."""
    services = services_of(client)
    live = services.revocations.local
    assert live is not None
    await until(lambda: live.subscribed, "the revocation feed")
    user = make_user()
    _, token = await new_token(services, user)
    assert (await client.get("/auth", headers=bearer(token))).status == 200

    async def no_redis(*args: Any) -> None:
        raise AssertionError("Redis read on the hot path")

    monkeypatch.setattr(authz, "resolve", no_redis)
    hits, lookups = live.hits, services.revocations.lookups
    for headers in (bearer(token), basic(user.username, token)):
        assert (await client.get("/auth", headers=headers)).status == 200
    assert live.hits == hits + 2 and services.revocations.lookups == lookups  # memory's answers, not Redis's
    assert len(services.pats) == 1 and len(services.pat_credentials) == 2
    assert len(services.last_used) == 1  # the uses noted, for the flush off the request path


async def test_a_revoked_token_is_refused_at_once(client: Client, make_user: MakeUser) -> None:
    services = services_of(client)
    user = make_user()
    token_id, token = await new_token(services, user)
    for headers in (bearer(token), basic(user.username, token)):
        assert (await client.get("/auth", headers=headers)).status == 200
    assert await pats.revoke(services, user.username, token_id, "test")
    for headers in (bearer(token), basic(user.username, token)):  # remembered by the worker, all the same
        response = await client.get("/auth", headers=headers)
        assert response.status == 401 and response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_rules_take_kinds_of_token_and_scopes(client: Client, make_user: MakeUser) -> None:
    """``token_types`` and ``scopes`` enforced by /auth; ``challenge: basic`` makes git prompt."""
    services = services_of(client)
    services.use_policy(
        from_data(
            {
                "default": "authenticated",
                "rules": [
                    {"path": "/git", "policy": "authenticated", "token_types": ["pat"], "challenge": "basic"},
                    {"path": "/push", "policy": "authenticated", "scopes": ["repo:write"]},
                    {"path": "/web", "policy": "authenticated", "token_types": ["session"]},
                ],
            },
            "test",
        )
    )
    user = make_user()
    _, reader = await new_token(services, user, ("repo:read",))
    session = (await login(client, user))["access_token"]

    async def status(path: str, headers: dict[str, str]) -> tuple[int, str]:
        described = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.test", "X-Forwarded-Uri": path}
        response = await client.get("/auth", headers={**described, "X-Forwarded-Method": "GET", **headers})
        return response.status, response.headers.get("WWW-Authenticate", "")

    challenge = 'Basic realm="forwardauth", charset="UTF-8"'
    assert await status("/git/repo.git/info/refs", {}) == (401, challenge)
    assert await status("/git/repo.git", {"Accept": "text/html"}) == (401, challenge)  # no login page: a prompt
    assert await status("/git/repo.git", bearer(PREFIX + "A" * 43)) == (401, challenge)  # a refused one too
    assert (await status("/git/repo.git", basic(user.username, "password")))[0] == 401  # still no Argon2
    assert (await status("/git/repo.git", basic(user.username, reader)))[0] == 200
    assert (await status("/git/repo.git", bearer(session)))[0] == 403  # a session's token, where only PATs go
    assert (await status("/push", bearer(reader)))[0] == 403  # short of a scope
    assert (await status("/push", bearer(session)))[0] == 403  # a session's token has no scopes
    assert (await status("/web", bearer(reader)))[0] == 403
    assert (await status("/web", bearer(session)))[0] == 200
    assert await status("/web", {}) == (401, "Bearer")


# --- two workers ---------------------------------------------------------------------------------


def statuses(base: str, headers: dict[str, str], n: int = 12) -> set[int]:
    """/auth's answers over ``n`` new connections, so that every worker answers some."""
    return {httpx.get(base + "/auth", headers=headers).status_code for _ in range(n)}


async def test_revocation_reaches_both_workers_at_once(
    service: Callable[..., Service], make_user: MakeUser, settings: config.Settings
) -> None:
    svc = service(workers=2)
    user = make_user()
    services = build_account_services(settings)
    try:
        token_id, token = await new_token(services, user)
        curl_u = basic(user.username, token)
        assert statuses(svc.base, curl_u) == {200}  # now remembered by both workers
        assert statuses(svc.base, bearer(token)) == {200}
        assert await pats.revoke(services, user.username, token_id, "test")
    finally:
        await services.close()
    wait_until(
        lambda: statuses(svc.base, curl_u) | statuses(svc.base, bearer(token)) == {401},
        timeout=2,
        what="both workers to refuse",
    )
