"""Cross-site form posts to /login, /logout and /logout/all: refused unless from our own origin or an
allowed domain; JSON and Bearer calls are not browser forms and are not checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from forwardauth.core.csrf import form_post_allowed, origin_of
from forwardauth.stores import users

from .support import PASSWORD
from .test_web import auth_status, login

Client = Any
MakeUser = Callable[..., users.User]
ALLOWED = ("example.com",)
OWN = ("https://auth.internal:8443",)


@pytest.mark.parametrize(
    "url,origin",
    [
        ("https://Example.com", "https://example.com"),
        ("https://example.com:443/path?q", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:8080/", "http://example.com:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("", None),
        ("javascript:alert(1)", None),
        ("https://user@example.com", None),
        ("https://example.com:99999", None),
        ("//example.com", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "origin,referer,allowed",
    [
        (None, None, True),  # not a browser: curl, scripts
        ("", "", True),
        ("https://example.com", None, True),
        ("https://app.example.com", "https://evil.test/", True),  # Origin decides when present
        ("http://app.example.com:8080", None, True),
        ("https://auth.internal:8443", None, True),  # our own origin, not on an allowed domain
        (None, "https://app.example.com/page?x=1", True),
        (None, "https://auth.internal:8443/login", True),
        ("https://evil.test", None, False),
        ("https://evil.test", "https://example.com/", False),
        ("https://example.com.evil.test", None, False),
        ("https://evilexample.com", None, False),
        ("https://auth.internal", None, False),  # another port is another origin
        ("null", None, False),  # sandboxed frames, data: pages
        ("null", "https://example.com/", False),
        (None, "https://evil.test/?https://example.com", False),
        (None, "not a url", False),
        ("https://example.com@evil.test", None, False),
    ],
)
def test_form_post_allowed(origin: str | None, referer: str | None, allowed: bool) -> None:
    assert form_post_allowed(origin, referer, OWN, ALLOWED) is allowed


# --- through the real application (allowed domain: example.test) -----------------------------------

EVIL = {"Origin": "https://evil.test"}


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """A host-only cookie: the pages posting here are on hosts (127.0.0.1, login.other.test) that a
    cookie for example.test would not reach, and such a sign-in is refused before the CSRF question
    (see test_sso.py). Forms from the allowed domain example.test stay same-site."""
    return {**env, "FORWARDAUTH_COOKIE_DOMAIN": "", "FORWARDAUTH_ALLOWED_DOMAINS": "example.test"}


async def form_login(client: Client, user: users.User, headers: dict[str, str]) -> Any:
    return await client.post(
        "/login", data={"username": user.username, "password": PASSWORD}, headers=headers, allow_redirects=False
    )


@pytest.mark.parametrize(
    "headers",
    [
        EVIL,
        {"Origin": "null"},
        {"Referer": "https://evil.test/page"},
        {"Origin": "https://example.test.evil.test"},
        {"Origin": "http://auth.example.test.evil.test"},
    ],
)
async def test_a_cross_site_form_login_is_refused(client: Client, make_user: MakeUser, headers: dict[str, str]) -> None:
    response = await form_login(client, make_user(), headers)
    assert response.status == 403
    assert "Set-Cookie" not in response.headers
    assert (await response.json())["error"] == "invalid_request"


async def test_same_site_form_logins_pass(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    own = f"http://127.0.0.1:{client.server.port}"  # the Host the browser used
    for headers in (
        {"Origin": own},
        {"Origin": "http://auth.example.test"},
        {"Origin": "https://app.example.test"},
        {"Referer": "https://app.example.test/x"},
        {"Referer": own + "/login?rd=x"},
        {},
    ):
        response = await form_login(client, user, headers)
        assert response.status == 303 and "forwardauth=" in response.headers["Set-Cookie"], headers


async def test_own_origin_behind_a_proxy_is_the_public_one(client: Client, make_user: MakeUser) -> None:
    """Through a trusted proxy the browser's origin is the proxy's (X-Forwarded-Host/-Proto), not ours."""
    user = make_user()
    proxied = {"X-Forwarded-Host": "login.other.test", "X-Forwarded-Proto": "https"}
    passed = await form_login(client, user, {**proxied, "Origin": "https://login.other.test"})
    assert passed.status == 303
    for origin in ("http://login.other.test", f"http://127.0.0.1:{client.server.port}"):  # scheme, host
        assert (await form_login(client, user, {**proxied, "Origin": origin})).status == 403
    # and the same Origin without the proxy's description is someone else's
    assert (await form_login(client, user, {"Origin": "https://login.other.test"})).status == 403


async def test_api_calls_are_not_forms(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    response = await client.post("/login", json={"username": user.username, "password": PASSWORD}, headers=EVIL)
    assert response.status == 200
    tokens = await response.json()
    logout = await client.post("/logout", headers={**EVIL, "Authorization": f"Bearer {tokens['access_token']}"})
    assert logout.status == 200 and (await logout.json()) == {"logged_out": True}


@pytest.mark.parametrize("path", ["/logout", "/logout/all"])
async def test_a_cross_site_logout_by_cookie_is_refused(client: Client, make_user: MakeUser, path: str) -> None:
    token = (await login(client, make_user()))["access_token"]
    cookie = {"Cookie": f"forwardauth={token}"}
    response = await client.post(path, headers={**cookie, **EVIL})
    assert response.status == 403
    assert await auth_status(client, token) == 200  # still signed in
    same_site = await client.post(path, headers={**cookie, "Origin": "https://app.example.test"})
    assert same_site.status == 200
    assert await auth_status(client, token) == 401
