"""Where ``rd`` may send a browser after login: only to allowed domains, never elsewhere."""

from __future__ import annotations

import pytest

from forwardauth.redirects import host_allowed, login_location, safe_redirect

ALLOWED = ("example.com",)


@pytest.mark.parametrize(
    "rd",
    [
        "https://example.com/",
        "https://example.com",
        "http://app.example.com/path?q=1#frag",
        "https://a.b.example.com:8443/x",
        "https://EXAMPLE.com/upper",
        "https://example.com/a%20b",
    ],
)
def test_allowed_destinations(rd: str) -> None:
    assert safe_redirect(rd, ALLOWED) == rd


@pytest.mark.parametrize(
    "rd",
    [
        None,
        "",
        "/relative",
        "//evil.com",
        "///evil.com",
        "\\\\evil.com",
        "/\\evil.com",
        "https:evil.com",
        "https:/evil.com",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,x",
        "ftp://example.com/",
        "https://evil.com",
        "https://evil-example.com",
        "https://example.com.evil.com",
        "https://evilexample.com",
        "https://example.com@evil.com",
        "https://user:pass@example.com/",
        "https://evil.com\\@example.com",
        "https://evil.com%5C@example.com",
        "https://example.com\r\nSet-Cookie: x=1",
        "https://example.com/%0d%0aSet-Cookie:%20x",
        "https://example.com/%250d%250a",
        "https://example.com/\x00",
        "https://example.com /x",
        "https://example.com:badport/",
        "https://" + "a" * 3000 + ".example.com/",
        "%2F%2Fevil.com",
        "https:%2F%2Fevil.com",
    ],
)
def test_refused_destinations(rd: str | None) -> None:
    assert safe_redirect(rd, ALLOWED) is None


def test_host_matching_is_on_label_boundaries() -> None:
    assert host_allowed("example.com", ALLOWED)
    assert host_allowed("x.example.com.", ALLOWED)
    assert not host_allowed("xexample.com", ALLOWED)
    assert not host_allowed("example.com.evil", ALLOWED)


def test_login_location_carries_an_encoded_rd() -> None:
    location = login_location("https://auth.example.com/login", "https", "app.example.com",
                              "https://app.example.com/a?x=1&y=2", ALLOWED)
    assert location == "https://auth.example.com/login?rd=https%3A%2F%2Fapp.example.com%2Fa%3Fx%3D1%26y%3D2"


def test_login_location_on_the_protected_host() -> None:
    location = login_location("/forwardauth/login", "http", "app.example.com:8080",
                              "http://app.example.com:8080/", ALLOWED)
    assert location == "http://app.example.com:8080/forwardauth/login?rd=http%3A%2F%2Fapp.example.com%3A8080%2F"


def test_login_location_drops_an_unsafe_rd() -> None:
    assert login_location("https://auth.example.com/login?lang=en", "https", "evil.test", "https://evil.test/",
                          ALLOWED) == "https://auth.example.com/login?lang=en"
