"""Where a browser may be sent after login (``rd``): pure, so it is tested exhaustively.

Open redirects through ``rd`` have been real CVEs in forward-auth services. The URL is parsed,
never pattern-matched: it must be absolute http(s), carry no userinfo, no control characters
(raw or percent-encoded) and no backslashes, its host must be plain ASCII, and equal an allowed
domain or be a subdomain of one (a label boundary, so ``evil-example.com`` does not match
``example.com``).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from forwardauth.core import hosts

MAX_RD_LENGTH = 2048
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
# A host as DNS and browsers agree on it: ASCII names, IPv4, IPv6 (bracketed in the URL). Nothing
# percent-encoded or non-ASCII, which browsers decode or map (IDNA) into what we never checked.
_HOSTNAME = re.compile(r"^[a-z0-9_.:-]+$")


def host_allowed(host: str, allowed_domains: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allowed_domains)


def safe_redirect(rd: str | None, allowed_domains: tuple[str, ...]) -> str | None:
    """``rd`` when it is a safe destination, else ``None`` (the caller uses its default)."""
    if not rd or len(rd) > MAX_RD_LENGTH or " " in rd:
        return None
    # Decode repeatedly, so encoded tricks (%5C, %2F%2F, %0a, double encoding) are seen too.
    decoded, previous = rd, None
    while decoded != previous:
        if _UNSAFE.search(decoded):
            return None
        previous, decoded = decoded, unquote(decoded)
    try:
        parts = urlsplit(rd)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOSTNAME.match(parts.hostname):
        return None
    if "@" in parts.netloc:
        return None
    if not host_allowed(parts.hostname, allowed_domains):
        return None
    return rd


def login_location(
    login_url: str, scheme: str, host: str, original_url: str, allowed_domains: tuple[str, ...]
) -> str | None:
    """Where to send a browser that is not signed in, with ``rd`` when it may come back.

    ``login_url`` may be a path (``/forwardauth/login``): it is then on the host the browser
    asked for, which is how a login page served on every protected host works. That host must
    parse (``None`` otherwise: no redirect at all, never one to another host in its place).
    """
    if login_url.startswith("/"):
        if hosts.parse(host) is None or scheme not in ("http", "https"):
            return None
        base = f"{scheme}://{host}{login_url}"
    else:
        base = login_url
    rd = safe_redirect(original_url, allowed_domains)
    if rd is None:
        return base
    return f"{base}{'&' if '?' in base else '?'}rd={quote(rd, safe='')}"
