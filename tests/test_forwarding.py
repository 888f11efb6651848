"""Reading the original request from nginx, Traefik/Caddy and Envoy subrequests (pure).

Nothing is guessed: a value that does not parse, a missing one the protocol needs, two that
disagree, or describing headers from an untrusted sender are refused (a 400 on /auth), never
replaced by another header, ``localhost`` or our own address.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardauth.configparse import parse_networks
from forwardauth.core import hosts
from forwardauth.core.forwarding import (
    Source,
    UntrustedSender,
    address_in,
    client_address,
    original_request,
    path_prefix,
    public_origin,
)
from forwardauth.core.proxyheaders import DESCRIBING, AmbiguousRequest, BadDescription
from forwardauth.core.refusals import Refused

TRUSTED = parse_networks("127.0.0.0/8,10.0.0.0/8")
NGINX = {
    "Host": "www.example.test",
    "X-Original-URL": "https://www.example.test/a?b=1",
    "X-Original-URI": "/a?b=1",
    "X-Original-Method": "GET",
    "X-Original-Host": "www.example.test",
    "X-Forwarded-Proto": "https",
}
TRAEFIK = {
    "Host": "fa:8080",
    "X-Forwarded-Method": "GET",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "www.example.test",
    "X-Forwarded-Uri": "/a?b=1",
}


def describe(
    headers: dict[str, str],
    remote: str | None = "127.0.0.1",
    target: str = "/auth",
    envoy: bool = False,
    method: str = "GET",
) -> tuple[Source, str, str, str, str]:
    request = original_request(method, target, headers, remote, TRUSTED, "/auth/envoy" if envoy else None)
    return request.source, request.method, request.scheme, request.host, request.uri


def test_nginx_headers_from_a_trusted_proxy() -> None:
    request = original_request(
        "GET",
        "/auth",
        {
            "Host": "auth.internal",
            "X-Original-URL": "https://App.Example.com/a/b?x=1",
            "X-Original-URI": "/a/b?x=1",
            "X-Original-Method": "POST",
            "X-Original-Host": "app.example.com",
            "X-Forwarded-For": "203.0.113.9",
        },
        "127.0.0.1",
        TRUSTED,
    )
    assert request.source is Source.NGINX
    assert (request.method, request.scheme, request.host, request.uri) == (
        "POST",
        "https",
        "app.example.com",
        "/a/b?x=1",
    )
    assert request.url == "https://app.example.com/a/b?x=1"
    assert request.client_ip == "203.0.113.9"


def test_traefik_and_caddy_headers() -> None:
    request = original_request(
        "GET",
        "/auth",
        {
            "Host": "fa:8080",
            "X-Forwarded-Method": "DELETE",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "app.example.com",
            "X-Forwarded-Uri": "/admin?y=2",
            "X-Forwarded-For": "198.51.100.7, 10.0.0.5",
        },
        "10.0.0.2",
        TRUSTED,
    )
    assert request.source is Source.FORWARDED
    assert request.url == "https://app.example.com/admin?y=2" and request.method == "DELETE"
    assert request.client_ip == "198.51.100.7"


def test_envoy_keeps_method_and_path_under_the_prefix() -> None:
    request = original_request(
        "PUT",
        "/auth/envoy/api/items?id=3",
        {"Host": "app.example.com", "X-Forwarded-Proto": "https"},
        "127.0.0.1",
        TRUSTED,
        envoy_prefix="/auth/envoy",
    )
    assert request.source is Source.ENVOY
    assert (request.method, request.uri, request.url) == (
        "PUT",
        "/api/items?id=3",
        "https://app.example.com/api/items?id=3",
    )


def test_traefik_websocket_requests_are_http() -> None:
    """Traefik says ``X-Forwarded-Proto: ws``/``wss`` for a WebSocket upgrade: the same origin as http(s)."""
    assert describe({**TRAEFIK, "X-Forwarded-Proto": "wss"})[2] == "https"
    assert describe({**TRAEFIK, "X-Forwarded-Proto": "WS"})[2] == "http"


def test_no_describing_headers_judge_the_request_itself() -> None:
    assert describe({"Host": "auth.example.com"}) == (Source.DIRECT, "GET", "http", "auth.example.com", "/auth")
    assert describe({"Host": "auth.example.com"}, remote="203.0.113.50", target="/auth?x=1") == (
        Source.DIRECT,
        "GET",
        "http",
        "auth.example.com",
        "/auth?x=1",
    )


# --- untrusted senders: loud, never silently ignored ---------------------------------------------


@pytest.mark.parametrize("remote", ["203.0.113.50", None, "not-an-ip"])
@pytest.mark.parametrize("name", DESCRIBING)
def test_describing_headers_from_untrusted_senders_are_refused(remote: str | None, name: str) -> None:
    """A proxy left out of FORWARDAUTH_TRUSTED_PROXIES would have its description ignored and every
    path rule off: refused with an error that names the variable and the sender."""
    with pytest.raises(UntrustedSender) as refused:
        original_request("GET", "/auth", {"Host": "auth.example.com", name: "x"}, remote, TRUSTED)
    message = str(refused.value)
    assert "FORWARDAUTH_TRUSTED_PROXIES" in message and (remote or "an unknown address") in message
    assert name in message


def test_the_envoy_route_from_an_untrusted_sender_is_refused() -> None:
    with pytest.raises(UntrustedSender, match="FORWARDAUTH_TRUSTED_PROXIES"):
        original_request("GET", "/auth/envoy/x", {"Host": "app.example.com"}, "203.0.113.5", TRUSTED, "/auth/envoy")


def test_untrusted_senders_without_describing_headers_are_judged_directly() -> None:
    """X-Forwarded-For and X-Real-IP are not descriptions (a CDN adds them): the client is the sender."""
    request = original_request(
        "GET",
        "/auth",
        {"Host": "auth.example.com", "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4", "X-Original-URL": ""},
        "203.0.113.50",
        TRUSTED,
    )
    assert request.source is Source.DIRECT and request.client_ip == "203.0.113.50"


# --- hosts: parsed strictly, never a fallback -------------------------------------------------------

BAD_HOSTS = [
    "secret.example.test:",
    "secret.example.test:80x",
    ":80",
    "a b",
    "%",
    "secret%2eexample.test",
    "user@secret.example.test",
    "secret.example.test:0",
    "secret.example.test:65536",
    "[::1",
    "[zz::1]",
    "a..b",
    ".a.b",
    "-a.b",
    "a.b/x",
    "a.b?x",
    "a.b#x",
    "a,b",
    "secret.example.test, www.example.test",
    "[::1]:",
    "x" * 254,
    "a\tb",
    "ä.example",
]


@pytest.mark.parametrize("value", BAD_HOSTS)
def test_unparsable_hosts_are_no_hosts(value: str) -> None:
    assert hosts.parse(value) is None


@pytest.mark.parametrize(
    "value,name",
    [
        ("Secret.Example.Test", "secret.example.test"),
        ("secret.example.test.", "secret.example.test"),  # a trailing dot: the same vhost
        ("SECRET.example.test.:8443", "secret.example.test"),
        ("[::1]:8080", "[::1]"),
        ("[0:0::1]", "[::1]"),
        ("a_b.example:443", "a_b.example"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_hosts_and_their_names(value: str, name: str) -> None:
    parsed = hosts.parse(value)
    assert parsed == value.lower() and hosts.name_of(parsed) == name


@pytest.mark.parametrize("value", BAD_HOSTS)
@pytest.mark.parametrize(
    "protocol,header",
    [
        ("nginx", "X-Original-URL"),
        ("nginx", "X-Original-Host"),
        ("traefik", "X-Forwarded-Host"),
        ("direct", "Host"),
        ("envoy", "Host"),
    ],
)
def test_a_bad_host_is_refused_in_every_protocol(value: str, protocol: str, header: str) -> None:
    headers = {"nginx": NGINX, "traefik": TRAEFIK}.get(protocol, {"Host": "www.example.test"}).copy()
    headers[header] = f"http://{value}/a?b=1" if header == "X-Original-URL" else value
    if header == "X-Original-URL":
        headers.pop("X-Original-Host")
    with pytest.raises(BadDescription):
        describe(headers, envoy=protocol == "envoy", target="/auth/envoy/x" if protocol == "envoy" else "/auth")


@pytest.mark.parametrize(
    "protocol,missing",
    [
        ("nginx", ("X-Original-URL", "X-Original-Host")),
        ("nginx", ("X-Original-Method",)),
        ("traefik", ("X-Forwarded-Host",)),
        ("traefik", ("X-Forwarded-Uri",)),
        ("traefik", ("X-Forwarded-Method",)),
        ("direct", ("Host",)),
        ("envoy", ("Host",)),
    ],
)
def test_a_missing_header_the_protocol_needs_is_refused(protocol: str, missing: tuple[str, ...]) -> None:
    """Never the proxy's own Host (forwardauth's address, behind Traefik) in place of X-Forwarded-Host."""
    headers = {"nginx": NGINX, "traefik": TRAEFIK}.get(protocol, {"Host": "www.example.test"}).copy()
    for name in missing:
        headers.pop(name)
    with pytest.raises(BadDescription, match="missing"):
        describe(headers, envoy=protocol == "envoy", target="/auth/envoy/x" if protocol == "envoy" else "/auth")


def test_nginx_judges_the_routed_host_and_refuses_an_absolute_form_mismatch() -> None:
    """``GET http://secret.example.test/x`` with ``Host: www.example.test``: nginx routes to the
    secret vhost ($host) while $http_host says www. Two readings: refused."""
    mismatch = {
        **NGINX,
        "X-Original-URL": "http://www.example.test/x",
        "X-Original-URI": "/x",
        "X-Original-Host": "secret.example.test",
    }
    with pytest.raises(AmbiguousRequest, match="absolute-form"):
        describe(mismatch)
    # the same host in other spellings is one host: port, case, trailing dot
    for url_host, routed in (
        ("www.example.test:8080", "www.example.test"),
        ("WWW.example.test", "www.example.test"),
        ("www.example.test.", "www.example.test"),
    ):
        same = {**NGINX, "X-Original-URL": f"http://{url_host}/x", "X-Original-URI": "/x", "X-Original-Host": routed}
        assert describe(same)[3] == url_host.lower()
    # the routed host alone names the host
    routed_only = {k: v for k, v in NGINX.items() if k != "X-Original-URL"}
    assert describe(routed_only) == (Source.NGINX, "GET", "https", "www.example.test", "/a?b=1")


def test_nginx_ignores_a_client_sent_x_forwarded_host() -> None:
    assert describe({**NGINX, "X-Forwarded-Host": "evil.test"})[3] == "www.example.test"


@pytest.mark.parametrize(
    "headers,error",
    [
        ({**NGINX, "X-Original-URI": "/other"}, AmbiguousRequest),  # the URL's path is another
        ({**NGINX, "X-Original-URL": "https://www.example.test"}, BadDescription),  # no path
        ({**NGINX, "X-Original-URL": "//www.example.test/a?b=1"}, BadDescription),
        ({**NGINX, "X-Original-URL": "ftp://www.example.test/a?b=1"}, BadDescription),
        ({**NGINX, "X-Original-URL": "https://www.example.test?x/a?b=1"}, BadDescription),
        ({**NGINX, "X-Original-Method": "get"}, BadDescription),  # not every backend reads "get" as GET
        ({**NGINX, "X-Original-Method": "G ET"}, BadDescription),
        ({**NGINX, "X-Forwarded-Uri": "/admin"}, AmbiguousRequest),  # two protocols at once
        ({**TRAEFIK, "X-Original-URI": "/public"}, AmbiguousRequest),
        ({**TRAEFIK, "X-Forwarded-Uri": "admin"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Uri": "http://www.example.test/admin"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Uri": "/a b"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Uri": "/a\r\nX-Injected: 1"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Uri": "/" + "a" * 9000}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Method": "post"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Proto": "javascript"}, BadDescription),
        ({**TRAEFIK, "X-Forwarded-Host": "www.example.test:"}, BadDescription),
    ],
)
def test_malformed_descriptions_are_refused_not_defaulted(headers: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        describe(headers)


def test_envoy_requests_outside_the_prefix_as_sent_are_refused() -> None:
    """aiohttp routes the decoded path: /auth/%65nvoy/x reaches the route, but is not the prefix as sent."""
    with pytest.raises(BadDescription):
        describe({"Host": "app.example.com"}, envoy=True, target="/auth/%65nvoy/x")
    with pytest.raises(BadDescription):
        describe({"Host": "app.example.com"}, envoy=True, target="/auth/envoy")


@pytest.mark.parametrize(
    "forwarded_for,expected",
    [
        ("198.51.100.7", "198.51.100.7"),
        ("1.1.1.1, 198.51.100.7", "198.51.100.7"),  # the client wrote 1.1.1.1; our proxy added the rest
        ("198.51.100.7, 10.0.0.9, 127.0.0.1", "198.51.100.7"),
        ("10.0.0.9", "10.0.0.9"),
        ("garbage, 10.0.0.1", None),
        ("", "127.0.0.1"),
    ],
)
def test_client_address_is_the_last_untrusted_hop(forwarded_for: str, expected: str | None) -> None:
    assert client_address(forwarded_for, "127.0.0.1", TRUSTED) == expected


@pytest.mark.parametrize(
    "scheme,headers,remote,origin",
    [
        ("http", {"Host": "auth.example.com"}, "203.0.113.5", "http://auth.example.com"),
        ("http", {"Host": "Auth.Example.com:80"}, "203.0.113.5", "http://auth.example.com"),
        ("https", {"Host": "auth.example.com:8443"}, "203.0.113.5", "https://auth.example.com:8443"),
        # behind a trusted proxy: the host and scheme the browser used
        (
            "http",
            {"Host": "fa:8080", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Proto": "https"},
            "127.0.0.1",
            "https://app.example.com",
        ),
        (
            "http",
            {"Host": "fa:8080", "X-Forwarded-Host": "app.example.com:443", "X-Forwarded-Proto": "https"},
            "127.0.0.1",
            "https://app.example.com",
        ),
        # from anyone else those headers are not believed
        (
            "http",
            {"Host": "fa:8080", "X-Forwarded-Host": "evil.test", "X-Forwarded-Proto": "https"},
            "203.0.113.5",
            "http://fa:8080",
        ),
        # nonsense is not an origin, and nothing else takes its place (not the proxy's own Host)
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "a b"}, "127.0.0.1", None),
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "app.example.com:"}, "127.0.0.1", None),
        ("http", {"Host": "fa:8080", "X-Forwarded-Proto": "gopher"}, "127.0.0.1", None),
        ("http", {"Host": "evil.test/x@y"}, "203.0.113.5", None),
        ("http", {"Host": "app.example.com:"}, "203.0.113.5", None),
        ("http", {}, "203.0.113.5", None),
    ],
)
def test_public_origin(scheme: str, headers: dict[str, str], remote: str, origin: str | None) -> None:
    assert public_origin(scheme, headers, remote, TRUSTED) == origin


# --- properties: whatever the headers, a refusal or safe values ------------------------------------

HEADER_NAMES = ["Host", "X-Forwarded-For", "X-Real-IP", *DESCRIBING]
HEADER_VALUES = st.text(max_size=40) | st.sampled_from(
    [
        "https",
        "http",
        "GET",
        "delete",
        "/admin?x=1",
        "//evil.test/",
        "app.example.com",
        "app.example.com:8443",
        "app.example.com:",
        "[::1]:80",
        "https://app.example.com/a",
        "javascript:alert(1)",
        "10.0.0.1, 203.0.113.9",
        "/forwardauth",
        "/a\r\nX: 1",
        "a b",
        "../..",
        "",
    ]
)
HEADERS = st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=6)
REMOTES = st.sampled_from(["127.0.0.1", "10.1.2.3", "203.0.113.7", "::1", "not-an-ip", None])
PROPERTY = settings(max_examples=300, deadline=None)
SAFE_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:\d{1,5})?$")


@PROPERTY
@given(st.text(max_size=10), st.text(max_size=40), HEADERS, REMOTES, st.booleans())
def test_original_request_is_a_refusal_or_safe_to_use(
    method: str, target: str, headers: dict[str, str], remote: str | None, envoy: bool
) -> None:
    trusted = address_in(remote, TRUSTED)
    described = any(headers.get(name) for name in DESCRIBING)
    try:
        request = original_request(method, target, headers, remote, TRUSTED, "/auth/envoy" if envoy else None)
    except UntrustedSender:
        assert not trusted and (envoy or described)
        return
    except Refused:
        assert trusted or not described  # an untrusted description is refused as such first
        return
    assert trusted or not (envoy or described)
    assert request.scheme in ("http", "https")
    assert SAFE_HOST.match(request.host) and hosts.parse(request.host) == request.host, request.host
    assert re.fullmatch(r"/[\x21-\x7e]*", request.uri) and len(request.uri) <= 8192, request.uri
    assert re.fullmatch(r"[A-Z][A-Z_-]*", request.method)
    if not trusted:  # nothing the sender wrote about the request is believed
        assert request.source is Source.DIRECT and request.uri == target and request.client_ip == remote
        assert request.host == headers["Host"].lower()


@PROPERTY
@given(
    st.lists(
        st.sampled_from(["203.0.113.9", "198.51.100.1", "10.0.0.5", "127.0.0.1", "::1", "junk", " "]), max_size=5
    ).map(", ".join)
    | st.text(max_size=30),
    REMOTES,
)
def test_client_address_is_a_hop_the_remote_or_unknown(forwarded_for: str, remote: str | None) -> None:
    client = client_address(forwarded_for, remote, TRUSTED)
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    assert client is None or client == remote or client in hops
    if client in hops and not all(address_in(h, TRUSTED) for h in hops):
        assert not address_in(client, TRUSTED)  # never one of our own proxies while a client is named


@PROPERTY
@given(HEADERS, REMOTES)
def test_the_path_prefix_is_a_clean_path_or_nothing(headers: dict[str, str], remote: str | None) -> None:
    prefix = path_prefix(headers, remote, TRUSTED)
    assert prefix == "" or (re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", prefix) and address_in(remote, TRUSTED))


@PROPERTY
@given(st.sampled_from(["http", "https", "HTTP", "ftp"]), HEADERS, REMOTES)
def test_the_public_origin_is_an_origin_or_nothing(scheme: str, headers: dict[str, str], remote: str | None) -> None:
    origin = public_origin(scheme, headers, remote, TRUSTED)
    if origin is not None:
        parts = urlsplit(origin)
        assert parts.scheme in ("http", "https") and parts.path == "" and "@" not in parts.netloc
        assert SAFE_HOST.match(parts.netloc), origin
        assert parts.port != {"http": 80, "https": 443}[parts.scheme], origin  # left out, as in browsers' Origin
        given_host = headers.get("X-Forwarded-Host") if address_in(remote, TRUSTED) else None
        assert hosts.name_of(parts.netloc) == hosts.name_of(given_host or headers["Host"])  # no other host


@PROPERTY
@given(st.text(max_size=30))
def test_a_parsed_host_is_clean(value: str) -> None:
    parsed = hosts.parse(value)
    if parsed is not None:
        assert SAFE_HOST.match(parsed) and parsed == value.lower()
        assert hosts.parse(hosts.name_of(parsed)) is not None
