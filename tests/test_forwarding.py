"""Reading the original request from nginx, Traefik/Caddy and Envoy subrequests (pure)."""

from __future__ import annotations

import pytest

from forwardauth.config import parse_networks
from forwardauth.forwarding import Source, client_address, original_request

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
    from forwardauth.forwarding import AmbiguousRequest

    with pytest.raises(AmbiguousRequest):
        original_request("GET", "/auth", {"X-Forwarded-Uri": "/admin", "X-Forwarded-Method": "GET",
                                          "X-Original-URI": "/public/x"}, "127.0.0.1", TRUSTED)
    # from an untrusted sender both are ignored anyway
    assert original_request("GET", "/auth", {"X-Forwarded-Uri": "/admin", "X-Original-URI": "/public"},
                            "203.0.113.1", TRUSTED).source is Source.DIRECT
