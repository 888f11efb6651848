"""Cross-site form posts: where a browser's form post to /login or /logout came from. Pure.

The cookie is ``SameSite=Lax``, which keeps it off posts from other *sites*, but not from other
hosts of the same site (a sibling subdomain), and a login form needs no cookie to be abused: a
page elsewhere could sign a visitor in to the attacker's account. So a form post is accepted only
when its ``Origin`` (or, without one, its ``Referer``) is one of our own origins or on an allowed
domain. Every current browser sends ``Origin`` on a POST; a request with neither header is not a
browser's (curl, scripts), and passes. JSON and ``Authorization`` requests are not checked: a
browser sends those cross-origin only after a CORS preflight, which we never grant.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from forwardauth.core.redirects import host_allowed

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL (default port left out), else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = f":{port}" if port is not None and port != DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{shown}"


def form_post_allowed(
    origin: str | None, referer: str | None, own_origins: Collection[str | None], allowed_domains: tuple[str, ...]
) -> bool:
    """Whether a form post with these ``Origin`` / ``Referer`` headers may be served.

    ``Origin: null`` (sandboxed frames, ``data:`` pages) is refused.
    """
    source = origin or referer
    if not source:
        return True
    source_origin = origin_of(source)
    if source_origin is None:
        return False
    if source_origin in own_origins:
        return True
    host = urlsplit(source_origin).hostname
    return host is not None and host_allowed(host, allowed_domains)
