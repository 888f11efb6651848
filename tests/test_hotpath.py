"""``/auth`` answered ahead of the router (forwardauth.http.hotpath) answers exactly as the router's
way does: the same status, body and headers for every request, the same counters, the same
revocations. Each comparison runs two servers from the same settings, the front on (as built)
and off (``AHEAD`` taken off the application before it starts), and sends both the same bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.web_request import BaseRequest

from forwardauth import config
from forwardauth.constants import ENVOY_PREFIX
from forwardauth.http import hotpath
from forwardauth.http.app import create_app
from forwardauth.http.services import SERVICES
from forwardauth.stores import users

from . import rawhttp
from .http import Response
from .support import AppServer
from .test_metrics import parse
from .test_web import login

Client = Any
MakeUser = Callable[..., users.User]
Headers = list[tuple[str, str]]

PATHS = (
    "/auth",
    "/auth?x=1",
    "/%61uth",
    "/auth/",
    "//auth",
    "/AUTH",
    "/auth;x=1",
    "/auth/envoy",
    "/auth/envoy/",
    "/auth/envoy/app/page?q=1",
    "/auth/envoy%2Fapp",
    "/auth/envoyx",
    "/auth/envoy/%2e%2e/admin",
    "/auth/envoy/../admin",
)
# More ways of writing a path that is, or only looks like, the check's.
ODD_PATHS = (
    "/auth#x",
    "/./auth",
    "/auth/envoy?x=1",
    "/auth/envoy//app",
    "/auth/envoy/./app",
    "/auth%2Fenvoy/app",
    "/auth/envoy/%25",
    "/auth/envoy/caf%C3%A9",
    "/auth/envoy/%ff",
    "/auth/envoy/a%20b?c=%2F",
    "/auth%3Fx=1",
    "/auth/envoy%3F",
    "http://app.example.test/auth",
    "http://other.example.test/auth/envoy/app?q=1",
    "*",
)
WITH_BODY = frozenset({"POST", "PUT"})
BODY = b"a=1"
METHODS = ("GET", "HEAD", "POST", "OPTIONS", "PUT")
BROWSER = ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
# How a proxy describes the request it asks about (the test client is 127.0.0.1: trusted by default).
DESCRIPTIONS: dict[str, Headers] = {
    "bare": [],
    "traefik": [
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example.test"),
        ("X-Forwarded-Uri", "/a/page?b=1"),
    ],
    "nginx": [
        ("X-Original-URL", "https://app.example.test/a/page?b=1"),
        ("X-Original-Method", "GET"),
        ("X-Original-Host", "app.example.test"),
    ],
    "ambiguous": [("X-Forwarded-Uri", "/admin"), ("X-Original-URI", "/public")],  # a 400 for browsers
}
# Answers carry these as they are; only the date differs from one answer to the next.
VOLATILE = frozenset({"date"})
COUNTS = ("_total", "_count")  # of the samples of /metrics, those that count (not time) answers


@dataclass
class Side:
    """One server of a pair and the requests its router resolved (the front skips the router)."""

    client: Client
    resolved: list[tuple[str, str]] = field(default_factory=list)  # (path as sent, handler's name)

    @property
    def base(self) -> str:
        return f"http://{self.client.server.host}:{self.client.server.port}"

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[no-any-return]

    async def send(
        self, target: str, headers: rawhttp.Headers = (), method: str = "GET", body: bytes = b""
    ) -> Response:
        """The request as written, on a connection of its own (nothing normalises the path)."""
        return await asyncio.to_thread(rawhttp.send, self.base, target, headers, method, body=body)


@dataclass
class Pair:
    on: Side
    off: Side


def answer(response: Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """What must be the same either way: status, body and every header but the date, in order."""
    headers = [(name.lower(), value) for name, value in response.headers.items() if name.lower() not in VOLATILE]
    return response.status, response.body, headers


def spy_on_router(app: web.Application, seen: list[tuple[str, str]]) -> None:
    """Record each request the application's router resolves (aiohttp's ``_handle`` calls it),
    and the name of the handler it found."""
    resolve = app.router.resolve

    async def resolving(request: web.Request) -> web.UrlMappingMatchInfo:
        found = await resolve(request)
        seen.append((request.raw_path, getattr(found.handler, "__name__", "")))
        return found

    app.router.resolve = resolving  # type: ignore[method-assign]


async def side(aiohttp_client: Any, settings: config.Settings, ahead: bool) -> Side:
    app = create_app(settings)
    if not ahead:
        del app[hotpath.AHEAD]  # the server then hands every request to the application
    made = Side(await aiohttp_client(AppServer(app)))
    own = app._handle  # the application's own request handler
    handler = made.client.server.runner.server.request_handler
    assert (handler != own) if ahead else (handler == own), "the front is not as the test set it"
    spy_on_router(app, made.resolved)
    return made


@pytest.fixture
async def pair(aiohttp_client: Any, settings: config.Settings) -> AsyncIterator[Pair]:
    yield Pair(await side(aiohttp_client, settings, True), await side(aiohttp_client, settings, False))


@dataclass(frozen=True)
class Signed:
    """A signed-in user's access token and refresh token."""

    access: str
    refresh: str


@pytest.fixture
async def signed(pair: Pair, make_user: MakeUser) -> Signed:
    tokens = await login(pair.on.client, make_user())
    pair.on.resolved.clear()  # the login's
    return Signed(tokens["access_token"], tokens["refresh_token"])


def callers(signed: Signed, refresh_cookie: str) -> dict[str, Headers]:
    """Who asks: nobody, the signed-in user, a forger, a leaked refresh cookie, a browser."""
    return {
        "no token": [],
        "valid token": [("Authorization", f"Bearer {signed.access}")],
        "garbage token": [("Authorization", "Bearer not.a.token")],
        "refresh cookie": [("Cookie", f"{refresh_cookie}={signed.refresh}")],
        "browser": [BROWSER],
    }


def battery(path: str, signed: Signed, refresh_cookie: str) -> Iterator[tuple[str, str, Headers]]:
    """(method, what, headers) of every request on ``path``."""
    for method in METHODS:
        for who, credentials in callers(signed, refresh_cookie).items():
            for described, description in DESCRIPTIONS.items():
                yield method, f"{who}, {described}", credentials + description


async def differences(pair: Pair, requests: Iterator[tuple[str, str, Headers]], path: str) -> list[str]:
    """Each request sent to both servers (on first, then off); the ones answered differently."""
    found = []
    for method, what, headers in requests:
        body = BODY if method in WITH_BODY else b""
        on, off = await pair.on.send(path, headers, method, body), await pair.off.send(path, headers, method, body)
        if answer(on) != answer(off):
            found.append(f"{method} {path} ({what}): front {answer(on)!r} != router {answer(off)!r}")
    return found


@pytest.mark.parametrize("path", PATHS + ODD_PATHS)
async def test_the_front_answers_as_the_router(pair: Pair, signed: Signed, path: str) -> None:
    refresh_cookie = pair.on.app[SERVICES].settings.refresh_cookie_name
    assert await differences(pair, battery(path, signed, refresh_cookie), path) == [], (
        "hotpath.front answers differently from the router (see /work/notes/requests.txt)"
    )
    assert pair.off.resolved  # every request the parser let through, via the router
    # the front took exactly what the router gives the check, and the router the rest
    assert pair.on.resolved == [seen for seen in pair.off.resolved if seen[1] != "auth"]


async def test_the_battery_reaches_the_check_through_the_front(pair: Pair, signed: Signed) -> None:
    """Sanity of the battery: through the front, a valid token is allowed and none is refused."""
    bearer = [("Authorization", f"Bearer {signed.access}")]
    for target in ("/auth", "/auth/envoy/app/page?q=1"):
        assert (await pair.on.send(target, bearer)).status == 200
        assert (await pair.on.send(target)).status == 401
    assert pair.on.resolved == []  # none of them went through the router


async def continued(side: Side, target: str, headers: Headers) -> tuple[bytes, Response]:
    """A POST that waits for ``100 Continue`` before its body, as clients with ``Expect`` do: the
    interim answer's first line (empty if none came within a second), then the final answer."""
    head = rawhttp.request_bytes(target, [*headers, ("Content-Length", str(len(BODY)))], "POST")
    reader, writer = await asyncio.open_connection(side.client.server.host, side.client.server.port)
    try:
        writer.write(head)
        try:
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
        except TimeoutError:
            interim = b""
        writer.write(BODY)
        rest = await reader.read()
    finally:
        writer.close()
    if not interim.startswith(b"HTTP/1.1 100 "):  # no interim answer: that was the final one
        interim, rest = b"", interim + rest
    return interim.split(b"\r\n")[0], rawhttp.parse(rest)


@pytest.mark.parametrize("target", ["/auth", "/auth/envoy/app"])
async def test_a_request_with_expect_is_the_applications(pair: Pair, signed: Signed, target: str) -> None:
    """aiohttp answers ``100-continue`` on the router's way: the front leaves such a request to it."""
    headers = [("Authorization", f"Bearer {signed.access}"), ("Expect", "100-continue")]
    (on_interim, on), (off_interim, off) = (
        await continued(pair.on, target, headers),
        await continued(pair.off, target, headers),
    )
    assert on_interim == off_interim == b"HTTP/1.1 100 Continue"
    assert answer(on) == answer(off) and on.status == 200
    assert pair.on.resolved == [(target, "auth")]


# --- metrics ----------------------------------------------------------------------------------------


async def test_auth_is_counted_as_with_the_router(pair: Pair, signed: Signed) -> None:
    """``observe`` counts answers by the handler's name: ``auth`` either way, the same counts."""
    refresh_cookie = pair.on.app[SERVICES].settings.refresh_cookie_name
    requests: list[tuple[str, Headers]] = [
        ("/auth", [("Authorization", f"Bearer {signed.access}")]),
        ("/auth", []),
        ("/auth", [("Authorization", "Bearer x.y.z")]),
        ("/auth/envoy/app", [("Authorization", f"Bearer {signed.access}")]),
        ("/auth/envoy/app", [BROWSER]),
        ("/auth", [BROWSER, *DESCRIPTIONS["traefik"]]),  # to the login page
        ("/auth", [("Cookie", f"{refresh_cookie}=x"), *DESCRIPTIONS["nginx"]]),  # a leak: 400
        ("/auth", [("Authorization", f"Bearer {signed.access}"), ("Expect", "100-continue")]),
    ]
    for target, headers in requests:
        for one in (pair.on, pair.off):
            await one.send(target, headers)
    on, off = (one.app[SERVICES].metrics.totals().counters for one in (pair.on, pair.off))
    assert on.pop(("requests", "login", "200")) == 1  # the sign-in of ``signed``, on this one only
    assert on == off
    assert {k: v for k, v in on.items() if k[:2] == ("requests", "auth")} == {
        ("requests", "auth", "200"): 3,
        ("requests", "auth", "302"): 1,
        ("requests", "auth", "400"): 1,
        ("requests", "auth", "401"): 3,
    }
    scraped = [parse((await one.send("/metrics")).body.decode()) for one in (pair.on, pair.off)]
    auth = [{k: v for k, v in s.items() if ("handler", "auth") in k[1] and k[0].endswith(COUNTS)} for s in scraped]
    assert auth[0] == auth[1] and sum(auth[0].values()) == 2 * 8, auth  # answers, and observations


# --- the front itself ---------------------------------------------------------------------------------


async def _handler(request: BaseRequest) -> web.StreamResponse:
    return web.Response()


async def _check(request: web.Request) -> web.StreamResponse:
    return web.Response()


def test_without_ahead_the_server_gets_the_applications_handler() -> None:
    assert hotpath.front(web.Application(), _handler) is _handler


@pytest.mark.parametrize("routes", [(), ("/auth",), (ENVOY_PREFIX + "{rest:.*}",)])
def test_the_check_must_be_a_route_both_ways(routes: tuple[str, ...]) -> None:
    app = web.Application()
    for route in routes:
        app.router.add_route("*", route, _check)
    hotpath.serve_ahead(app, _check, "/auth", ENVOY_PREFIX)
    with pytest.raises(RuntimeError, match="must be routes to _check"):
        hotpath.routes_of(app, app[hotpath.AHEAD])
    with pytest.raises(RuntimeError):
        hotpath.front(app, _handler)


def test_the_applications_check_routes_are_found(pure_settings: config.Settings) -> None:
    app = create_app(pure_settings)
    exact, under = hotpath.routes_of(app, app[hotpath.AHEAD])
    assert exact.resource is not None and exact.resource.canonical == "/auth"
    assert under.resource is not None and under.resource.canonical.startswith(ENVOY_PREFIX + "{")
    assert exact.handler is under.handler is app[hotpath.AHEAD].handler


def test_the_checks_own_chain_refuses_an_application_with_other_middlewares(pure_settings: config.Settings) -> None:
    """hotpath.checked does what observe and errors do: a third middleware would be skipped on
    /auth unseen, so the server does not start."""

    @web.middleware
    async def extra(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request)

    app = create_app(pure_settings)
    hotpath.checked(app, _check)  # the application as built: accepted
    app.middlewares.append(extra)
    with pytest.raises(RuntimeError, match="observe and errors"):
        hotpath.checked(app, _check)


# --- revocation -----------------------------------------------------------------------------------------


async def test_a_revoked_token_is_refused_at_once_through_the_front(pair: Pair, signed: Signed) -> None:
    bearer = [("Authorization", f"Bearer {signed.access}")]
    assert (await pair.on.send("/auth", bearer)).status == 200  # and remembered as allowed
    assert (await pair.on.send("/auth/envoy/app", bearer)).status == 200
    assert pair.on.resolved == []
    assert (await pair.on.send("/logout", bearer, "POST")).status == 200
    assert (await pair.on.send("/auth", bearer)).status == 401
    assert (await pair.on.send("/auth/envoy/app", bearer)).status == 401
    assert pair.on.resolved == [("/logout", "logout")]  # only the logout took the router's way
