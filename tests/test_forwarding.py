"""Reading the original request from nginx, Traefik/Caddy and Envoy subrequests (pure)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardauth.config import parse_networks
from forwardauth.forwarding import (
    AmbiguousRequest,
    Source,
    address_in,
    client_address,
    original_request,
    path_prefix,
    public_origin,
)

TRUSTED = parse_networks("127.0.0.0/8,10.0.0.0/8")


def test_nginx_headers_from_a_trusted_proxy() -> None:
    request = original_request(
        "GET", "/auth",
        {"Host": "auth.internal", "X-Original-URL": "https://App.Example.com/a/b?x=1",
         "X-Original-URI": "/a/b?x=1", "X-Original-Method": "post", "X-Forwarded-For": "203.0.113.9"},
        "127.0.0.1", TRUSTED,
    )
    assert request.source is Source.NGINX
    assert (request.method, request.scheme, request.host, request.uri) == ("POST", "https", "app.example.com",
                                                                           "/a/b?x=1")
    assert request.url == "https://app.example.com/a/b?x=1"
    assert request.client_ip == "203.0.113.9"


def test_traefik_and_caddy_headers() -> None:
    request = original_request(
        "GET", "/auth",
        {"Host": "fa:8080", "X-Forwarded-Method": "DELETE", "X-Forwarded-Proto": "https",
         "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/admin?y=2",
         "X-Forwarded-For": "198.51.100.7, 10.0.0.5"},
        "10.0.0.2", TRUSTED,
    )
    assert request.source is Source.FORWARDED
    assert request.url == "https://app.example.com/admin?y=2" and request.method == "DELETE"
    assert request.client_ip == "198.51.100.7"


def test_envoy_keeps_method_and_path_under_the_prefix() -> None:
    request = original_request("PUT", "/auth/envoy/api/items?id=3",
                               {"Host": "app.example.com", "X-Forwarded-Proto": "https"},
                               "127.0.0.1", TRUSTED, envoy_prefix="/auth/envoy")
    assert request.source is Source.ENVOY
    assert (request.method, request.uri, request.url) == ("PUT", "/api/items?id=3",
                                                          "https://app.example.com/api/items?id=3")


@pytest.mark.parametrize("remote", ["203.0.113.50", None, "not-an-ip"])
def test_headers_from_untrusted_senders_are_ignored(remote: str | None) -> None:
    request = original_request(
        "GET", "/auth",
        {"Host": "auth.example.com", "X-Original-URL": "https://app.example.com/admin",
         "X-Forwarded-Uri": "/admin", "X-Forwarded-Host": "app.example.com", "X-Forwarded-For": "1.2.3.4"},
        remote, TRUSTED,
    )
    assert request.source is Source.DIRECT
    assert request.url == "http://auth.example.com/auth"
    assert request.client_ip == remote


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Uri": "admin", "X-Forwarded-Method": "G ET", "X-Forwarded-Host": "evil host"},
        {"X-Forwarded-Uri": "/a\r\nX-Injected: 1", "X-Forwarded-Method": "GET"},
        {"X-Forwarded-Uri": "/" + "a" * 9000, "X-Forwarded-Proto": "javascript"},
    ],
)
def test_malformed_forwarded_values_fall_back_to_safe_defaults(headers: dict[str, str]) -> None:
    request = original_request("GET", "/auth", {"Host": "auth.example.com", **headers}, "127.0.0.1", TRUSTED)
    assert request.uri.startswith("/") and "\n" not in request.uri and len(request.uri) < 9000
    assert request.scheme in ("http", "https") and " " not in request.host and " " not in request.method


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


def test_a_request_described_in_both_protocols_is_refused() -> None:
    """Through Traefik a client could add X-Original-URI (or through nginx X-Forwarded-Uri):
    guessing would let it choose the request that is authorised."""
    with pytest.raises(AmbiguousRequest):
        original_request("GET", "/auth", {"X-Forwarded-Uri": "/admin", "X-Forwarded-Method": "GET",
                                          "X-Original-URI": "/public/x"}, "127.0.0.1", TRUSTED)
    # from an untrusted sender both are ignored anyway
    assert original_request("GET", "/auth", {"X-Forwarded-Uri": "/admin", "X-Original-URI": "/public"},
                            "203.0.113.1", TRUSTED).source is Source.DIRECT


@pytest.mark.parametrize(
    "scheme,headers,remote,origin",
    [
        ("http", {"Host": "auth.example.com"}, "203.0.113.5", "http://auth.example.com"),
        ("http", {"Host": "Auth.Example.com:80"}, "203.0.113.5", "http://auth.example.com"),
        ("https", {"Host": "auth.example.com:8443"}, "203.0.113.5", "https://auth.example.com:8443"),
        # behind a trusted proxy: the host and scheme the browser used
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Proto": "https"},
         "127.0.0.1", "https://app.example.com"),
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "app.example.com:443", "X-Forwarded-Proto": "https"},
         "127.0.0.1", "https://app.example.com"),
        # from anyone else those headers are ignored
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "evil.test", "X-Forwarded-Proto": "https"},
         "203.0.113.5", "http://fa:8080"),
        # nonsense is not an origin (nor is the proxy's own Host one, through a proxy)
        ("http", {"Host": "fa:8080", "X-Forwarded-Host": "a b"}, "127.0.0.1", None),
        ("http", {"Host": "fa:8080", "X-Forwarded-Proto": "gopher"}, "127.0.0.1", "http://fa:8080"),
        ("http", {"Host": "evil.test/x@y"}, "203.0.113.5", None),
        ("http", {}, "203.0.113.5", None),
    ],
)
def test_public_origin(scheme: str, headers: dict[str, str], remote: str, origin: str | None) -> None:
    assert public_origin(scheme, headers, remote, TRUSTED) == origin


# --- properties: whatever the headers, only the documented exception, and safe values ------------

HEADER_NAMES = ["Host", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri",
                "X-Forwarded-Method", "X-Forwarded-Prefix", "X-Original-URL", "X-Original-URI", "X-Original-Method"]
HEADER_VALUES = st.text(max_size=40) | st.sampled_from(
    ["https", "http", "GET", "delete", "/admin?x=1", "//evil.test/", "app.example.com", "app.example.com:8443",
     "[::1]:80", "https://app.example.com/a", "javascript:alert(1)", "10.0.0.1, 203.0.113.9", "/forwardauth",
     "/a\r\nX: 1", "a b", "../..", ""])
HEADERS = st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=6)
REMOTES = st.sampled_from(["127.0.0.1", "10.1.2.3", "203.0.113.7", "::1", "not-an-ip", None])
PROPERTY = settings(max_examples=200, deadline=None)
SAFE_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:\d{1,5})?$")


@PROPERTY
@given(st.text(max_size=10), st.text(max_size=40), HEADERS, REMOTES, st.booleans())
def test_original_request_is_always_safe_to_use(
    method: str, path_qs: str, headers: dict[str, str], remote: str | None, envoy: bool
) -> None:
    try:
        request = original_request(method, path_qs, headers, remote, TRUSTED, "/auth/envoy" if envoy else None)
    except AmbiguousRequest:
        assert address_in(remote, TRUSTED) and not envoy
        return
    assert request.scheme in ("http", "https")
    assert SAFE_HOST.match(request.host), request.host
    if not address_in(remote, TRUSTED):  # nothing the sender wrote about the request is believed
        assert request.source is Source.DIRECT and request.uri == path_qs and request.client_ip == remote
    elif request.source is not Source.DIRECT:  # described by the proxy: clean values only
        assert re.fullmatch(r"/[\x21-\x7e]*", request.uri) and len(request.uri) <= 8192, request.uri
        assert re.fullmatch(r"[A-Z]{1,16}", request.method) or request.source is Source.ENVOY


@PROPERTY
@given(st.lists(st.sampled_from(["203.0.113.9", "198.51.100.1", "10.0.0.5", "127.0.0.1", "::1", "junk", " "]),
                max_size=5).map(", ".join) | st.text(max_size=30), REMOTES)
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
