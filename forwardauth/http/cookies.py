"""Our cookies: the access token's, the browser's refresh token's and the device cookie."""

from __future__ import annotations

import secrets

from aiohttp import hdrs, web

from forwardauth.config import Settings
from forwardauth.core.credentials import AmbiguousToken, cookie_value
from forwardauth.core.forwarding import path_prefix
from forwardauth.stores.regulation import KNOWN_SECONDS

DEVICE_COOKIE_SUFFIX = "_device"
DEVICE_BYTES = 32
MAX_DEVICE_COOKIE = 64


def device_cookie_name(settings: Settings) -> str:
    return settings.cookie_name + DEVICE_COOKIE_SUFFIX


def device_of(request: web.Request, settings: Settings) -> str | None:
    """The browser's device cookie, if it sent exactly one well-formed value."""
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), device_cookie_name(settings))
    except AmbiguousToken:
        return None
    return value if value and len(value) <= MAX_DEVICE_COOKIE else None


def new_device() -> str:
    """A device cookie value: 256 random bits, only its digest is kept in Redis."""
    return secrets.token_urlsafe(DEVICE_BYTES)


def set_device_cookie(response: web.StreamResponse, request: web.Request, settings: Settings, value: str) -> None:
    """Remember this browser (``KNOWN_SECONDS``): host-only, on forwardauth's own paths, like the
    refresh cookie; it only exempts the browser from the per-username login limit."""
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    response.set_cookie(device_cookie_name(settings), value, max_age=KNOWN_SECONDS, path=folder, httponly=True,
                        samesite="Lax", secure=settings.cookie_secure)


