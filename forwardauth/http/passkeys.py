"""Passkeys in the browser: JSON endpoints for static/passkeys.js, and forms to rename or remove one.

- ``POST <prefix>/login/passkey/options``, then ``POST <prefix>/login/passkey``: passwordless
  sign-in from the login page (a discoverable passkey names its user).
- ``POST <prefix>/login/second-factor/passkey/options``, then ``.../passkey``: the second factor
  of the browser's pending sign-in, with one of that user's passkeys.
- ``POST <prefix>/mfa/passkeys/options``, then ``POST <prefix>/mfa/passkeys``: register one,
  under the rule of every change on /mfa (http.enrol); a pending sign-in that had to enrol is
  then complete.
- ``POST <prefix>/mfa/passkeys/rename`` and ``.../remove``: plain forms, back to /mfa.

What they read and answer is http.passkeyio's (JSON only; the sealed challenge in a cookie). An
answer sending the browser on is ``{"redirect": url}`` (with ``recovery_codes`` to show once after
a first factor); an error is ``{"error", "error_description"}``, with ``redirect`` when the way
out is another page.
"""

from __future__ import annotations

import importlib.resources
import time
from typing import Any

from aiohttp import hdrs, web

from forwardauth.accounts import passkeys, passkeyset, secondfactor
from forwardauth.accounts.passkeys import PASSWORDLESS, SECOND_FACTOR, Expected, PasskeyError
from forwardauth.accounts.signin import Throttled
from forwardauth.core.redirects import safe_redirect
from forwardauth.http import browser, enrol, passkeyio
from forwardauth.http.common import (
    BadInput,
    client_address,
    error_response,
    json_response,
    read_fields,
    see_other,
)
from forwardauth.http.i18n import _
from forwardauth.http.login import destination
from forwardauth.http.secondfactor import (
    MFA_PATH,
    SECOND_FACTOR_PATH,
    current,
    finish,
    prefix_of,
)
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores.pending import Pending

SCRIPT_PATH = "/static/passkeys.js"
SCRIPT = importlib.resources.files(__package__).joinpath("static/passkeys.js").read_bytes()
EXPIRED = "This sign-in has expired. Start again."


async def script(request: web.Request) -> web.Response:
    """``GET <prefix>/static/passkeys.js``: ours, from our origin (CSP script-src 'self')."""
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return web.Response(body=SCRIPT, content_type="text/javascript", charset="utf-8", headers=headers)


# --- passwordless sign-in -------------------------------------------------------------------------------


async def login_options(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    await passkeyio.read_body(request)
    try:
        passkeyio.require_enabled(settings)
        options, sealed = await passkeys.authentication_options(
            services, passkeyio.page_origin(request, settings), Expected(PASSWORDLESS)
        )
    except PasskeyError as exc:
        return passkeyio.refusal(request, settings, exc)
    return passkeyio.options_answer(request, settings, options, sealed)


async def login(request: web.Request) -> web.Response:
    """Verify the passkey, then open a session as a completed sign-in does (amr hwk/swk, user)."""
    services = request.app[SERVICES]
    settings = services.settings
    data = await passkeyio.read_body(request)
    rd = destination(request, settings, passkeyio.text_field(data, "rd"))  # a page of ours (a path) too
    origin = passkeyio.page_origin(request, settings)
    absolute = safe_redirect(rd, settings.allowed_domains) or ""
    problem = browser.delivery_problem(settings, origin, absolute) if origin else None
    if problem is not None:  # as for the password form: say why the cookie would not reach rd
        browser.log.warning("%s", problem.log)
        return error_response(400, "invalid_request", problem.page)
    address = client_address(request, settings)
    try:
        passkeyio.require_enabled(settings)
        sealed = passkeyio.challenge_of(request, settings)
        verified = await passkeys.authenticate(
            services, sealed, passkeyio.credential_field(data), origin, address, Expected(PASSWORDLESS)
        )
        pending = Pending(verified.user.id, verified.user.username, (), int(time.time()), rd=rd)
        agent = request.headers.get(hdrs.USER_AGENT)
        signed = await secondfactor.complete(services, pending, verified.methods, address, user_agent=agent)
    except (PasskeyError, Throttled) as exc:
        passkeyio.log_failure("(passkey)", exc)  # whose it was is not known, or not proved
        return passkeyio.refusal(request, settings, exc)
    except secondfactor.SignInExpired:
        return passkeyio.refusal(request, settings, PasskeyError("This account is disabled.", 403))
    return passkeyio.signed_in_answer(request, settings, signed, rd)


# --- as the second factor ---------------------------------------------------------------------------------


async def _pending(request: web.Request, services: Services) -> tuple[str, Pending, Expected]:
    found = await current(request, services)
    if found is None or found[1].must_enrol:
        raise PasskeyError(EXPIRED, 400)
    pending_id, pending = found
    return (
        pending_id,
        pending,
        Expected(SECOND_FACTOR, passkeyio.binding(pending_id), pending.user_id, pending.username),
    )


async def second_factor_options(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    await passkeyio.read_body(request)
    try:
        passkeyio.require_enabled(settings)
        _, _, expected = await _pending(request, services)
        options, sealed = await passkeys.authentication_options(
            services, passkeyio.page_origin(request, settings), expected
        )
    except PasskeyError as exc:
        return passkeyio.refusal(request, settings, exc)
    return passkeyio.options_answer(request, settings, options, sealed)


async def second_factor(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    data = await passkeyio.read_body(request)
    address = client_address(request, settings)
    try:
        passkeyio.require_enabled(settings)
        pending_id, pending, expected = await _pending(request, services)
    except PasskeyError as exc:
        return passkeyio.refusal(request, settings, exc)
    try:
        verified = await passkeys.authenticate(
            services,
            passkeyio.challenge_of(request, settings),
            passkeyio.credential_field(data),
            passkeyio.page_origin(request, settings),
            address,
            expected,
        )
    except (PasskeyError, Throttled) as exc:
        passkeyio.log_failure(pending.username, exc)
        return passkeyio.refusal(request, settings, exc)
    done = await finish(request, services, pending_id, verified.methods)
    if done is None:
        return passkeyio.elsewhere(prefix_of(request, settings) + "/login", EXPIRED)
    return passkeyio.signed_in_answer(request, settings, done[1], done[0].rd)


# --- registering, renaming, removing ------------------------------------------------------------------------


async def _registrar(request: web.Request, services: Services) -> enrol.Enroller | web.Response:
    """Who may register a passkey now (http.enrol's rule for every change), else a JSON answer
    saying where to go, with the cookies that redirect carried (a step-up's pending sign-in)."""
    who = await enrol.changer(request, services, pending_ok=True)
    if not isinstance(who, web.Response):
        return who
    response = passkeyio.elsewhere(
        who.headers.get(hdrs.LOCATION, enrol.mfa_href(request, services)), "Confirm it is you first.", 401
    )
    for morsel in who.cookies.values():
        response.cookies[morsel.key] = morsel
    return response


async def register_options(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    await passkeyio.read_body(request)
    who = await _registrar(request, services)
    if isinstance(who, web.Response):
        return who
    try:
        options, sealed = await passkeys.registration_options(
            services, who.user_id, who.username, passkeyio.page_origin(request, settings)
        )
    except PasskeyError as exc:
        return passkeyio.refusal(request, settings, exc)
    return passkeyio.options_answer(request, settings, options, sealed)


async def register(request: web.Request) -> web.Response:
    """Keep the new passkey (``credential``, ``name``); a pending sign-in that had to enrol is then
    complete (the passkey with user verification is its second factor)."""
    services = request.app[SERVICES]
    settings = services.settings
    data = await passkeyio.read_body(request)
    who = await _registrar(request, services)
    if isinstance(who, web.Response):
        return who
    address = client_address(request, settings)
    try:
        registered = await passkeys.register(
            services,
            who.user_id,
            who.username,
            passkeyio.challenge_of(request, settings),
            passkeyio.credential_field(data),
            passkeyio.text_field(data, "name"),
            passkeyio.page_origin(request, settings),
            address,
        )
    except PasskeyError as exc:
        return passkeyio.refusal(request, settings, exc)
    codes = registered.recovery_codes
    if who.pending_id is not None:  # the sign-in this enrolment was for
        done = await finish(request, services, who.pending_id, registered.methods)
        if done is None:
            return passkeyio.elsewhere(prefix_of(request, settings) + "/login", EXPIRED)
        return passkeyio.signed_in_answer(request, settings, done[1], done[0].rd, codes)
    body: dict[str, Any] = {"redirect": enrol.mfa_href(request, services) + "?saved=passkey"}
    if codes:
        body["recovery_codes"] = codes
    response = json_response(body, headers=passkeyio.NO_STORE)
    passkeyio.set_challenge(response, request, settings, None)
    return response


async def rename(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/passkeys/rename`` (``credential``, ``name``), a plain form."""
    services = request.app[SERVICES]
    fields = await read_fields(request, ("credential", "name"))
    credential_id = passkeyio.credential_id(fields["credential"])
    try:
        name = passkeys.clean_name(fields["name"])
    except PasskeyError as exc:  # past the form's own checks (required, maxlength): a client's
        raise BadInput(str(exc)) from None
    who = await enrol.changer(request, services, pending_ok=False)
    if isinstance(who, web.Response):
        return who
    done = await passkeyset.rename(services, who.user_id, credential_id, name)
    return see_other(enrol.mfa_href(request, services) + ("?saved=passkey_renamed" if done else ""))


async def remove(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/passkeys/remove`` (``credential``); not the last factor when second
    factors are required."""
    services = request.app[SERVICES]
    settings = services.settings
    credential_id = passkeyio.credential_id((await read_fields(request, ("credential",)))["credential"])
    who = await enrol.changer(request, services, pending_ok=False)
    if isinstance(who, web.Response):
        return who
    if settings.second_factor == "required" and not who.enrolled.totp and who.enrolled.passkeys <= 1:
        error = _("Second factors are required here: set up another one before removing this one.")
        return await enrol.render_page(request, services, who, 409, error=error)
    address = client_address(request, settings)
    done = await passkeyset.remove(services, who.user_id, who.username, credential_id, address)
    return see_other(enrol.mfa_href(request, services) + ("?saved=passkey_removed" if done else ""))


def add_routes(app: web.Application) -> None:
    app.router.add_get(SCRIPT_PATH, script)
    app.router.add_post("/login/passkey/options", login_options)
    app.router.add_post("/login/passkey", login)
    app.router.add_post(SECOND_FACTOR_PATH + "/passkey/options", second_factor_options)
    app.router.add_post(SECOND_FACTOR_PATH + "/passkey", second_factor)
    app.router.add_post(MFA_PATH + "/passkeys/options", register_options)
    app.router.add_post(MFA_PATH + "/passkeys", register)
    app.router.add_post(MFA_PATH + "/passkeys/rename", rename)
    app.router.add_post(MFA_PATH + "/passkeys/remove", remove)
