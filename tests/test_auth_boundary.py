"""The security boundary on the real application: /auth judges exactly the request the backend
serves, or refuses it (issue 12, items 1, 3 and 10; issue 21: the refresh cookie).

Described the way nginx (``X-Original-*``), Traefik/Caddy (``X-Forwarded-*``) and Envoy (the
request line under ``/auth/envoy``) describe it, every ambiguous path or host is a 400 with a
clear error, never a 200 and never a 500; paths read several ways are judged by the strictest
reading. The same through real proxies and backends is in the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forwardauth import config
from forwardauth.core.refusals import RefusalLog, refresh_cookie_sent
from forwardauth.http.app import create_app
from forwardauth.stores import users

from .support import AppServer, wait_until
from .test_policy import REFUSED_PATHS
from .test_web import login

Client = Any
MakeUser = Callable[..., users.User]
APP = "app.example.test"
SECRET = "secret.example.test"
POLICY = f"""
default: authenticated
rules:
  - host: {SECRET}
    roles: [admin]
  - path: /public
    policy: bypass
  - path: /healthz
    policy: bypass
  - path: /admin
    roles: [admin]
  - path_regex: "^/api/v[0-9]+/admin(/|$)"
    roles: [admin]
"""


def nginx(path: str, host: str = APP, method: str = "GET", routed: str | None = None) -> dict[str, str]:
    """What the shipped nginx snippet sends: the URL the browser asked for, and the vhost nginx routed on."""
    return {
        "X-Original-URL": f"http://{host}{path}",
        "X-Original-URI": path,
        "X-Original-Method": method,
        "X-Original-Host": routed or host.split(":")[0],
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "203.0.113.9",
    }


def traefik(path: str, host: str = APP, method: str = "GET") -> dict[str, str]:
    """What Traefik's forwardAuth (and Caddy's forward_auth) send."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": path,
        "X-Forwarded-For": "203.0.113.9",
    }


FAMILIES = {"nginx": nginx, "traefik": traefik}


async def make(
    aiohttp_client: Any, env: dict[str, str], tmp_path: Path, with_policy: bool = True, **extra: str
) -> Client:
    """The real application with POLICY (or none) and these settings."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    settings = config.load({**env, **({"FORWARDAUTH_POLICY_FILE": str(policy)} if with_policy else {}), **extra})
    return await aiohttp_client(AppServer(create_app(settings)))


@pytest.fixture
async def strict(aiohttp_client: Any, env: dict[str, str], tmp_path: Path) -> Client:
    return await make(aiohttp_client, env, tmp_path)


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> RefusalLog:
    """A fresh refusal log, so this test sees its own first report."""
    fresh = RefusalLog()
    monkeypatch.setattr("forwardauth.http.authz.REFUSALS", fresh)
    return fresh


async def tokens(client: Client, make_user: MakeUser) -> dict[str, str]:
    return {
        "user": (await login(client, make_user(roles=("user",))))["access_token"],
        "admin": (await login(client, make_user(roles=("admin",))))["access_token"],
    }


async def status(client: Client, headers: dict[str, str], token: str | None = None) -> int:
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    response = await client.get("/auth", headers=headers, allow_redirects=False)
    if response.status == 400:
        body = await response.json()
        assert body["error"] == "invalid_request" and body["error_description"], body
    return int(response.status)


async def raw_status(client: Client, target: str, host: str = APP, extra: str = "") -> int:
    """A request line sent as is (aiohttp's client would normalise the path)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


# --- paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_ambiguous_paths_are_400_in_every_family(
    strict: Client, make_user: MakeUser, family: str, refusals: RefusalLog, caplog: pytest.LogCaptureFixture
) -> None:
    describe = FAMILIES[family]
    admin = (await tokens(strict, make_user))["admin"]
    sendable = [p for p in REFUSED_PATHS if p.startswith("/") and p.isascii() and p.isprintable() and " " not in p]
    assert len(sendable) > 40
    for path in sendable:
        for token in (None, admin):
            assert await status(strict, describe(path), token) == 400, path
    # logged once per interval per reason, with a count; never a traceback
    lines = [r for r in caplog.records if r.name == "forwardauth.refusals"]
    assert [r.levelno for r in lines] == [logging.WARNING] and "ambiguous path" in lines[0].getMessage()
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "path,anonymous,user,admin",
    [
        ("/admin;x=1/panel", 401, 403, 200),
        ("/Admin;jsessionid=1/panel", 401, 403, 200),
        ("/ADMIN/x", 401, 403, 200),
        ("//admin", 401, 403, 200),
        ("/%61dmin", 401, 403, 200),
        ("/%2561dmin", 401, 403, 200),
        ("/api/v1/admin;x", 401, 403, 200),
        ("/PUBLIC/x", 401, 200, 200),
        ("/public/x", 200, 200, 200),
        ("/healthz", 200, 200, 200),
        ("/elsewhere", 401, 200, 200),
    ],
)
async def test_paths_read_several_ways_are_judged_by_the_strictest(
    strict: Client, make_user: MakeUser, family: str, path: str, anonymous: int, user: int, admin: int
) -> None:
    given = await tokens(strict, make_user)
    describe = FAMILIES[family]
    got = (
        await status(strict, describe(path)),
        await status(strict, describe(path), given["user"]),
        await status(strict, describe(path), given["admin"]),
    )
    assert got == (anonymous, user, admin)
    # again: the memo gives the same answers
    assert await status(strict, describe(path), given["user"]) == user


async def test_envoy_paths_as_sent(strict: Client, make_user: MakeUser) -> None:
    """Envoy's description is the request line itself: refused and judged the same way."""
    assert await raw_status(strict, "/auth/envoy/admin/%252e%252e/healthz") == 400
    assert await raw_status(strict, "/auth/envoy/public/..;/admin/x") == 400
    assert await raw_status(strict, "/auth/envoy/public%2f..%2fadmin") == 400
    assert await raw_status(strict, "/auth/envoy/public/x") == 200
    assert await raw_status(strict, "/auth/envoy/PUBLIC/x") == 401
    user = (await tokens(strict, make_user))["user"]
    assert await raw_status(strict, "/auth/envoy/admin;x=1/panel", extra=f"Authorization: Bearer {user}\r\n") == 403
    assert await raw_status(strict, "/auth/envoy/x", host="secret.example.test:") == 400


# --- hosts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("host", [f"{SECRET}:", f"{SECRET}:80x", "a b", "%", f"user@{SECRET}", f"{SECRET}:0"])
async def test_unparsable_hosts_are_400_never_a_fallback(strict: Client, family: str, host: str) -> None:
    """The proxy may still route ``secret.example.test:`` to the secret vhost: no other host is judged."""
    headers = {"Host": APP, **FAMILIES[family]("/public/x", host=host)}
    if family == "nginx":  # the vhost routed on, and a client's X-Forwarded-Host: neither replaces the URL's
        headers.update({"X-Original-Host": SECRET, "X-Forwarded-Host": APP})
    assert await status(strict, headers) == 400


async def test_the_vhost_nginx_routed_on_decides(strict: Client, make_user: MakeUser) -> None:
    """``GET http://secret.example.test/public/x`` with ``Host: www``: nginx serves the secret vhost
    ($host) while $http_host says www. The two disagree: refused, not judged as www."""
    assert await status(strict, nginx("/public/x", host=APP, routed=SECRET)) == 400
    assert await status(strict, nginx("/public/x", host=APP)) == 200  # the same, agreeing
    user = (await tokens(strict, make_user))["user"]
    for host in (SECRET, SECRET.upper(), SECRET + ".", SECRET + ":8080"):  # the secret vhost, however spelled
        assert await status(strict, nginx("/public/x", host=host, routed=SECRET), user) == 403, host
        assert await status(strict, traefik("/public/x", host=host), user) == 403, host


async def test_the_login_location_is_on_the_host_asked_for(
    aiohttp_client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """With the login page on each protected host, the Location is that host: never forwardauth's
    own address, and no Location at all when there is no host to trust."""
    client = await make(aiohttp_client, env, tmp_path, FORWARDAUTH_LOGIN_URL="/forwardauth/login")
    own = f"{client.server.host}:{client.server.port}"
    browser = {"Accept": "text/html", "Host": own}
    for headers, code in ((traefik("/x"), 302), (nginx("/x"), 401)):
        response = await client.get("/auth", headers={**browser, **headers}, allow_redirects=False)
        assert response.status == code
        assert response.headers["Location"].startswith(f"http://{APP}/forwardauth/login?rd=http%3A%2F%2F{APP}")
    for headers in (traefik("/x", host=f"{APP}:"), {**nginx("/x"), "X-Original-URL": "http:///x"}):
        response = await client.get("/auth", headers={**browser, **headers}, allow_redirects=False)
        assert response.status == 400 and "Location" not in response.headers
        assert own not in await response.text()


# --- untrusted senders ------------------------------------------------------------------------------


@pytest.mark.parametrize("with_policy", [True, False])
async def test_describing_headers_from_an_untrusted_address_are_a_loud_400(
    aiohttp_client: Any,
    env: dict[str, str],
    tmp_path: Path,
    make_user: MakeUser,
    with_policy: bool,
    refusals: RefusalLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy missing from FORWARDAUTH_TRUSTED_PROXIES: every path rule would be silently off, so
    its descriptions are refused with an error naming the variable and the sender, logged as one
    ERROR line per interval."""
    client = await make(aiohttp_client, env, tmp_path, with_policy, FORWARDAUTH_TRUSTED_PROXIES="10.9.9.9/32")
    token = (await login(client, make_user()))["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    for name in (
        "X-Original-URL",
        "X-Original-URI",
        "X-Original-Method",
        "X-Original-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Prefix",
    ):
        response = await client.get("/auth", headers={**bearer, name: "/x" if "U" in name else "x"})
        assert response.status == 400, name
        message = (await response.json())["error_description"]
        assert "FORWARDAUTH_TRUSTED_PROXIES" in message and "127.0.0.1" in message and name in message
    assert (await client.get("/auth/envoy/x", headers=bearer)).status == 400
    # without describing headers it is a direct check of the token, as before
    assert (await client.get("/auth", headers={**bearer, "X-Forwarded-For": "1.2.3.4"})).status == 200
    lines = [r for r in caplog.records if r.name == "forwardauth.refusals"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "FORWARDAUTH_TRUSTED_PROXIES" in lines[0].getMessage()


async def test_the_memo_never_answers_for_a_different_description(
    aiohttp_client: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """X-Original-Host and X-Forwarded-Prefix are part of the memo key: a request that differs only
    there is judged (and refused) afresh, not given the earlier answer."""
    strict = await make(aiohttp_client, env, tmp_path)
    assert await status(strict, nginx("/public/x")) == 200
    assert await status(strict, nginx("/public/x", routed=SECRET)) == 400
    untrusted = await make(aiohttp_client, env, tmp_path, FORWARDAUTH_TRUSTED_PROXIES="10.9.9.9/32")
    assert await status(untrusted, {"Host": APP}) == 401
    assert await status(untrusted, {"Host": APP, "X-Forwarded-Prefix": "/forwardauth"}) == 400


# --- the refresh cookie never reaches an app ---------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_request_for_an_app_carrying_the_refresh_cookie_is_refused(
    strict: Client, make_user: MakeUser, family: str
) -> None:
    """``/forwardauth/..%2Fx`` matches the cookie's Path in the browser, and nginx hands it to the
    app: whatever the path, a request for an app never gets the 14-day refresh token through."""
    access = (await tokens(strict, make_user))["user"]
    describe = FAMILIES[family]
    for cookie in (
        "forwardauth_refresh=abc",
        f"forwardauth={access}; forwardauth_refresh=abc",
        "a=1;forwardauth_refresh = abc ; b=2",
    ):
        for path in ("/public/x", "/x", "/forwardauth/x"):
            assert await status(strict, {**describe(path), "Cookie": cookie}) == 400, (cookie, path)
    # lookalike names are not ours; the access cookie alone passes
    for cookie in (f"forwardauth={access}", f"forwardauth={access}; forwardauth_refresh2=x; xforwardauth_refresh=y"):
        assert await status(strict, {**describe("/x"), "Cookie": cookie}) == 200, cookie
    # /auth asked directly (no description) is forwardauth's own path: not refused
    assert await status(strict, {"Cookie": f"forwardauth={access}; forwardauth_refresh=abc"}) == 200


async def test_the_refresh_cookie_is_refused_without_a_policy_too(client: Client, make_user: MakeUser) -> None:
    access = (await login(client, make_user()))["access_token"]
    headers = {**traefik("/x"), "Cookie": f"forwardauth={access}; forwardauth_refresh=abc"}
    assert await status(client, headers) == 400
    assert await raw_status(client, "/auth/envoy/x", extra="Cookie: forwardauth_refresh=abc\r\n") == 400


# --- pure parts -------------------------------------------------------------------------------------------


def test_refresh_cookie_sent() -> None:
    name = "forwardauth_refresh"
    assert refresh_cookie_sent(["forwardauth_refresh=x"], name)
    assert refresh_cookie_sent(["a=1", "b=2; forwardauth_refresh=; c=3"], name)  # HTTP/2 splits the list
    assert refresh_cookie_sent(["a=1;forwardauth_refresh"], name)
    assert not refresh_cookie_sent(["forwardauth_refresh2=x; xforwardauth_refresh=y", "a=forwardauth_refresh"], name)
    assert not refresh_cookie_sent([], name)


def test_refusals_are_logged_once_per_interval_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    from forwardauth.core.forwarding import UntrustedSender
    from forwardauth.core.paths import AmbiguousPath
    from forwardauth.core.proxyheaders import BadDescription

    log = RefusalLog(interval=3600)
    caplog.set_level(logging.WARNING, "forwardauth.refusals")
    reported = [log.report(AmbiguousPath("a"), "203.0.113.1") for _ in range(5)]
    reported += [log.report(UntrustedSender("u"), "203.0.113.1"), log.report(BadDescription("b"), None)]
    assert reported == [True, False, False, False, False, True, True]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR, logging.WARNING]
    assert "1 such refusal(s)" in caplog.records[0].getMessage()
    # the next report, an interval later, counts the ones it stands for
    short = RefusalLog(interval=0.2)
    assert short.report(AmbiguousPath("a"), None)
    wait_until(lambda: short.report(AmbiguousPath("a"), None), timeout=10, what="the next report")
    counted = int(caplog.records[-1].getMessage().rsplit("; ", 1)[1].split()[0])
    assert counted >= 2
