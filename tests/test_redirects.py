"""Where ``rd`` may send a browser after login: only to allowed domains, never elsewhere."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from forwardauth.core.redirects import host_allowed, login_location, safe_redirect

ALLOWED = ("example.com",)
# URL-shaped text from the pieces open-redirect tricks are made of, and arbitrary text besides.
URLISH = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["https:", "http:", "HTTPS:", "javascript:", "data:", ""]),
    st.sampled_from(["//", "/", "", "\\\\", "/\\", "%2F%2F", "///", "\t//"]),
    st.sampled_from(
        [
            "",
            "app.",
            "a.b.",
            "evil.com.",
            "evil.com@",
            "user:pw@",
            "evil.com%2F.",
            "evil.com#.",
            "evil.com\uff0f.",
            "evil.com\\@",
            "\u3002",
        ]
    ),
    st.sampled_from(["example.com", "evil.com", "evilexample.com", "EXAMPLE.COM", "[::1]"]),
    st.sampled_from(
        ["", ".", ":443", ":8080", ":x", "@evil.com", "%2F.evil.com", "%40evil.com", "\u3002evil.com", ".evil.com"]
    ),
    st.lists(
        st.sampled_from(
            [
                "/",
                "/a",
                "?q=1",
                "#f",
                "/b/",
                "?r=/x",
                "//evil.com",
                "%2F%2Fevil.com",
                "\\evil.com",
                "%5C",
                "@evil.com",
                "%0a",
                "%250d",
                "\t",
                "\n",
                " ",
                "\u2028",
                "\u00e9",
            ]
        ),
        max_size=3,
    ).map("".join),
) | st.text(max_size=80)
PROPERTY = settings(max_examples=200, deadline=None)


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


def refused_destinations(domain: str) -> list[str | None]:
    """``rd`` values that must never be followed when ``domain`` is the allowed one (also used
    through the real /login in test_hostile)."""
    d = domain
    return [
        None,
        "",
        "/relative",
        # other hosts, and hosts that only look like ours
        "https://evil.com",
        f"https://evil-{d}",
        f"https://{d}.evil.com",
        f"https://evil{d}",
        f"https://{d}%2F.evil.com",
        f"https://evil.com%2F.{d}",
        f"https://evil.com%23.{d}",
        f"https://evil.com\uff0f.{d}",
        f"https://evil.com\uff03.{d}",
        f"https://{d}\u3002evil.com",
        f"https://xn--{d}",
        # scheme-relative and backslash tricks browsers read as another host
        "//evil.com",
        "///evil.com",
        "////evil.com/",
        "\\\\evil.com",
        "/\\evil.com",
        "\\/evil.com",
        "/%5Cevil.com",
        "%5C%5Cevil.com",
        "%2F%2Fevil.com",
        "/%2F/evil.com",
        "https:%2F%2Fevil.com",
        "https:evil.com",
        "https:/evil.com",
        "https:\\\\evil.com",
        f"https://evil.com\\@{d}",
        f"https://evil.com%5C@{d}",
        f"https://evil.com%5c.{d}",
        # other schemes
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "java\nscript:alert(1)",
        "javascript%3Aalert(1)",
        f"javascript://{d}/%0Aalert(1)",
        "data:text/html,x",
        f"ftp://{d}/",
        f"file://{d}/etc/passwd",
        # userinfo: the host is what follows the last @
        f"https://{d}@evil.com",
        f"https://{d}:443@evil.com",
        f"https://user:pass@{d}/",
        f"https://{d}%40evil.com",
        f"https://{d}%2540evil.com",
        # control characters, raw or encoded, anywhere
        f"https://{d}\r\nSet-Cookie: x=1",
        f"https://{d}/%0d%0aSet-Cookie:%20x",
        f"https://{d}/%250d%250a",
        f"https://{d}/\x00",
        f"https://ev\til.com.{d}/",
        f"https://evil.com\t.{d}/",
        "\thttps://evil.com/",
        f"https://evil.com/\n.{d}",
        f" https://{d}/",
        f"https://{d} /x",
        f"https://{d}:badport/",
        f"https://{d}:99999/",
        "https://" + "a" * 3000 + f".{d}/",
    ]


@pytest.mark.parametrize("rd", refused_destinations("example.com"))
def test_refused_destinations(rd: str | None) -> None:
    assert safe_redirect(rd, ALLOWED) is None


def test_host_matching_is_on_label_boundaries() -> None:
    assert host_allowed("example.com", ALLOWED)
    assert host_allowed("x.example.com.", ALLOWED)
    assert not host_allowed("xexample.com", ALLOWED)
    assert not host_allowed("example.com.evil", ALLOWED)


def test_login_location_carries_an_encoded_rd() -> None:
    location = login_location(
        "https://auth.example.com/login", "https", "app.example.com", "https://app.example.com/a?x=1&y=2", ALLOWED
    )
    assert location == "https://auth.example.com/login?rd=https%3A%2F%2Fapp.example.com%2Fa%3Fx%3D1%26y%3D2"


def test_login_location_on_the_protected_host() -> None:
    location = login_location(
        "/forwardauth/login", "http", "app.example.com:8080", "http://app.example.com:8080/", ALLOWED
    )
    assert location == "http://app.example.com:8080/forwardauth/login?rd=http%3A%2F%2Fapp.example.com%3A8080%2F"


def test_login_location_drops_an_unsafe_rd() -> None:
    assert (
        login_location("https://auth.example.com/login?lang=en", "https", "evil.test", "https://evil.test/", ALLOWED)
        == "https://auth.example.com/login?lang=en"
    )


@PROPERTY
@given(URLISH)
def test_a_safe_redirect_stays_on_the_allowed_domains(rd: str) -> None:
    """Whatever the input: nothing raised, and what comes back is the input, an absolute http(s)
    URL that two different URL parsers both place on an allowed domain, with nothing hidden."""
    result = safe_redirect(rd, ALLOWED)
    if result is None:
        return
    assert result == rd
    parts = urlsplit(result)
    assert parts.scheme in ("http", "https") and "@" not in parts.netloc
    assert parts.hostname is not None and host_allowed(parts.hostname, ALLOWED)
    assert not re.search(r"[\x00-\x20\x7f\\]", result) and parts.netloc.isascii()
    other = URL(result).host  # yarl: another parser must agree
    assert other is not None and host_allowed(other, ALLOWED)


@PROPERTY
@given(
    st.sampled_from(["http", "https"]),
    st.from_regex(r"([a-z0-9-]{1,8}\.){0,3}", fullmatch=True),
    st.sampled_from(["", ":8443"]),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,8}){0,3}(\?[a-z]=[A-Za-z0-9]{0,6})?", fullmatch=True),
)
def test_plain_urls_on_the_allowed_domains_are_kept(scheme: str, subdomains: str, port: str, path: str) -> None:
    """The other side: the property above is not kept by refusing everything."""
    rd = f"{scheme}://{subdomains}example.com{port}{path}"
    assert safe_redirect(rd, ALLOWED) == rd


@PROPERTY
@given(st.sampled_from(["http", "https"]), URLISH, URLISH)
def test_the_login_location_carries_only_a_safe_rd(scheme: str, host: str, uri: str) -> None:
    base = "https://auth.example.com/login"
    location = login_location(base, scheme, host, f"{scheme}://{host}{uri}", ALLOWED)
    assert location == base or location.startswith(base + "?rd=")
    for rd in parse_qs(urlsplit(location).query).get("rd", []):
        assert safe_redirect(rd, ALLOWED) == rd
