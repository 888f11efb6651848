"""What the passkey endpoints (http.passkeys) read and answer: the JSON body, the challenge's
cookie, the page's origin, and their answers (options, a sign-in done, an error, another page).

The challenge travels sealed in a short-lived cookie (host-only, HttpOnly, forwardauth's folder;
see accounts.challenges): issuing options stores nothing. Bodies are ``application/json`` only,
which another site cannot post without a CORS preflight we never grant.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from typing import Any

from aiohttp import hdrs, web
from webauthn.helpers import base64url_to_bytes

from forwardauth.accounts import challenges
from forwardauth.accounts.passkeys import PasskeyError
from forwardauth.accounts.signin import SignedIn, Throttled
from forwardauth.config import Settings
from forwardauth.core.credentials import AmbiguousToken, cookie_value
from forwardauth.core.forwarding import public_origin
from forwardauth.http import browser
from forwardauth.http.common import (
    JSON,
    BadInput,
    bounded,
    error_response,
    json_object,
    json_response,
    too_many_attempts,
)
from forwardauth.http.cookies import put_cookie
from forwardauth.http.pages import passkeys_offered
from forwardauth.http.secondfactor import prefix_of, set_signed_in_cookies

CHALLENGE_COOKIE_SUFFIX = "_webauthn"
NO_STORE = {"Cache-Control": "no-store"}
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{2,1400}")


def challenge_cookie_name(settings: Settings) -> str:
    return settings.cookie_name + CHALLENGE_COOKIE_SUFFIX


def challenge_of(request: web.Request, settings: Settings) -> str:
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), challenge_cookie_name(settings))
    except AmbiguousToken:
        value = None
    return value or ""


def set_challenge(response: web.StreamResponse, request: web.Request, settings: Settings, value: str | None) -> None:
    folder = prefix_of(request, settings) + "/"
    put_cookie(response, settings, challenge_cookie_name(settings), value, challenges.TTL, path=folder)


def page_origin(request: web.Request, settings: Settings) -> str:
    """The page's origin as the browser sees it (behind a trusted proxy, as the proxy says)."""
    return public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies) or ""


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object posted (JSON only: see the module's docstring)."""
    if request.content_type != JSON:
        raise BadInput("use application/json", status=415)
    return await json_object(request)


def text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or not bounded(value):
        raise BadInput(f"{name} must be a string (at most 4096 characters, no NUL)")
    return value


def credential_field(data: dict[str, Any]) -> dict[str, Any]:
    value = data.get("credential")
    if not isinstance(value, dict):
        raise BadInput("credential must be the passkey's answer (a JSON object)")
    return value


def require_enabled(settings: Settings) -> None:
    if not passkeys_offered(settings):
        raise PasskeyError("Passkeys are off on this server (FORWARDAUTH_SECOND_FACTOR=off).", 403)


def refusal(request: web.Request, settings: Settings, exc: PasskeyError | Throttled) -> web.Response:
    """The error answer; the challenge (spent, or never to be answered) is forgotten."""
    if isinstance(exc, Throttled):
        response = too_many_attempts(exc, NO_STORE)
    else:
        error = {400: "invalid_request", 403: "forbidden"}.get(exc.status, "passkey_refused")
        response = error_response(exc.status, error, str(exc))
    set_challenge(response, request, settings, None)
    return response


def log_failure(username: str, exc: PasskeyError | Throttled) -> None:
    """The ``login failed`` / ``login throttled`` line (fail2ban) of a refused or throttled passkey."""
    if isinstance(exc, Throttled):
        browser.log_login_failed(username, exc.retry_after)
    elif exc.status == 401:
        browser.log_login_failed(username)


def elsewhere(url: str, message: str, status: int = 400) -> web.Response:
    return json_response({"error": "sign_in_again", "error_description": message, "redirect": url}, status, NO_STORE)


def options_answer(request: web.Request, settings: Settings, options: dict[str, Any], sealed: str) -> web.Response:
    response = json_response({"publicKey": options}, headers=NO_STORE)
    set_challenge(response, request, settings, sealed)
    return response


def signed_in_answer(
    request: web.Request, settings: Settings, signed: SignedIn, rd: str, codes: list[str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"redirect": rd or "/"}
    if codes:
        body["recovery_codes"] = codes
    response = json_response(body, headers=NO_STORE)
    set_signed_in_cookies(response, request, settings, signed)
    set_challenge(response, request, settings, None)
    return response


def binding(pending_id: str) -> str:
    """What a second-factor challenge is bound to: its pending sign-in (a digest: ids are secret)."""
    return hashlib.sha256(pending_id.encode()).hexdigest()


def credential_id(value: str) -> bytes:
    """A passkey's id as the forms carry it (base64url, unpadded)."""
    if not _BASE64URL.fullmatch(value):
        raise BadInput("credential must be a passkey's id (base64url)")
    try:
        return base64url_to_bytes(value)
    except (binascii.Error, ValueError):
        raise BadInput("credential must be a passkey's id (base64url)") from None
