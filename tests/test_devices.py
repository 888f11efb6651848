"""Device names the portal shows for a session's User-Agent (core.devices): pure, no store."""

from __future__ import annotations

import pytest

from forwardauth.core.devices import MAX_NAME, MAX_USER_AGENT, UNKNOWN, describe, kept, storable

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.1 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1"
    " Safari/605.1.15"
)
EDGE_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0"
    " Safari/537.36 Edg/120.0.0.0"
)


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        (FIREFOX_LINUX, "Firefox on Linux"),
        (CHROME_ANDROID, "Chrome on Android"),  # not "Chrome Mobile": the system says it is a phone
        (SAFARI_IPHONE, "Safari on iOS"),
        (SAFARI_MAC, "Safari on macOS"),
        (EDGE_WINDOWS, "Edge on Windows"),
        ("git/2.39.2", "git"),  # unknown to ua-parser: the first product token
        ("curl/8.4.0", "curl"),
        ("okhttp/4.9.3 extra", "okhttp"),
    ],
)
def test_known_browsers_and_programs_by_name(user_agent: str, name: str) -> None:
    assert describe(user_agent) == name


@pytest.mark.parametrize("user_agent", [None, "", "   ", "\x00\x01\x1b"])
def test_no_header_or_nothing_printable_is_an_unknown_device(user_agent: str | None) -> None:
    assert describe(user_agent) == UNKNOWN


def test_control_characters_never_reach_the_page() -> None:
    name = describe("evil\x1b[31m\r\nSet-Cookie:/1.0")
    assert name.startswith("evil")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)


@pytest.mark.parametrize("user_agent", ["x" * 10_000, "Mozilla/5.0 (" + "a; " * 3000 + ")", "é" * 600 + "/1"])
def test_any_header_gives_a_bounded_name(user_agent: str) -> None:
    name = describe(user_agent)
    assert 0 < len(name) <= MAX_NAME


def test_what_a_session_keeps_of_the_header() -> None:
    """Bytes that were not UTF-8 reach us as lone surrogates, which PostgreSQL's text refuses."""
    assert kept(None) is None and kept("") is None
    assert kept("a\udcff\x00b") == "a\ufffd\ufffdb"
    assert kept("x" * 5000) == "x" * MAX_USER_AGENT
    assert storable("plain é") == "plain é"
    assert describe("a\udcffb/1") == "a b"
