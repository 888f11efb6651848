"""Sign in, renew and sign out: /login (the form and its post), /refresh and /logout.

PostgreSQL work and password hashing run in one hop to the bounded thread pool (see accounts).
A second factor, when due, comes between the password and the session (http.secondfactor).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from forwardauth.accounts import secondfactor as factors
from forwardauth.accounts.changes import end_sessions
from forwardauth.accounts.issue import rotate_refresh
from forwardauth.accounts.signin import SecondFactorDue, Throttled, new_device, sign_in
from forwardauth.config import Settings
from forwardauth.constants import BROWSER_REFRESH_GRACE, RENEWAL_LOOP_SECONDS
from forwardauth.core.forwarding import path_prefix
from forwardauth.core.redirects import safe_redirect
from forwardauth.core.tokens import AccessClaims, TokenError
from forwardauth.http import browser
from forwardauth.http.authorize import is_resume_path
from forwardauth.http.common import (
    BadInput,
    bearer_or_cookie,
    client_address,
    error_response,
    html_page,
    is_browser,
    json_response,
    read_fields,
    refuse_cross_site,
    see_other,
    token_response,
    too_many_attempts,
    wants_json,
)
from forwardauth.http.cookies import (
    device_of,
    refresh_cookie,
    set_access_cookie,
    set_device_cookie,
    set_refresh_cookie,
)
from forwardauth.http.i18n import N_, _
from forwardauth.http.pages import login_page, passkeys_offered
from forwardauth.http.secondfactor import MFA_PATH, begin, needs_of, prefix_of, step_up
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import sessions

log = logging.getLogger("forwardauth.web")  # one name for the HTTP layer's lines, as before

NO_STORE = {"Cache-Control": "no-store"}


def login_action(request: web.Request, settings: Settings) -> str:
    """The login form's action as the browser sees it (through a proxy's path prefix)."""
    return path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/login"


def login_html(
    request: web.Request,
    settings: Settings,
    rd: str,
    username: str = "",
    error: str | None = None,
    notice: str | None = None,
) -> str:
    """The login page as this request sees it: its form's action, passkeys unless they are off, and
    the forgotten-password link when there is a mail server."""
    action = login_action(request, settings)
    forgot = action.removesuffix("/login") + "/account/forgot" if settings.smtp_url else ""
    return login_page(action, rd, username, error, notice, passkeys=passkeys_offered(settings), forgot_href=forgot)


def destination(request: web.Request, settings: Settings, rd: str | None) -> str:
    """Where to go after signing in: a safe ``rd`` (see redirects), or a page of our own (a path,
    never another origin): the second-factor settings page, or an authorization request waiting
    for this sign-in (http.authorize); else ""."""
    if rd:
        prefix = prefix_of(request, settings)
        if rd == prefix + MFA_PATH or is_resume_path(rd, prefix):
            return rd
    return safe_redirect(rd, settings.allowed_domains) or ""


async def login_form(request: web.Request) -> web.Response:
    """The form; or, for a browser sent here by a protected app, a step-up (when its sign-in is
    not enough for ``rd``, see http.secondfactor) or else a silent renewal (see renew)."""
    services = request.app[SERVICES]
    settings = services.settings
    rd = destination(request, settings, request.query.get("rd"))
    if rd:
        stepped = await step_up(request, services, rd, login_action(request, settings), "reauth" in request.query)
        if stepped is not None:
            return stepped
    if rd and settings.remember_browser:
        renewed = await renew(request, services, rd)
        if renewed is not None:
            return renewed
    notice = _("You have been signed out.") if browser.signed_out(request, settings) else None
    return html_page(login_html(request, settings, rd, notice=notice), settings)


async def renew(request: web.Request, services: Services, rd: str) -> web.Response | None:
    """Sign a browser whose access cookie expired back in with its refresh cookie: rotate it,
    mint a new access cookie and go on to ``rd``. None (show the form) when that cannot be done.

    A token presented again by the same browser within REFRESH_RETRY_GRACE (its answer was lost, or
    a second tab renewed at the same moment) gets fresh cookies once (see sessions.rotate). Beyond
    that, within BROWSER_REFRESH_GRACE, the form (another tab has the new cookies), not a revoked
    session. Later, a replaced token is a copy and ends the session, as on /refresh. A token
    only just issued means the access cookie did not reach ``rd``: the page says so, rather than
    renewing in a loop until the browser gives up.
    """
    settings = services.settings
    token = refresh_cookie(request, settings)
    if token is None:
        return None
    loop_window = min(RENEWAL_LOOP_SECONDS, settings.access_ttl // 2)
    try:
        session, minted = await rotate_refresh(
            services, token, client_address(request, settings), grace=BROWSER_REFRESH_GRACE, min_age=loop_window
        )
    except sessions.RefreshError as exc:
        if not exc.too_soon:
            return None
        host = urlsplit(rd).hostname or request.host  # rd may be a page of ours (a path)
        log.warning(
            "redirect loop: a browser signed in moments ago is back on the login page for %s; the access "
            "cookie (FORWARDAUTH_COOKIE_DOMAIN=%s, FORWARDAUTH_COOKIE_SECURE=%s) does not reach it",
            host,
            settings.cookie_domain or "(host only)",
            str(settings.cookie_secure).lower(),
        )
        error = _(
            "You are signed in, but your browser did not send the sign-in cookie to {host}. "
            "FORWARDAUTH_COOKIE_DOMAIN must cover that host (and with FORWARDAUTH_COOKIE_SECURE the site "
            "must use HTTPS)."
        ).format(host=host)
        return html_page(login_html(request, settings, rd, error=error), settings)
    response = see_other(rd)
    set_access_cookie(response, settings, minted.token)
    set_refresh_cookie(response, request, settings, session.refresh_token)
    return response


async def login(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    as_json = wants_json(request)
    refuse_cross_site(request, settings)
    fields = await read_fields(request, ("username", "password", "rd", "otp"))
    if not fields["username"] or not fields["password"]:
        raise BadInput("username and password are required")
    rd = "" if as_json else destination(request, settings, fields["rd"])
    if not as_json:  # would the browser keep the cookie, and send it to rd? Else say why (browser.py)
        absolute = safe_redirect(rd, settings.allowed_domains) or ""  # (not our own page's path)
        refused = browser.refuse_undeliverable(request, settings, absolute, fields["username"])
        if refused is not None:
            return refused
    # The browser's device cookie (see regulation: known clients); a browser without one gets one.
    device = device_of(request, settings) or (None if as_json else new_device())
    address, agent = client_address(request, settings), request.headers.get(hdrs.USER_AGENT)
    try:
        signed = await sign_in(
            services,
            fields["username"],
            fields["password"],
            address,
            browser.log_login_failed,
            device=device,
            second_factor_wanted=bool(rd) and needs_of(services, rd)[0],
            user_agent=agent,
        )
        if isinstance(signed, SecondFactorDue) and as_json:
            signed = await factors.with_code(services, signed, fields["otp"], address, user_agent=agent)
    except Throttled as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        if as_json:
            return too_many_attempts(exc, {})
        error = _("Too many failed attempts. Try again in {seconds} seconds.").format(seconds=exc.retry_after)
        page = login_html(request, settings, rd, fields["username"], error)
        response = html_page(page, settings, status=429)
        response.headers.update(headers)
        return response
    except factors.SecondFactorRequired as exc:  # JSON only
        return error_response(401, "second_factor_required", str(exc))
    if signed is None:
        message = N_("Wrong username or password.")
        if as_json:
            return error_response(401, "invalid_credentials", message)
        page = login_html(request, settings, rd, fields["username"], _(message))
        return html_page(page, settings, status=401)
    if isinstance(signed, SecondFactorDue):  # a browser: on to the second factor (or enrolment)
        return await begin(request, services, factors.pending_of(signed, rd), signed.device)
    session, minted = signed.session, signed.access
    if as_json:
        return token_response(settings, minted, session.refresh_token, NO_STORE)
    response = see_other(rd or "/")
    set_access_cookie(response, settings, minted.token)
    if settings.remember_browser:
        set_refresh_cookie(response, request, settings, session.refresh_token)
    if signed.device is not None:  # a new value of ours: a browser that keeps signing in stays known
        set_device_cookie(response, request, settings, signed.device)
    return response


async def refresh(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    fields = await read_fields(request, ("refresh_token",))
    try:
        session, minted = await rotate_refresh(
            services, fields["refresh_token"], client_address(request, services.settings)
        )
    except sessions.RefreshError:
        return error_response(401, "invalid_grant", "refresh token is invalid, expired or revoked")
    return token_response(services.settings, minted, session.refresh_token, NO_STORE)


async def logout(request: web.Request) -> web.Response:
    """End the session of the presented access token (or refresh token), idempotently.

    PostgreSQL first (the refresh tokens die: nothing new can be minted), then Redis (the access
    tokens). If Redis refuses, the revocation is queued until it takes writes again and the answer
    says so (202, ``revocation_pending``): never a 503 after the session was ended. A client's own
    token (client_credentials) has no session: only that token is revoked, in Redis, or a 503.
    """
    services = request.app[SERVICES]
    refuse_cross_site(request, services.settings)
    address = client_address(request, services.settings)
    fields = await read_fields(request, ("refresh_token", "rd"))
    claims: AccessClaims | None = None
    token = bearer_or_cookie(request, services.settings.cookie_name)
    if token:
        try:
            claims = services.tokens.verify(token, allow_expired=True)
        except TokenError:
            claims = None
    client_token = claims is not None and claims.identity.client is not None
    if claims is not None and client_token:
        await services.revocations.revoke(claims.sid, claims.jti)  # its sid groups the client's other tokens
    # The token's session, else the posted refresh token's; and the browser's refresh cookie's,
    # which may be another session (signed in again on this host since).
    found: list[str | None] = [claims.sid if claims and not client_token else None]
    if claims is None and fields["refresh_token"]:
        found.append(await services.db.run(sessions.family_of, fields["refresh_token"]))
    browser_refresh = refresh_cookie(request, services.settings)
    if browser_refresh:
        found.append(await services.db.run(sessions.family_of, browser_refresh))
    ended = sorted({sid for sid in found if sid is not None})
    # with the OIDC clients' sessions opened from them, and their back-channel logouts
    revoked = await end_sessions(services, ended, client_ip=address)
    if is_browser(request):  # a sign-out button: back to the login page, saying so (and rd: switch user)
        rd = safe_redirect(fields["rd"], services.settings.allowed_domains) or ""
        response = see_other(browser.after_sign_out(login_action(request, services.settings), rd))
    else:
        body = {"logged_out": bool(ended) or client_token}
        response = json_response(body) if revoked else json_response({**body, "revocation_pending": True}, 202)
    set_access_cookie(response, services.settings, None)
    set_refresh_cookie(response, request, services.settings, None)
    return response
