"""The step after the password (``<prefix>/login/second-factor``) and step-up on the login page.

A right password for which a second factor is due opens no session: what it proved is kept in
Redis as a ``Pending`` sign-in (stores.pending), the browser holding only its id in a short-lived
cookie, and the browser is sent here (or, with nothing enrolled, to enrolment: http.enrol). A code
completes it (accounts.secondfactor.complete): a new session, its cookies, then ``rd``.

Step-up: a browser sent to ``GET /login?rd=`` by a rule wanting a second factor or a recent
sign-in (``second_factor``, ``max_auth_age``) is judged before silent renewal. A sign-in too old
gets the password form again (username filled in); one lacking the second factor goes on to it,
and its new session replaces the old one. Renewing that new session then satisfies the rule, so
``/auth`` does not send the browser back: no loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import hdrs, web

from forwardauth.accounts import secondfactor
from forwardauth.accounts.issue import live_claims
from forwardauth.accounts.signin import SignedIn, Throttled
from forwardauth.config import Settings
from forwardauth.core.authn import Authentication
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.core.forwarding import path_prefix
from forwardauth.core.policy import requirements_of
from forwardauth.http import browser
from forwardauth.http.common import client_address, html_page, read_fields, refuse_cross_site, see_other, token_of
from forwardauth.http.cookies import (
    pending_of,
    refresh_cookie,
    set_access_cookie,
    set_device_cookie,
    set_pending_cookie,
    set_refresh_cookie,
)
from forwardauth.http.i18n import N_, _
from forwardauth.http.pages import login_page, passkeys_offered, second_factor_page
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import sessions
from forwardauth.stores.pending import PENDING_TTL, Pending

SECOND_FACTOR_PATH = "/login/second-factor"
MFA_PATH = "/mfa"
SIGN_IN_AGAIN = N_("Sign in again to continue.")


def prefix_of(request: web.Request, settings: Settings) -> str:
    """Where forwardauth's pages are, as the browser sees them (a proxy's path prefix, or "")."""
    return path_prefix(request.headers, request.remote, settings.trusted_proxies)


def reauth_href(request: web.Request, settings: Settings, rd: str) -> str:
    """The login page asking for the password again, then back to ``rd``."""
    return f"{prefix_of(request, settings)}/login?rd={quote(rd, safe='')}&reauth=1"


# --- pending sign-ins ---------------------------------------------------------------------------


async def begin(request: web.Request, services: Services, pending: Pending, device: str | None = None) -> web.Response:
    """Keep ``pending`` and send the browser to its next step: the second-factor page, or
    enrolment when it has none. ``device``: a new device cookie to set (see accounts.signin)."""
    settings = services.settings
    pending_id = await services.pending.put(pending, PENDING_TTL)
    response = see_other(prefix_of(request, settings) + (MFA_PATH if pending.must_enrol else SECOND_FACTOR_PATH))
    set_pending_cookie(response, request, settings, pending_id, PENDING_TTL)
    if device is not None:
        set_device_cookie(response, request, settings, device)
    return response


async def current(request: web.Request, services: Services) -> tuple[str, Pending] | None:
    """The browser's pending sign-in (its id and what it proved), if it is still there."""
    pending_id = pending_of(request, services.settings)
    if pending_id is None:
        return None
    pending = await services.pending.get(pending_id)
    return None if pending is None else (pending_id, pending)


def set_signed_in_cookies(
    response: web.StreamResponse, request: web.Request, settings: Settings, signed: SignedIn
) -> None:
    """The cookies of a completed sign-in; the pending one is spent."""
    set_access_cookie(response, settings, signed.access.token)
    if settings.remember_browser:
        set_refresh_cookie(response, request, settings, signed.session.refresh_token)
    set_pending_cookie(response, request, settings, None)


def start_again(request: web.Request, settings: Settings) -> web.Response:
    """The pending sign-in is gone (expired, completed elsewhere, the user disabled): the form."""
    response = see_other(f"{prefix_of(request, settings)}/login")
    set_pending_cookie(response, request, settings, None)
    return response


async def finish(
    request: web.Request, services: Services, pending_id: str, methods: tuple[str, ...]
) -> tuple[Pending, SignedIn] | None:
    """Complete a pending sign-in once ``methods`` were proved (for a code, or a passkey); None
    when it was completed meanwhile or its user disabled."""
    pending = await services.pending.take(pending_id)
    if pending is None:
        return None
    try:
        address, agent = client_address(request, services.settings), request.headers.get(hdrs.USER_AGENT)
        signed = await secondfactor.complete(services, pending, methods, address, user_agent=agent)
    except secondfactor.SignInExpired:
        return None
    return pending, signed


# --- the page ----------------------------------------------------------------------------------


async def _page(
    request: web.Request,
    services: Services,
    pending: Pending,
    status: int = 200,
    error: str | None = None,
    field: str = "",
) -> web.Response:
    settings = services.settings
    prefix = prefix_of(request, settings)
    enrolled = await secondfactor.enrolled(services, pending.user_id)
    body = second_factor_page(
        action=prefix + SECOND_FACTOR_PATH,
        username=pending.username,
        totp=enrolled.totp,
        recovery=enrolled.recovery_codes > 0,
        login_href=prefix + "/login",
        error=error,
        field=field,
        passkeys=enrolled.passkeys,
        prefix=prefix,
    )
    return html_page(body, settings, status)


async def second_factor_form(request: web.Request) -> web.Response:
    """``GET <prefix>/login/second-factor``: the codes the user can give (TOTP, recovery code)."""
    services = request.app[SERVICES]
    found = await current(request, services)
    if found is None:
        return start_again(request, services.settings)
    if found[1].must_enrol:
        return see_other(prefix_of(request, services.settings) + MFA_PATH)
    return await _page(request, services, found[1])


async def second_factor(request: web.Request) -> web.Response:
    """``POST <prefix>/login/second-factor``: ``code`` (TOTP) or ``recovery_code``."""
    services = request.app[SERVICES]
    settings = services.settings
    refuse_cross_site(request, settings)
    fields = await read_fields(request, ("code", "recovery_code"))
    found = await current(request, services)
    if found is None:
        return start_again(request, settings)
    pending_id, pending = found
    if pending.must_enrol:
        return see_other(prefix_of(request, settings) + MFA_PATH)
    field = "code" if fields["code"].strip() or not fields["recovery_code"].strip() else "recovery_code"
    if not fields[field].strip():
        return await _page(request, services, pending, 400, _("Enter the code."), field)
    address = client_address(request, settings)
    try:
        method = await secondfactor.check_code(services, pending.user_id, pending.username, fields[field], address)
    except Throttled as exc:
        browser.log_login_failed(pending.username, exc.retry_after)
        error = _("Too many failed attempts. Try again in {seconds} seconds.").format(seconds=exc.retry_after)
        response = await _page(request, services, pending, 429, error, field)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if not method:
        browser.log_login_failed(pending.username)
        if field == "code":
            error = _("That code is wrong or was already used.")
        else:
            error = _("That recovery code is not valid.")
        return await _page(request, services, pending, 401, error, field)
    done = await finish(request, services, pending_id, (method,))
    if done is None:
        return start_again(request, settings)
    response = see_other(done[0].rd or "/")
    set_signed_in_cookies(response, request, settings, done[1])
    return response


# --- step-up on the login page -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """The sign-in a browser holds: its refresh cookie's session, else its live access cookie's."""

    user_id: str
    username: str
    sid: str
    auth: Authentication | None  # None: a token from before sessions remembered it

    def stepping_up(self, rd: str, must_enrol: bool) -> Pending:
        """A pending sign-in adding a second factor to this session (which it replaces), then ``rd``."""
        assert self.auth is not None
        return Pending(
            user_id=self.user_id,
            username=self.username,
            amr=self.auth.amr,
            auth_time=self.auth.auth_time,
            rd=rd,
            replaces_sid=self.sid,
            must_enrol=must_enrol,
        )


async def browser_session(request: web.Request, services: Services) -> BrowserSession | None:
    settings = services.settings
    token = refresh_cookie(request, settings)
    if token is not None:
        info = await services.db.run(sessions.refresh_info, token)
        if info is not None and info.client_id is None:
            return BrowserSession(info.user.id, info.user.username, info.sid, info.auth)
    try:
        access = token_of(request, settings.cookie_name)
    except AmbiguousToken:
        return None
    claims = await live_claims(services, access) if access else None
    if claims is None or claims.identity.client is not None:
        return None
    return BrowserSession(claims.identity.subject, claims.identity.username, claims.sid, claims.auth)


def needs_of(services: Services, rd: str) -> tuple[bool, int | None]:
    """What the rules ask of a sign-in for ``rd`` (a checked absolute URL; else nothing)."""
    parts = urlsplit(rd)
    if not parts.scheme or not parts.netloc:
        return False, None
    uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return requirements_of(services.policy, parts.scheme, parts.netloc, uri)


def _sign_in_again(action: str, rd: str, username: str, settings: Settings) -> str:
    """The login page for a sign-in too old for ``rd``: the password again, or a passkey."""
    return login_page(action, rd, username, notice=_(SIGN_IN_AGAIN), passkeys=passkeys_offered(settings))


async def step_up(
    request: web.Request, services: Services, rd: str, action: str, reauth: bool = False
) -> web.Response | None:
    """For ``GET /login?rd=``: the answer when the browser's sign-in is not enough for ``rd``
    (or ``reauth`` asks for the password again), else None (renew or show the form as usual)."""
    settings = services.settings
    second, max_age = needs_of(services, rd)
    if not (second or max_age is not None or reauth):
        return None
    held = await browser_session(request, services)
    if held is None:
        return None  # the form; the sign-in it posts is judged against rd then
    now = time.time()
    too_old = held.auth is None or (max_age is not None and held.auth.age(now) > max_age)
    if reauth or too_old:
        return html_page(_sign_in_again(action, rd, held.username, settings), settings)
    assert held.auth is not None
    if not second or held.auth.multi_factor:
        return None
    if settings.second_factor == "off":
        error = (
            f"{urlsplit(rd).hostname} needs a second factor, but second factors are off on this server "
            "(FORWARDAUTH_SECOND_FACTOR). Ask its administrator."
        )
        return html_page(login_page(action=action, rd=rd, username=held.username, error=error), settings, 403)
    enrolled = await secondfactor.enrolled(services, held.user_id)
    if not enrolled.any and held.auth.age(now) > secondfactor.RECENT_AUTH:
        # Enrolling on an old session would let whoever holds its cookie add their own factor.
        return html_page(_sign_in_again(action, rd, held.username, settings), settings)
    return await begin(request, services, held.stepping_up(rd, must_enrol=not enrolled.any))
