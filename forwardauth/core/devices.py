"""What a session's device is called on the portal's pages, from its User-Agent header, and what
a session keeps of that header.

People recognise their sessions by browser and system ("Firefox on Linux"), programs by name
("git", "curl"). The header is whatever the client sent: it is kept bounded and as text
PostgreSQL takes, parsed as untrusted text, the name made of printable characters only and
bounded, and nothing here ever raises.
"""

from __future__ import annotations

import functools
import re

import ua_parser

MAX_USER_AGENT = 512  # what PostgreSQL keeps of the header (migration 0007)
MAX_NAME = 80
UNKNOWN = "Unknown device"

# ua-parser's names for the same browser on a phone ("Chrome Mobile", "Mobile Safari"): the
# system already says it is a phone.
_MOBILE = re.compile(r"\s*\bMobile\b\s*")
_SYSTEMS = {"Mac OS X": "macOS"}
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]+")
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as PostgreSQL's ``text`` takes it: NUL and lone surrogates (request bytes that were
    not UTF-8 reach us as surrogates) become U+FFFD instead of failing the query."""
    return _NOT_STORABLE.sub("\ufffd", text)


def kept(user_agent: str | None) -> str | None:
    """What a session keeps of a User-Agent header: at most 512 characters, storable; ``None``
    for none."""
    return storable(user_agent[:MAX_USER_AGENT]) if user_agent else None


def _clean(text: str) -> str:
    """Printable text on one line (control characters and the like become a space)."""
    return " ".join(_NOT_PRINTABLE.sub(" ", text).split())


def _product(user_agent: str) -> str:
    """The first product token's name (``git/2.39.2`` -> ``git``; RFC 9110 10.1.5)."""
    return (user_agent.split() or [""])[0].split("/", 1)[0]


@functools.lru_cache(maxsize=1024)
def _describe(user_agent: str) -> str:
    try:
        parsed = ua_parser.parse(user_agent)
        browser = _MOBILE.sub(" ", parsed.user_agent.family).strip() if parsed.user_agent else ""
        system = parsed.os.family if parsed.os else ""
    except Exception:  # a parser bug must not break a page listing sessions
        browser = system = ""
    browser = _clean(browser) or _clean(_product(user_agent))
    system = _clean(_SYSTEMS.get(system, system))
    name = f"{browser} on {system}" if browser and system and system != "Other" else browser
    return name[:MAX_NAME] or UNKNOWN


def describe(user_agent: str | None) -> str:
    """A short name for the device a session was opened on (at most 80 characters), e.g.
    "Firefox on Linux", "Chrome on Android", "git", "curl"; "Unknown device" without a header."""
    if not user_agent:
        return UNKNOWN
    return _describe(user_agent[:MAX_USER_AGENT])
