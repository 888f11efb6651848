"""Our cookies: the access token's, the browser's refresh token's, the device cookie and the
pending sign-in's (between the password and the second factor)."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from forwardauth.config import Settings
from forwardauth.core.credentials import AmbiguousToken, cookie_value
from forwardauth.core.forwarding import path_prefix
from forwardauth.http import browser
from forwardauth.stores.regulation import KNOWN_SECONDS

DEVICE_COOKIE_SUFFIX = "_device"
MAX_DEVICE_COOKIE = 64
PENDING_COOKIE_SUFFIX = "_2fa"
MAX_PENDING_COOKIE = 64


def device_cookie_name(settings: Settings) -> str:
    return settings.cookie_name + DEVICE_COOKIE_SUFFIX


def device_of(request: web.Request, settings: Settings) -> str | None:
    """The browser's device cookie, if it sent exactly one well-formed value."""
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), device_cookie_name(settings))
    except AmbiguousToken:
        return None
    return value if value and len(value) <= MAX_DEVICE_COOKIE else None


def set_device_cookie(response: web.StreamResponse, request: web.Request, settings: Settings, value: str) -> None:
    """Remember this browser (``KNOWN_SECONDS``): host-only, on forwardauth's own paths, like the
    refresh cookie; it only exempts the browser from the per-username login limit."""
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    response.set_cookie(
        device_cookie_name(settings),
        value,
        max_age=KNOWN_SECONDS,
        path=folder,
        httponly=True,
        samesite="Lax",
        secure=settings.cookie_secure,
    )


def pending_cookie_name(settings: Settings) -> str:
    return settings.cookie_name + PENDING_COOKIE_SUFFIX


def pending_of(request: web.Request, settings: Settings) -> str | None:
    """The id of the browser's pending sign-in, if it sent exactly one well-formed value."""
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), pending_cookie_name(settings))
    except AmbiguousToken:
        return None
    return value if value and len(value) <= MAX_PENDING_COOKIE else None


def set_pending_cookie(
    response: web.StreamResponse, request: web.Request, settings: Settings, value: str | None, max_age: int = 300
) -> None:
    """Set (or, with ``None``, clear) the pending sign-in's id: host-only, on forwardauth's own
    paths, for as long as the pending sign-in lives in Redis. It is worth a password, no more."""
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    put_cookie(response, settings, pending_cookie_name(settings), value, max_age, path=folder)


def put_cookie(
    response: web.StreamResponse,
    settings: Settings,
    name: str,
    value: str | None,
    max_age: int,
    path: str = "/",
    domain: str | None = None,
) -> None:
    """Set (or, with ``None``, clear) one of our cookies: always HttpOnly and SameSite=Lax."""
    options: dict[str, Any] = {"path": path, "httponly": True, "samesite": "Lax", "secure": settings.cookie_secure}
    if domain:
        options["domain"] = domain
    if value is None:
        response.del_cookie(name, **options)
    else:
        response.set_cookie(name, value, max_age=max_age, **options)


def set_access_cookie(response: web.StreamResponse, settings: Settings, token: str | None) -> None:
    """Set (or, with ``None``, clear) the access-token cookie."""
    if settings.cookie_domain:
        # A host-only cookie of the same name (set before FORWARDAUTH_COOKIE_DOMAIN was) would be
        # sent beside ours, and two tokens are refused: expire it too, or that browser is stuck.
        # A raw header: aiohttp keeps one Set-Cookie per name.
        response.headers.add(
            hdrs.SET_COOKIE,
            f"{settings.cookie_name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
            + ("; Secure" if settings.cookie_secure else ""),
        )
    put_cookie(response, settings, settings.cookie_name, token, settings.access_ttl, domain=settings.cookie_domain)


def set_refresh_cookie(
    response: web.StreamResponse, request: web.Request, settings: Settings, token: str | None
) -> None:
    """Set (or, with ``None``, clear) the browser's refresh cookie (FORWARDAUTH_REMEMBER_BROWSER).

    On forwardauth's own paths (the folder of the login page as the browser sees it:
    ``/forwardauth/`` behind the shipped snippets), so the protected apps, which do get the access
    cookie, never receive the long-lived token; /logout does, to end its session. Under such a
    folder it is for the cookie domain, so every host's login page renews the one sign-in; on a
    login host of its own, host-only (see browser.refresh_cookie_domain).
    """
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    domain = browser.refresh_cookie_domain(settings, folder)
    if domain:
        # The host-only one of the same name (from a version before, or a login host on this
        # folder) would be sent beside it, and two are refused: expire it too (a raw header:
        # aiohttp keeps one Set-Cookie per name).
        response.headers.add(
            hdrs.SET_COOKIE,
            f"{settings.refresh_cookie_name}=; Max-Age=0; Path={folder}; "
            "HttpOnly; SameSite=Lax" + ("; Secure" if settings.cookie_secure else ""),
        )
    put_cookie(
        response, settings, settings.refresh_cookie_name, token, settings.refresh_ttl, path=folder, domain=domain
    )


def refresh_cookie(request: web.Request, settings: Settings) -> str | None:
    """The browser's refresh token, if it sent exactly one."""
    try:
        return cookie_value(request.headers.getall(hdrs.COOKIE, ()), settings.refresh_cookie_name)
    except AmbiguousToken:
        return None
