"""``<prefix>/mfa``: a user's second factors: what is set up, TOTP set-up (a QR code and the key
as text, active once one code is confirmed), recovery codes (shown once), removal.

Who may change them (``enroller``; passkeys use the same rule): a browser signed in (its live
access cookie) whose sign-in is multi-factor when the user already has a factor (else it steps up
first), and recent (RECENT_AUTH) for any change; or, with FORWARDAUTH_SECOND_FACTOR=required (or
a rule needing a second factor), a pending sign-in of a user with none, which may enrol once and
is then signed in. Otherwise a stolen session cookie, or a password alone, could add a factor of
its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from urllib.parse import quote

import segno
from aiohttp import web
from markupsafe import Markup

from forwardauth.accounts import passkeyset, secondfactor
from forwardauth.accounts.issue import live_claims
from forwardauth.accounts.signin import Throttled
from forwardauth.core.authn import OTP, Authentication
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.http import browser
from forwardauth.http.common import client_address, html_page, read_fields, refuse_cross_site, see_other, token_of
from forwardauth.http.i18n import N_, _
from forwardauth.http.pages import mfa_page, recovery_codes_page
from forwardauth.http.secondfactor import (
    MFA_PATH,
    SECOND_FACTOR_PATH,
    begin,
    current,
    finish,
    prefix_of,
    reauth_href,
    set_signed_in_cookies,
    start_again,
)
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores.pending import Pending
from forwardauth.stores.secondfactors import Enrolled

# What a change leads to (``?saved=``): fixed sentences, never text from the URL.
SAVED = {
    "totp": N_("Your authenticator app is set up."),
    "removed": N_("Your authenticator app was removed."),
    "passkey": N_("Your passkey is set up."),
    "passkey_renamed": N_("Your passkey was renamed."),
    "passkey_removed": N_("Your passkey was removed."),
}


def saved(key: str) -> str | None:
    """The notice for ``?saved=key``, in the request's language."""
    return _(SAVED[key]) if key in SAVED else None


@dataclass(frozen=True, slots=True)
class Enroller:
    """Whose factors a request may see and change, and how it may."""

    user_id: str
    username: str
    enrolled: Enrolled
    auth: Authentication  # the sign-in's (a pending one's: the password just given)
    sid: str | None = None  # the session's; None for a pending sign-in
    pending_id: str | None = None  # a pending sign-in that must enrol (then no session yet)
    pending: Pending | None = None

    def may_change(self, now: float) -> bool:
        return self.auth.age(now) <= secondfactor.RECENT_AUTH


def mfa_href(request: web.Request, services: Services) -> str:
    return prefix_of(request, services.settings) + MFA_PATH


async def enroller(request: web.Request, services: Services) -> Enroller | web.Response:
    """Who is asking, or the answer that sends them where they can be (sign in, step up)."""
    settings = services.settings
    here = mfa_href(request, services)
    found = await current(request, services)
    if found is not None and found[1].must_enrol:
        pending_id, pending = found
        auth = Authentication.of(pending.amr, pending.auth_time)
        if auth.age(time.time()) > secondfactor.RECENT_AUTH:
            return see_other(reauth_href(request, settings, pending.rd or here))
        enrolled = await secondfactor.enrolled(services, pending.user_id)
        if enrolled.any:  # set up meanwhile (another tab): that factor it is, not a new one
            await services.pending.replace(pending_id, replace(pending, must_enrol=False))
            return see_other(prefix_of(request, settings) + SECOND_FACTOR_PATH)
        return Enroller(pending.user_id, pending.username, enrolled, auth, None, pending_id, pending)
    try:
        token = token_of(request, settings.cookie_name)
    except AmbiguousToken:
        token = None
    claims = await live_claims(services, token) if token else None
    if claims is None or claims.identity.client is not None:  # sign in (or renew), then back here
        return see_other(f"{prefix_of(request, settings)}/login?rd={quote(here, safe='')}")
    if claims.auth is None:
        return see_other(reauth_href(request, settings, here))
    user_id, username = claims.identity.subject, claims.identity.username
    enrolled = await secondfactor.enrolled(services, user_id)
    if enrolled.any and not claims.auth.multi_factor and settings.second_factor != "off":
        pending = Pending(user_id, username, claims.auth.amr, claims.auth.auth_time, rd=here, replaces_sid=claims.sid)
        return await begin(request, services, pending)
    return Enroller(user_id, username, enrolled, claims.auth, claims.sid)


def qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no request leaves the page), dark on white in
    either colour scheme so cameras read it."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff", title="QR code of the key")
    return Markup(svg)  # noqa: S704 (segno's own markup; the URI in it is escaped by segno)


async def render_page(
    request: web.Request,
    services: Services,
    who: Enroller,
    status: int = 200,
    setup: secondfactor.TotpSetup | None = None,
    error: str | None = None,
    field: str = "",
    notice: str | None = None,
) -> web.Response:
    """The /mfa page of ``who`` (http.passkeys answers with it too), with an error or a TOTP set-up."""
    settings = services.settings
    here = mfa_href(request, services)
    enrolled = who.enrolled
    values = {
        "off": settings.second_factor == "off",
        "must_enrol": who.pending is not None,
        "username": who.username,
        "totp": enrolled.totp,
        "recovery_codes": enrolled.recovery_codes,
        "passkeys": enrolled.passkeys,
        "passkey_list": await passkeyset.listed(services, who.user_id) if enrolled.passkeys else [],
        "has_factor": enrolled.totp or enrolled.passkeys > 0,
        "may_change": who.may_change(time.time()),
        "reauth_href": reauth_href(request, settings, here),
        "prefix": prefix_of(request, settings),
        "setup": setup,
        "qr": qr_svg(setup.uri) if setup else "",
        "error": error,
        "field": field,
        "notice": notice,
    }
    return html_page(mfa_page(**values), settings, status)


async def changer(request: web.Request, services: Services, pending_ok: bool) -> Enroller | web.Response:
    """For a POST: who may change their factors now (``pending_ok``: a pending sign-in may too)."""
    refuse_cross_site(request, services.settings)
    who = await enroller(request, services)
    if isinstance(who, web.Response):
        return who
    if services.settings.second_factor == "off" or (who.pending is not None and not pending_ok):
        return see_other(mfa_href(request, services))
    if not who.may_change(time.time()):
        return see_other(reauth_href(request, services.settings, mfa_href(request, services)))
    return who


async def mfa(request: web.Request) -> web.Response:
    """``GET <prefix>/mfa``: the status, and the set-up under way if any."""
    services = request.app[SERVICES]
    who = await enroller(request, services)
    if isinstance(who, web.Response):
        return who
    setup = None
    if services.settings.second_factor != "off" and who.may_change(time.time()):
        setup = await secondfactor.pending_totp(services, who.user_id, who.username)
    return await render_page(request, services, who, setup=setup, notice=saved(request.query.get("saved", "")))


async def start_totp(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/totp/start``: a new key, shown until one of its codes is confirmed."""
    services = request.app[SERVICES]
    who = await changer(request, services, pending_ok=True)
    if isinstance(who, web.Response):
        return who
    setup = await secondfactor.start_totp(services, who.user_id, who.username)
    return await render_page(request, services, who, setup=setup)


async def confirm_totp(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/totp/confirm`` (``code``): the app works; a pending sign-in completes."""
    services = request.app[SERVICES]
    settings = services.settings
    refuse_cross_site(request, settings)
    fields = await read_fields(request, ("code",))
    who = await changer(request, services, pending_ok=True)
    if isinstance(who, web.Response):
        return who
    setup = await secondfactor.pending_totp(services, who.user_id, who.username)
    if setup is None:  # confirmed in another tab, or never started
        return see_other(mfa_href(request, services))
    address = client_address(request, settings)
    try:
        codes = await secondfactor.confirm_totp(services, who.user_id, who.username, fields["code"], address)
    except Throttled as exc:
        browser.log_login_failed(who.username, exc.retry_after)
        error = _("Too many failed attempts. Try again in {seconds} seconds.").format(seconds=exc.retry_after)
        response = await render_page(request, services, who, 429, setup, error, "code")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if codes is None:
        error = _("That code does not match. Check the time on your device, and enter the newest code.")
        return await render_page(request, services, who, 400, setup, error, "code")
    if who.pending_id is not None:  # the sign-in this enrolment was for
        done = await finish(request, services, who.pending_id, (OTP,))
        if done is None:
            return start_again(request, settings)
        pending, signed = done
        if codes:
            response = html_page(recovery_codes_page(codes, pending.rd or "/", _("Continue")), settings)
        else:
            response = see_other(pending.rd or "/")
        set_signed_in_cookies(response, request, settings, signed)
        return response
    if codes:
        page = recovery_codes_page(codes, mfa_href(request, services), _("Done"), _(SAVED["totp"]))
        return html_page(page, settings)
    return see_other(mfa_href(request, services) + "?saved=totp")


async def remove_totp(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/totp/remove``; not the last factor when second factors are required."""
    services = request.app[SERVICES]
    who = await changer(request, services, pending_ok=False)
    if isinstance(who, web.Response):
        return who
    if services.settings.second_factor == "required" and who.enrolled.passkeys == 0:
        error = _("Second factors are required here: set up another one (a passkey) before removing this one.")
        return await render_page(request, services, who, 409, error=error)
    address = client_address(request, services.settings)
    await secondfactor.remove_totp(services, who.user_id, who.username, address)
    return see_other(mfa_href(request, services) + "?saved=removed")


async def new_recovery_codes(request: web.Request) -> web.Response:
    """``POST <prefix>/mfa/recovery-codes``: ten new codes, shown once; the old ones stop working."""
    services = request.app[SERVICES]
    who = await changer(request, services, pending_ok=False)
    if isinstance(who, web.Response):
        return who
    if not (who.enrolled.totp or who.enrolled.passkeys):
        return await render_page(request, services, who, 409, error=_("Set up a second factor first."))
    address = client_address(request, services.settings)
    codes = await secondfactor.regenerate_recovery(services, who.user_id, who.username, address)
    return html_page(recovery_codes_page(codes, mfa_href(request, services), _("Done")), services.settings)


def add_routes(app: web.Application) -> None:
    app.router.add_get(MFA_PATH, mfa)
    app.router.add_post(MFA_PATH + "/totp/start", start_totp)
    app.router.add_post(MFA_PATH + "/totp/confirm", confirm_totp)
    app.router.add_post(MFA_PATH + "/totp/remove", remove_totp)
    app.router.add_post(MFA_PATH + "/recovery-codes", new_recovery_codes)
