"""Browser sign-on that holds and misconfigurations that speak, in process (Chromium: test_sso_browser.py).

The login page's CSP lets its form lead to rd; the refresh cookie is shared by every host behind
the per-host snippets; a sign-in whose cookie the browser would drop (Secure over plain HTTP, a
cookie domain that does not cover the host) is refused with the reason on the page and in the
log; the 403 page and the sign-out page; one INFO line per refusal.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from forwardauth import config
from forwardauth.http import browser
from forwardauth.http.app import create_app
from forwardauth.http.pages import form_action_sources

from .support import PASSWORD, AppServer
from .test_renewal import REFRESH, backdate, form_login, send, set_cookies, value_of
from .test_web import MakeUser, audit_events, auth_status, login, services_of

Client = Any
RD = "https://app.example.test/reports"
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.test"}


async def app_client(aiohttp_client: Any, settings: config.Settings, **changes: Any) -> Client:
    return await aiohttp_client(AppServer(create_app(dataclasses.replace(settings, **changes))))


async def post_login(client: Client, username: str, rd: str = RD, password: str = PASSWORD, **headers: str) -> Any:
    return await send(
        client, "POST", "/login", data={"username": username, "password": password, "rd": rd}, headers=headers
    )


# --- item 1: the form may lead to rd (CSP form-action covers redirects) --------------------------


def test_form_action_names_every_place_the_form_leads() -> None:
    sources = form_action_sources(("example.test", "10.1.2.3"), ("https://auth.example.test:8443/login", "/x"))
    assert sources.split() == [
        "'self'",
        "https://auth.example.test:8443",
        "https://example.test:*",
        "http://example.test:*",
        "https://*.example.test:*",
        "http://*.example.test:*",
        "https://10.1.2.3:*",
        "http://10.1.2.3:*",
    ]


async def test_the_login_page_lets_its_form_lead_to_rd(client: Client) -> None:
    response = await client.get("/login", params={"rd": RD})
    csp = response.headers["Content-Security-Policy"]
    assert "form-action 'self' http://auth.example.test " in csp  # the login URL's own origin
    assert "https://*.example.test:*" in csp and "default-src 'none'" in csp


# --- item 2: one refresh cookie for every host behind the snippets -------------------------------


async def test_the_refresh_cookie_is_for_every_host_behind_the_snippets(
    aiohttp_client: Any, settings: config.Settings, make_user: MakeUser, database: Any
) -> None:
    client = await app_client(aiohttp_client, settings, login_url="/forwardauth/login")
    user = make_user()
    response = await post_login(client, user.username, **{"X-Forwarded-Prefix": "/forwardauth"})
    assert response.status == 303
    lines = [line for line in response.headers.getall("Set-Cookie") if line.startswith(REFRESH + "=")]
    stale, shared = lines  # the host-only one from before is expired: two would be refused
    assert "Max-Age=0" in stale and "Path=/forwardauth/" in stale and "Domain" not in stale
    assert "Domain=example.test" in shared and "Path=/forwardauth/" in shared and "HttpOnly" in shared
    # Another host's login page (the browser sends it the same cookie) renews the one session.
    backdate(database, value_of(shared), "created_at", 60)  # the access cookie has expired since
    other = {"X-Forwarded-Prefix": "/forwardauth", "Host": "wiki.example.test"}
    wiki = "https://wiki.example.test/x"
    renewed = await send(client, "GET", f"/login?rd={quote(wiki, safe='')}", {REFRESH: value_of(shared)}, headers=other)
    assert renewed.status == 303 and renewed.headers["Location"] == wiki
    rotated = set_cookies(renewed)[REFRESH]
    assert "Domain=example.test" in rotated and value_of(rotated) != value_of(shared)
    assert await auth_status(client, value_of(set_cookies(renewed)["forwardauth"])) == 200
    # Sign-out clears it for the domain too.
    out = await send(client, "POST", "/logout", {REFRESH: value_of(rotated)}, headers=other)
    cleared = [line for line in out.headers.getall("Set-Cookie") if line.startswith(REFRESH + "=")]
    assert any("Domain=example.test" in line and "Max-Age=0" in line for line in cleared)


async def test_a_login_host_keeps_the_refresh_cookie_to_itself(client: Client, make_user: MakeUser) -> None:
    """FORWARDAUTH_LOGIN_URL on a host of its own (here the default ISSUER/login): Path=/ there, so
    a domain-wide cookie would reach the apps; every host renews through that one page instead."""
    response = await post_login(client, make_user().username)
    refresh = set_cookies(response)[REFRESH]
    assert "Path=/" in refresh and "Domain" not in refresh


# --- item 3: cookies the browser would drop ---------------------------------------------------------


@pytest.mark.parametrize(
    "page,rd,domain,secure,named",
    [
        ("http://app.example.test", RD, "example.test", True, "FORWARDAUTH_COOKIE_SECURE"),
        (
            "https://auth.other.test",
            RD,
            "example.test",
            False,
            "FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover auth.other.test",
        ),
        ("https://auth.example.test", "https://app.other.test/", "example.test", True, "does not cover app.other.test"),
        ("https://auth.example.test", RD, None, True, "FORWARDAUTH_COOKIE_DOMAIN is unset"),
        (
            "https://auth.example.test",
            "http://app.example.test/",
            "example.test",
            True,
            "FORWARDAUTH_COOKIE_SECURE=true and app.example.test is served over plain HTTP",
        ),
    ],
)
def test_what_keeps_the_cookie_from_rd(
    pure_settings: config.Settings, page: str, rd: str, domain: str | None, secure: bool, named: str
) -> None:
    problem = browser.delivery_problem(
        dataclasses.replace(pure_settings, cookie_domain=domain, cookie_secure=secure), page, rd
    )
    assert problem is not None and named in problem.log, problem


@pytest.mark.parametrize(
    "page,rd,domain",
    [
        ("https://auth.example.test", RD, "example.test"),
        ("http://localhost:8080", "http://localhost:8080/x", None),  # loopback keeps Secure cookies
        ("http://127.0.0.1:8080", "", None),
        ("https://app.example.test", "", None),  # rd empty: back to / on the same host
    ],
)
def test_cookies_that_arrive(pure_settings: config.Settings, page: str, rd: str, domain: str | None) -> None:
    assert (
        browser.delivery_problem(dataclasses.replace(pure_settings, cookie_domain=domain, cookie_secure=True), page, rd)
        is None
    )


async def test_a_secure_cookie_over_plain_http_is_explained_not_looped(
    aiohttp_client: Any, settings: config.Settings, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    client = await app_client(aiohttp_client, settings, cookie_secure=True)
    user = make_user()
    plain = {"Origin": "http://app.example.test", "Host": "app.example.test"}
    response = await post_login(client, user.username, **plain)
    assert response.status == 400 and "Set-Cookie" not in response.headers
    page = await response.text()
    assert "plain HTTP" in page and "FORWARDAUTH_COOKIE_SECURE=false" in page and "<form" in page
    assert f'value="{user.username}"' in page and f'value="{RD}"' in page  # the form, ready once fixed
    assert "FORWARDAUTH_COOKIE_SECURE=true" in caplog.text and PASSWORD not in caplog.text
    assert audit_events(services_of(client).db, user.username) == []  # no password checked, no session
    # The same page over HTTPS (the proxy says so, and so does the browser) signs in.
    https = await post_login(
        client,
        user.username,
        Origin="https://app.example.test",
        **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.test"},
    )
    assert https.status == 303 and "Secure" in set_cookies(https)["forwardauth"]
    # Not a browser (no Origin, no Referer): nothing to judge.
    assert (await post_login(client, user.username, Host="app.example.test")).status == 303


async def test_a_cookie_domain_that_does_not_cover_the_host_is_explained(
    client: Client, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    user = make_user()
    other = {"Origin": "https://login.other.test", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "login.other.test"}
    response = await post_login(client, user.username, rd="", **other)
    assert response.status == 400 and "Set-Cookie" not in response.headers
    assert "FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover login.other.test" in await response.text()
    assert "sign-in refused: FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover login.other.test" in caplog.text


async def test_an_rd_beyond_the_cookie_domain_is_explained(
    aiohttp_client: Any, settings: config.Settings, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    """FORWARDAUTH_ALLOWED_DOMAINS wider than the cookie domain: rd may lead where the cookie does not."""
    client = await app_client(aiohttp_client, settings, allowed_domains=("example.test", "other.test"))
    user = make_user()
    refused = await post_login(
        client,
        user.username,
        rd="https://app.other.test/x",
        Origin="http://auth.example.test",
        Host="auth.example.test",
    )
    assert refused.status == 400 and "does not cover app.other.test" in await refused.text()
    assert "sign-in refused: the cookie cannot reach app.other.test" in caplog.text


def test_warnings_at_start() -> None:
    def warnings(**env: str) -> str:
        return "\n".join(browser.startup_warnings(config.load({f"FORWARDAUTH_{k}": v for k, v in env.items()})))

    assert "FORWARDAUTH_ISSUER is http://auth.example.test (plain HTTP) but FORWARDAUTH_COOKIE_SECURE=true" in warnings(
        ISSUER="http://auth.example.test", COOKIE_DOMAIN="example.test"
    )
    assert "FORWARDAUTH_LOGIN_URL is http://auth.example.test/login" in warnings(
        ISSUER="https://auth.example.test", LOGIN_URL="http://auth.example.test/login"
    )
    assert "does not cover auth.other.test, the host of FORWARDAUTH_LOGIN_URL" in warnings(
        ISSUER="https://auth.other.test", COOKIE_DOMAIN="example.test"
    )
    assert "FORWARDAUTH_COOKIE_DOMAIN is unset" in warnings(
        ISSUER="https://auth.example.test", ALLOWED_DOMAINS="example.test"
    )
    assert "which FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover" in warnings(
        ISSUER="https://auth.example.test", COOKIE_DOMAIN="example.test", ALLOWED_DOMAINS="example.test,b.test"
    )
    # As documented: the default (loopback) issuer, and a complete HTTPS layout, say nothing.
    assert warnings() == ""
    assert (
        warnings(
            ISSUER="https://app.example.test/forwardauth", LOGIN_URL="/forwardauth/login", COOKIE_DOMAIN="example.test"
        )
        == ""
    )
    assert warnings(ISSUER="http://app.example.test", COOKIE_SECURE="false", COOKIE_DOMAIN="example.test") == ""


# --- item 5: the 403 page, sign-out by link, one line per refusal -----------------------------------


@pytest.fixture
def guarded(aiohttp_client: Any, settings: config.Settings, tmp_path: Path) -> Any:
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "default: authenticated\nrules:\n  - host: admin.example.test\n    roles: [admin]\n"
        "  - host: closed.example.test\n    policy: deny\n"
    )

    async def make() -> Client:
        return await app_client(aiohttp_client, settings, policy_file=policy)

    return make


def traefik_asks(host: str, token: str | None, html: bool = True) -> dict[str, str]:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": "/panel?x=1",
        "X-Forwarded-For": "203.0.113.9",
        "Accept": "text/html" if html else "application/json",
    }
    return {**headers, "Cookie": f"forwardauth={token}"} if token else headers


async def test_a_refused_browser_gets_a_page_saying_who_and_why(
    guarded: Any, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="forwardauth.security")
    client = await guarded()
    user = make_user(roles=("user", "ops"))
    token = (await login(client, user))["access_token"]
    response = await client.get("/auth", headers=traefik_asks("admin.example.test", token))
    assert response.status == 403 and response.headers["Content-Type"].startswith("text/html")
    page = await response.text()
    assert f"signed in as <strong>{user.username}</strong> (roles: user, ops)" in page
    assert "admin.example.test needs another role" in page
    assert page.count('action="http://auth.example.test/logout"') == 2  # sign out; sign in as someone else
    assert 'name="rd" value="https://admin.example.test/panel?x=1"' in page
    assert "form-action 'self'" in response.headers["Content-Security-Policy"]
    line = f'access denied: address=203.0.113.9 host=admin.example.test user="{user.username}" method=GET'
    assert line in caplog.text and "reason=role" in caplog.text
    # An API client, and nginx (which asks /forbidden for the page itself), get the plain answer.
    api = await client.get("/auth", headers=traefik_asks("admin.example.test", token, html=False))
    assert api.status == 403 and await api.text() == "forbidden\n"
    nginx = {
        "X-Original-URL": "https://admin.example.test/panel",
        "X-Original-Method": "GET",
        "Accept": "text/html",
        "Cookie": f"forwardauth={token}",
    }
    assert await (await client.get("/auth", headers=nginx)).text() == "forbidden\n"
    asked = await client.get("/forbidden", headers=nginx)
    assert asked.status == 403 and f"<strong>{user.username}</strong>" in await asked.text()
    # A host closed to everyone, token or not.
    closed = await client.get("/auth", headers=traefik_asks("closed.example.test", None))
    assert closed.status == 403 and "closed.example.test is not open to you" in await closed.text()
    assert "access denied: address=203.0.113.9 host=closed.example.test user=- " in caplog.text


async def test_sign_out_by_link_asks_first(aiohttp_client: Any, settings: config.Settings, make_user: MakeUser) -> None:
    client = await app_client(aiohttp_client, settings, login_url="/forwardauth/login")
    user = make_user()
    token = (await login(client, user))["access_token"]
    page = await send(
        client,
        "GET",
        f"/logout?rd={quote(RD, safe='')}",
        {"forwardauth": token},
        headers={"X-Forwarded-Prefix": "/forwardauth"},
    )
    assert page.status == 200 and page.headers["X-Frame-Options"] == "DENY"
    text = await page.text()
    assert f"signed in as <strong>{user.username}</strong>" in text
    assert '<form method="post" action="/forwardauth/logout">' in text and f'value="{RD}"' in text
    assert await auth_status(client, token) == 200  # a link (a GET) signed no one out
    nobody = await (await send(client, "GET", "/logout")).text()
    assert "You are not signed in." in nobody and "<form" not in nobody


async def test_sign_out_by_link_goes_to_the_login_host(client: Client) -> None:
    """The default settings here: FORWARDAUTH_LOGIN_URL=http://auth.example.test/login, a login host
    whose refresh cookie only it can see and clear. Another host's sign-out link leads there."""
    elsewhere = await send(
        client,
        "GET",
        f"/logout?rd={quote(RD, safe='')}",
        headers={"X-Forwarded-Prefix": "/forwardauth", "X-Forwarded-Host": "app.example.test"},
    )
    assert elsewhere.status == 303
    assert elsewhere.headers["Location"] == f"http://auth.example.test/logout?rd={quote(RD, safe='')}"
    there = await send(client, "GET", "/logout", headers={"Host": "auth.example.test"})
    assert there.status == 200 and "You are not signed in." in await there.text()


async def test_signed_out_lands_on_a_page_saying_so(client: Client, make_user: MakeUser) -> None:
    _, refresh = await form_login(client, make_user())
    out = await send(client, "POST", "/logout", {REFRESH: refresh}, data={"rd": RD})
    assert out.status == 303 and out.headers["Location"] == f"/login?signed_out=1&rd={quote(RD, safe='')}"
    landed = await (await send(client, "GET", out.headers["Location"])).text()
    assert "You have been signed out." in landed and f'value="{RD}"' in landed
    still = await (await send(client, "GET", "/login?signed_out=1", {REFRESH: "x"})).text()
    assert "signed out" not in still  # a link cannot tell a signed-in browser it is signed out


async def test_failed_and_throttled_logins_are_one_line_each(
    aiohttp_client: Any, settings: config.Settings, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="forwardauth.security")
    # Counters of its own: other tests' failures from 127.0.0.1 must not count.
    client = await app_client(
        aiohttp_client,
        settings,
        login_max_failures=2,
        redis_prefix=f"{settings.redis_prefix}sso{secrets.token_hex(3)}:",
    )
    user = make_user()
    where = {"X-Forwarded-For": "198.51.100.4", **PROXIED}
    statuses = [(await post_login(client, user.username, password="wrong", **where)).status for _ in range(3)]
    assert statuses == [401, 401, 429]
    failed = f'login failed: address=198.51.100.4 host=auth.example.test user="{user.username}"'
    assert caplog.text.count(failed) == 2
    assert (
        f'login throttled: address=198.51.100.4 host=auth.example.test user="{user.username}" retry_after='
        in caplog.text
    )
    assert "wrong" not in caplog.text
    spoof = 'x" address=10.0.0.1\nforged'
    await post_login(client, spoof, password="wrong", **where)
    assert 'user="x\\" address=10.0.0.1\\nforged"' in caplog.text  # quoted: no field, no line of its own
