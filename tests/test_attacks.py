"""What a third hostile pass got through after issues 12, 20 and 21, each now refused or judged strictly.

- A describing header given twice (a proxy that *adds* its value puts the client's first), and
  ``X-Forwarded-For`` sent as several lines (HAProxy adds one per hop): the first line alone was
  read, so a client chose its own address for ``networks`` rules, or the path judged. The memo
  keyed on first values too, so a duplicate found the answer of the request that had it once.
- A path of 8000 dots cost half a second of the event loop per request, without a token; an
  NTFS stream (``/admin::$INDEX_ALLOCATION/x``) was not read as its file as trailing dots were.
- ``::ffff:a.b.c.d`` (a dual-stack proxy's spelling of an IPv4 client), a hop with a port, or one
  that does not parse (an unknown client, in no network) escaped ``networks`` rules that deny.
- ``methods`` rules bypassed by the method a backend actually serves: HEAD (served by GET
  handlers) under a GET-only rule; ``X-HTTP-Method-Override`` / ``X-HTTP-Method`` /
  ``X-Method-Override`` and ``_method`` in the query, which Symfony, Laravel, Rails, Express and
  others honour.
- A ``host`` rule naming a port applied to every port; one in Unicode never matched the punycode
  name browsers send, so it was silently no rule.
- A device cookie planted in a victim's browser (any sibling subdomain can set one) became known
  for the victim when they signed in, sparing its planter the per-username login limit.
- An IPv6 client rotating addresses within its /64 had fresh login limits at each address.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from forwardauth import config
from forwardauth.core.forwarding import address_in, client_address
from forwardauth.core.policy import PolicyError
from forwardauth.core.policyfile import from_data
from forwardauth.http.app import create_app
from forwardauth.stores import users

from . import rawhttp
from .support import PASSWORD, AppServer, Caller
from .test_auth_boundary import APP, nginx, traefik
from .test_regulation import attempt_from, from_address
from .test_web import login

Client = Any
MakeUser = Callable[..., users.User]
FAMILIES = {"nginx": nginx, "traefik": traefik}
POLICY = """
default: authenticated
rules:
  - path: /public
    policy: bypass
  - path: /healthz
    methods: [GET, HEAD]
    policy: bypass
  - networks: [198.51.100.0/24]
    policy: deny
  - path: /internal
    networks: [10.0.0.0/8]
    policy: bypass
  - path: /items
    methods: [DELETE, PUT]
    roles: [admin]
  - path: /report
    methods: [GET]
    roles: [admin]
"""


@pytest.fixture
async def app(aiohttp_client: Any, env: dict[str, str], tmp_path: Path) -> Client:
    policy = tmp_path / "attacks.yml"
    policy.write_text(POLICY)
    settings = config.load({**env, "FORWARDAUTH_POLICY_FILE": str(policy)})
    return await aiohttp_client(AppServer(create_app(settings)))


async def tokens(client: Client, make_user: MakeUser) -> dict[str, str | None]:
    return {
        "none": None,
        "user": (await login(client, make_user(roles=("user",))))["access_token"],
        "admin": (await login(client, make_user(roles=("admin",))))["access_token"],
    }


async def status(client: Client, headers: list[tuple[str, str]] | dict[str, str], token: str | None = None) -> int:
    """/auth's answer to these headers, each line sent as given (duplicates kept)."""
    sent = CIMultiDict(list(headers.items()) if isinstance(headers, dict) else headers)
    if token:
        sent.add("Authorization", f"Bearer {token}")
    response = await client.get("/auth", headers=sent, allow_redirects=False)
    assert response.status < 500, await response.text()
    return int(response.status)


def lines(headers: dict[str, str], **replace: list[str]) -> list[tuple[str, str]]:
    """``headers`` as lines, with the named ones (``X_Forwarded_Uri=[...]``) given once per value."""
    names = {name.replace("_", "-").lower(): values for name, values in replace.items()}
    out = [(k, v) for k, v in headers.items() if k.lower() not in names]
    for name, values in replace.items():
        out += [(name.replace("_", "-"), value) for value in values]
    return out


# --- a header given twice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,header,values",
    [
        ("traefik", "X_Forwarded_Uri", ["/public/x", "/items"]),
        ("traefik", "X_Forwarded_Host", [APP, "secret.example.test"]),
        ("traefik", "X_Forwarded_Method", ["GET", "DELETE"]),
        ("traefik", "X_Forwarded_Proto", ["http", "https"]),
        ("nginx", "X_Original_URI", ["/public/x", "/items"]),
        ("nginx", "X_Original_Host", [APP, "secret.example.test"]),
        ("nginx", "X_Original_Method", ["GET", "DELETE"]),
        ("nginx", "X_Original_URL", [f"http://{APP}/public/x", f"http://{APP}/items"]),
        ("nginx", "X_Real_IP", ["10.1.1.1", "203.0.113.9"]),
        ("traefik", "X_HTTP_Method_Override", ["GET", "DELETE"]),
    ],
)
async def test_a_describing_header_given_twice_is_refused(
    app: Client, family: str, header: str, values: list[str]
) -> None:
    """Whichever line the proxy meant, the first may be the client's: 400, also when the memo
    already holds the answer for the same request with the header once."""
    single = FAMILIES[family]("/public/x")
    if header == "X_Real_IP":
        single.pop("X-Forwarded-For")
    assert await status(app, lines(single, **{header: values[:1]})) == 200  # remembered
    assert await status(app, lines(single, **{header: values})) == 400
    assert await status(app, lines(single, **{header: values[::-1]})) == 400


async def test_two_host_headers_are_refused(app: Client) -> None:
    reader, writer = await asyncio.open_connection(app.server.host, app.server.port)
    writer.write(
        f"GET /auth HTTP/1.1\r\nHost: {APP}\r\nHost: secret.example.test\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    answer = rawhttp.parse(await reader.read())
    writer.close()
    assert answer.status == 400


async def test_x_forwarded_for_lines_are_one_list(app: Client, make_user: MakeUser) -> None:
    """HAProxy's ``option forwardfor`` adds a line after the client's own: the client is the last
    hop, never what the client wrote in the first line (``networks`` rules, and the memo)."""
    given = await tokens(app, make_user)
    internal = nginx("/internal")
    assert await status(app, {**internal, "X-Forwarded-For": "10.1.1.1"}) == 200  # a real internal client
    spoofed = lines(internal, X_Forwarded_For=["10.1.1.1", "203.0.113.9"])
    assert await status(app, spoofed) == 401
    denied = lines(nginx("/x"), X_Forwarded_For=["10.1.1.1", "198.51.100.7"])
    assert await status(app, denied, given["user"]) == 403
    assert await status(app, lines(nginx("/x"), X_Forwarded_For=["198.51.100.7", "10.1.1.1"]), given["user"]) == 200


# --- IPv4-mapped IPv6 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_an_ipv4_mapped_address_is_the_ipv4_address(app: Client, make_user: MakeUser, family: str) -> None:
    given = await tokens(app, make_user)
    for spelling in ("::ffff:198.51.100.7", "::FFFF:c633:6407", "0:0:0:0:0:ffff:198.51.100.7"):
        assert await status(app, {**FAMILIES[family]("/x"), "X-Forwarded-For": spelling}, given["user"]) == 403
    assert await status(app, {**FAMILIES[family]("/internal"), "X-Forwarded-For": "::ffff:10.1.1.1"}) == 200


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_client_address_with_a_port_or_unreadable(app: Client, make_user: MakeUser, family: str) -> None:
    """Some proxies write the client's port (``203.0.113.9:51234``): that is the address. A hop that
    does not parse at all leaves the client unknown, and an unknown client was in no network, so a
    ``networks`` rule that denies was skipped: it is now judged both in every network and in none."""
    given = await tokens(app, make_user)
    describe = FAMILIES[family]
    for hop in ("198.51.100.7:51234", "[::ffff:198.51.100.7]:443", "garbage", "198.51.100.7, not-an-address"):
        assert await status(app, {**describe("/x"), "X-Forwarded-For": hop}, given["user"]) == 403, hop
    assert await status(app, {**describe("/internal"), "X-Forwarded-For": "10.1.1.1:5555"}) == 200
    assert await status(app, {**describe("/internal"), "X-Forwarded-For": "garbage"}) == 403  # maybe 198.51.100.x
    assert await status(app, {**describe("/x"), "X-Forwarded-For": "203.0.113.9:80"}, given["user"]) == 200


def test_mapped_addresses_in_rules_and_hops() -> None:
    from forwardauth.configparse import parse_networks

    trusted = parse_networks("127.0.0.0/8")
    assert address_in("::ffff:127.0.0.1", trusted) and address_in("::ffff:7f00:1", trusted)
    assert not address_in("::ffff:128.0.0.1", trusted) and not address_in("::127.0.0.1", trusted)
    assert client_address("::ffff:203.0.113.9, ::ffff:127.0.0.1", "127.0.0.1", trusted) == "203.0.113.9"


# --- methods the backend may serve the request as -------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "method,path,extra",
    [
        ("HEAD", "/report", {}),  # GET handlers serve HEAD
        ("JEFF", "/report", {}),  # and handlers that never look at the method, any method
        ("POST", "/report", {"X-HTTP-Method-Override": "JEFF"}),
        ("POST", "/items", {"X-HTTP-Method-Override": "DELETE"}),
        ("POST", "/items", {"X-HTTP-Method-Override": "delete"}),
        ("POST", "/items", {"X-HTTP-Method": "PUT"}),
        ("GET", "/items", {"X-Method-Override": "DELETE"}),
        ("POST", "/items?_method=DELETE", {}),
        ("POST", "/items?a=1&%5Fmethod=put", {}),
        ("POST", "/report", {"X-HTTP-Method-Override": "HEAD"}),
    ],
)
async def test_a_methods_rule_holds_for_the_method_the_backend_serves(
    app: Client, make_user: MakeUser, family: str, method: str, path: str, extra: dict[str, str]
) -> None:
    given = await tokens(app, make_user)
    plain = FAMILIES[family](path.split("?")[0], method="GET" if method in ("HEAD", "JEFF") else "POST")
    assert await status(app, plain, given["user"]) == (403 if method in ("HEAD", "JEFF") else 200)  # remembered
    described = {**FAMILIES[family](path, method=method), **extra}
    got = [await status(app, described, given[who]) for who in ("none", "user", "admin")]
    assert got == [401, 403, 200]


@pytest.mark.parametrize("family", FAMILIES)
async def test_an_override_never_makes_a_request_public_and_garbage_is_refused(app: Client, family: str) -> None:
    describe = FAMILIES[family]
    assert await status(app, describe("/healthz")) == 200
    assert await status(app, describe("/healthz", method="HEAD")) == 200
    assert await status(app, {**describe("/healthz"), "X-HTTP-Method-Override": "DELETE"}) == 401
    assert await status(app, describe("/healthz?_method=POST")) == 401
    assert await status(app, {**describe("/healthz", method="POST"), "X-HTTP-Method-Override": "GET"}) == 401
    assert await status(app, {**describe("/x"), "X-HTTP-Method-Override": "DEL ETE"}) == 400
    assert await status(app, describe("/x?_method=%00")) == 400


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/report::$DATA",
        "/report::$INDEX_ALLOCATION/x",
        "/report:$I30:$INDEX_ALLOCATION",
        "/Report:x",
        "/report%3a%3a$DATA",
        "/report.::$DATA",
    ],
)
async def test_an_ntfs_stream_is_read_as_its_file(app: Client, make_user: MakeUser, path: str) -> None:
    """Windows serves ``/report::$DATA`` as ``/report`` (and a folder's ``::$INDEX_ALLOCATION``
    as the folder), as it drops trailing dots: judged as that reading too."""
    given = await tokens(app, make_user)
    assert [await status(app, traefik(path), given[who]) for who in ("none", "user", "admin")] == [401, 403, 200]


def test_the_readings_of_a_long_path_take_linear_time() -> None:
    """A run of 8000 dots (or dots and spaces) took the trailing-dots reading half a second of the
    event loop, on every memo miss and without a token: a few requests a second froze a worker."""
    from forwardauth.core import paths

    for path in ("/a" + "." * 8000 + "x", "/a" + ". " * 4000 + "x", "/a" + "%20." * 2000 + "x", "/" + "a:" * 4000):
        started = time.perf_counter()
        paths.readings(path, True)
        assert time.perf_counter() - started < 0.05, path[:20]


# --- host rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,error",
    [
        ("app.example.test:8443", "port"),
        ("*.example.test:80", "port"),
        ("[::1]:8080", "port"),
        ("::1", "port"),
        ("bücher.example.test", "punycode"),
        ("*.bücher.example.test", "punycode"),
        ("app.example.test/", "not a host name"),
        ("app..example.test", "not a host name"),
    ],
)
def test_a_host_rule_that_could_never_match_as_meant_is_an_error(host: str, error: str) -> None:
    """A port in a rule applied to every port; a Unicode name never matched the punycode browsers
    send, so a deny or restricted rule on it was silently no rule at all."""
    with pytest.raises(PolicyError, match=error):
        from_data({"rules": [{"host": host, "policy": "deny"}]}, "policy.yml")
    for good in ("[::1]", "xn--bcher-kva.example.test", "*.example.test", "App.Example.Test."):
        assert from_data({"rules": [{"host": good, "policy": "deny"}]}, "policy.yml").rules


# --- the device cookie of throttling ---------------------------------------------------------------


@pytest.fixture
async def throttled(aiohttp_client: Any, env: dict[str, str]) -> Client:
    settings = config.load(
        {
            **env,
            "FORWARDAUTH_LOGIN_MAX_FAILURES": "3",
            "FORWARDAUTH_LOGIN_WINDOW": "60",
            "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}dv{secrets.token_hex(3)}:",
        }
    )
    return await aiohttp_client(create_app(settings))


async def test_a_planted_device_cookie_never_becomes_known(throttled: Client, make_user: MakeUser) -> None:
    """A sibling subdomain sets ``forwardauth_device=V`` in the victim's browser; the victim signs
    in. V must not become a known device of the victim's: its planter would be spared the
    username limit while spraying the victim's password from many addresses."""
    user = make_user()
    planted = secrets.token_urlsafe(32)
    form = await throttled.post(
        "/login",
        data={"username": user.username, "password": PASSWORD},
        headers=from_address("203.0.113.30", Cookie=f"forwardauth_device={planted}"),
        allow_redirects=False,
    )
    assert form.status == 303
    issued = form.cookies["forwardauth_device"].value
    assert issued and issued != planted
    throttled.session.cookie_jar.clear()
    for index in range(30):
        assert (await attempt_from(throttled, f"192.0.2.{index + 1}", user.username, "wrong")).status == 401
    as_planter = {"Cookie": f"forwardauth_device={planted}"}
    assert (await attempt_from(throttled, "192.0.2.210", user.username, PASSWORD, **as_planter)).status == 429
    as_victim = {"Cookie": f"forwardauth_device={issued}"}
    assert (await attempt_from(throttled, "192.0.2.211", user.username, PASSWORD, **as_victim)).status == 200


async def test_an_ipv6_client_cannot_dodge_its_limit_by_rotating_addresses(
    throttled: Client, make_user: MakeUser
) -> None:
    """One IPv6 client has a /64 to pick addresses from: counted per address, each of its 2^64
    addresses would have limits of its own, and the address limit (for spraying many usernames)
    would hold nothing."""
    user = make_user()
    statuses = [
        (
            await attempt_from(throttled, f"2001:db8:77:1::{index + 1:x}", f"nobody-{secrets.token_hex(4)}", "wrong")
        ).status
        for index in range(16)
    ]
    assert statuses[:12] == [401] * 12 and set(statuses[12:]) == {429}  # 3 x 4 for the address
    assert (await attempt_from(throttled, "2001:db8:77:1:ffff::1", user.username, PASSWORD)).status == 429
    assert (await attempt_from(throttled, "2001:db8:77:2::1", user.username, PASSWORD)).status == 200  # another /64


# --- through the shipped proxies ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nginx", "traefik", "caddy"])
def test_an_override_reaches_forwardauth_through_every_proxy(
    kind: str, front: Callable[..., str], real_backends: Callable[[str], Any], boundary_callers: dict[str, Caller]
) -> None:
    """``/healthz`` is public for GET and HEAD only (BOUNDARY_POLICY): a GET asking the backend to
    take it as DELETE is not, whatever the proxy (Traefik and Envoy pass only the headers they
    are told to: the shipped configs name the overrides)."""
    url = front(kind, real_backends("echo").addr)
    none = boundary_callers["none"]
    assert rawhttp.send(url, "/healthz", none.headers()).status == 200
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        answer = rawhttp.send(url, "/healthz", none.headers(**{header: "DELETE"}))
        assert answer.status == 401, (header, answer.status, answer.text[:200])
    assert rawhttp.send(url, "/healthz?_method=DELETE", none.headers()).status == 401
