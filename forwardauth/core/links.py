"""Where the links we e-mail (password reset, address verification, set-password) lead.

Built from the configuration, never from the request's Host alone: whoever can send us a request
with ``Host: attacker.example`` would otherwise have us mail the victim a link to the attacker's
site carrying a valid token (host-header poisoning). The request's own origin is used only when
the login URL is a path (a login page on whichever host the browser asked for) and that host is
one we answer for: the issuer's, or under FORWARDAUTH_ALLOWED_DOMAINS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from forwardauth.core.redirects import host_allowed


def _folder(url: str) -> str:
    """``scheme://host[:port]/folder`` of an absolute login URL: its path without the last
    segment (``/login``), no query nor fragment."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    folder = path.rsplit("/login", 1)[0] if path.endswith("/login") else path.rsplit("/", 1)[0]
    return f"{parts.scheme}://{parts.netloc}{folder}"


def link_base(
    login_url: str, issuer: str, request_origin: str | None, prefix: str, allowed_domains: tuple[str, ...]
) -> str:
    """The URL our pages are under, for links in e-mails (``{base}/account/reset?token=...``).

    ``login_url``: FORWARDAUTH_LOGIN_URL (absolute, or a path); ``issuer``: the issuer URL;
    ``request_origin``: ``scheme://host[:port]`` as the request addressed us (None: unknown);
    ``prefix``: the proxy's path prefix of our pages on that origin ("" or "/forwardauth").
    """
    issuer = issuer.rstrip("/")
    if "://" in login_url:
        return _folder(login_url)
    host, issuer_host = _host(request_origin or ""), _host(issuer)
    if request_origin and host and (host == issuer_host or host_allowed(host, allowed_domains)):
        return request_origin.rstrip("/") + prefix.rstrip("/")
    return issuer


def _host(url: str) -> str:
    """The lower-case host of ``url``; "" when there is none or it does not parse."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
