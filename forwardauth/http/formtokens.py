"""CSRF tokens on the portal's and the admin console's forms (beside the Origin check every form
post gets, ``common.refuse_cross_site``).

A token is the time it was made, sealed (AES-GCM, ``forwardauth.sealing``: the keys every worker
and instance share) with what it is bound to as associated data: the browser's session (``sid``)
on a signed-in page, or a random value in a cookie of its own (``<cookie>_form``) on a page for
someone not signed in (forgotten password). So it needs no storage, opens on any worker, cannot be
moved to another session, and a page older than MAX_AGE asks to be reloaded. A sibling subdomain
that can plant cookies can plant the anonymous cookie, but not make a token for it.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping

from aiohttp import hdrs, web

from forwardauth.accounts.services import AccountServices
from forwardauth.core.credentials import AmbiguousToken, cookie_value
from forwardauth.http.common import BadInput
from forwardauth.http.cookies import put_cookie
from forwardauth.sealing import SealError

FIELD = "csrf_token"  # the hidden field of every form
MAX_AGE = 12 * 3600  # a form older than this asks to be reloaded
MAX_TOKEN = 200
ANONYMOUS_SUFFIX = "_form"
EXPIRED = "This form has expired or was not made for this session: reload the page and try again."


def _encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def _decode(text: str) -> bytes | None:
    if not text or len(text) > MAX_TOKEN:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def make(services: AccountServices, binding: str, now: float | None = None) -> str:
    """A token for forms posted with ``binding`` (see session_binding, anonymous_binding)."""
    issued = int(time.time() if now is None else now)
    return _encode(services.sealer.seal(issued.to_bytes(8, "big"), "csrf:" + binding))


def valid(services: AccountServices, binding: str, token: str, now: float | None = None) -> bool:
    """Whether ``token`` was made by us for ``binding`` within MAX_AGE."""
    blob = _decode(token)
    if blob is None:
        return False
    try:
        issued = int.from_bytes(services.sealer.open(blob, "csrf:" + binding), "big")
    except SealError:
        return False
    moment = time.time() if now is None else now
    return issued - 60 <= moment <= issued + MAX_AGE


def session_binding(sid: str) -> str:
    return "session:" + sid


def check(services: AccountServices, binding: str, fields: Mapping[str, str]) -> None:
    """403 unless the form's FIELD is a live token for ``binding``."""
    if not valid(services, binding, fields.get(FIELD, "")):
        raise BadInput(EXPIRED, status=403)


# --- forms for someone not signed in ----------------------------------------------------------------


def anonymous_cookie_name(services: AccountServices) -> str:
    return services.settings.cookie_name + ANONYMOUS_SUFFIX


def _anonymous_value(request: web.Request, services: AccountServices) -> str | None:
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), anonymous_cookie_name(services))
    except AmbiguousToken:
        return None
    return value if value and 16 <= len(value) <= 64 and value.isascii() else None


def anonymous_token(request: web.Request, services: AccountServices) -> tuple[str, str | None]:
    """(the token for a form, the cookie value to set with the page or None: the browser has one)."""
    value = _anonymous_value(request, services)
    fresh = None if value is not None else secrets.token_urlsafe(24)
    return make(services, "anonymous:" + (value or fresh or "")), fresh


def set_anonymous_cookie(
    response: web.StreamResponse, request: web.Request, services: AccountServices, value: str | None, folder: str
) -> None:
    """Give the browser its form cookie (on forwardauth's own paths, ``folder``), when it had none."""
    if value is not None:
        put_cookie(response, services.settings, anonymous_cookie_name(services), value, MAX_AGE, path=folder)


def check_anonymous(request: web.Request, services: AccountServices, fields: Mapping[str, str]) -> None:
    """403 unless the form's token was made for this browser's form cookie."""
    value = _anonymous_value(request, services)
    if value is None:
        raise BadInput(EXPIRED, status=403)
    check(services, "anonymous:" + value, fields)
