"""``<prefix>/account``: the signed-in user's own page: who they are, how this session signed in,
their live sessions (each can be signed out, or all but this one), the password and e-mail forms.

Pages for someone not signed in (forgotten password, links from e-mails) are in portal_links.
Every page starts with ``signedin.viewer`` (not signed in: off to the login page and back), every
form post with ``signedin.posted`` (Origin and CSRF token), and a change ends in a 303 back to a
page with ``?saved=<key>``: a fixed sentence of SAVED, never text from the URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from forwardauth.accounts import links, portal
from forwardauth.accounts.changes import AccountError
from forwardauth.accounts.signin import Throttled
from forwardauth.core.authn import HARDWARE_KEY, OTP, PASSWORD, RECOVERY_CODE, SOFTWARE_KEY
from forwardauth.http import browser, portal_links, portal_tokens, signedin
from forwardauth.http.common import client_address, see_other
from forwardauth.http.cookies import set_access_cookie, set_refresh_cookie
from forwardauth.http.errors import unavailable
from forwardauth.http.i18n import N_, _, translated
from forwardauth.http.login import login_action
from forwardauth.http.services import SERVICES, Services
from forwardauth.http.signedin import signed_in_form

ACCOUNT_PATH = "/account"

# What a change leads to (``?saved=``): fixed sentences, never text from the URL.
SAVED = {
    "others_ended": N_("Your other sessions are signed out."),
    "session_ended": N_("That session is signed out."),
    "password": N_("Your password is changed. Your other sessions are signed out."),
    "email_sent": N_("We sent a link to your new e-mail address: open it to confirm the change."),
}

# amr values in words (RFC 8176 names, see core.authn); "user" and "mfa" add nothing to say
METHODS = {
    PASSWORD: N_("password"),
    OTP: N_("authenticator app"),
    RECOVERY_CODE: N_("recovery code"),
    HARDWARE_KEY: N_("passkey"),
    SOFTWARE_KEY: N_("passkey"),
}


def saved(key: str) -> str | None:
    """The notice for ``?saved=key``, in the request's language."""
    return _(SAVED[key]) if key in SAVED else None


def in_words(amr: Iterable[str]) -> str:
    """How a session signed in, e.g. "password, authenticator app" (each method once, in
    METHODS' order: the password first)."""
    used = set(amr)
    words: list[str] = []
    for method, word in METHODS.items():
        if method in used and _(word) not in words:
            words.append(_(word))
    return ", ".join(words)


async def account_page(
    services: Services,
    who: signedin.Viewer,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
) -> web.Response:
    """The account page of ``who`` (an error shown above it when an action was refused)."""
    sessions = await portal.sessions_of(services, who.user.id, who.sid)
    return signedin.page(
        services,
        who,
        "account.html",
        "account",
        status,
        notice,
        error,
        user=who.user,
        how=in_words(who.auth.amr) if who.auth else "",
        signed_in_at=signedin.when(who.auth.auth_time) if who.auth else "",
        sessions=sessions,
        mfa_href=who.prefix + "/mfa",
    )


@signedin.signed_in_page
async def account(request: web.Request, services: Services, who: signedin.Viewer) -> web.Response:
    """``GET <prefix>/account``."""
    return await account_page(services, who, notice=saved(request.query.get("saved", "")))


async def end_session(request: web.Request) -> web.Response:
    """``POST <prefix>/account/sessions/end`` (``sid``): one of the user's sessions signs out; this
    one's like /logout does (cookies cleared, on to the login page)."""
    services = request.app[SERVICES]
    settings = services.settings
    form = await signed_in_form(request, services, ("sid",))
    if isinstance(form, web.Response):
        return form
    who, fields = form
    address = client_address(request, settings)
    try:
        ended = bool(fields["sid"]) and await portal.end_own_session(services, who.user.id, fields["sid"], address)
    except AccountError as exc:  # Redis went away mid-way: the page cannot say it is done
        return unavailable(request, str(exc))
    if not ended:
        error = _("That session is not one of yours, or it has already ended.")
        return await account_page(services, who, 404, error=error)
    if fields["sid"] != who.sid:
        return see_other(f"{who.prefix}{ACCOUNT_PATH}?saved=session_ended")
    response = see_other(browser.after_sign_out(login_action(request, settings), ""))
    set_access_cookie(response, settings, None)
    set_refresh_cookie(response, request, settings, None)
    return response


async def end_others(request: web.Request) -> web.Response:
    """``POST <prefix>/account/sessions/end-others``: every session but this one signs out."""
    services = request.app[SERVICES]
    form = await signed_in_form(request, services, ())
    if isinstance(form, web.Response):
        return form
    who = form[0]
    try:
        await portal.end_other_sessions(services, who.user.id, who.sid, client_address(request, services.settings))
    except AccountError as exc:
        return unavailable(request, str(exc))
    return see_other(f"{who.prefix}{ACCOUNT_PATH}?saved=others_ended")


def throttled_page(
    services: Services, who: signedin.Viewer, template: str, exc: Throttled, **values: Any
) -> web.Response:
    """A form again, 429 with Retry-After: too many wrong passwords (counted like failed logins)."""
    browser.log_login_failed(who.user.username, exc.retry_after)
    error = _("Too many failed attempts. Try again in {seconds} seconds.").format(seconds=exc.retry_after)
    response = signedin.page(services, who, template, "account", 429, error=error, **values)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def password_page(
    services: Services, who: signedin.Viewer, status: int = 200, error: str | None = None, field: str = ""
) -> web.Response:
    return signedin.page(services, who, "account_password.html", "account", status, error=error, field=field)


@signedin.signed_in_page
async def password_form(request: web.Request, services: Services, who: signedin.Viewer) -> web.Response:
    """``GET <prefix>/account/password``."""
    return password_page(services, who)


async def change_password(request: web.Request) -> web.Response:
    """``POST <prefix>/account/password``: the current password, and the new one twice. The other
    sessions end; this one stays."""
    services = request.app[SERVICES]
    form = await signed_in_form(request, services, ("current_password", "new_password", "new_password_again"))
    if isinstance(form, web.Response):
        return form
    who, fields = form
    problem = portal_links.new_password_problem(fields["new_password"], fields["new_password_again"])
    if not fields["current_password"]:
        problem = (_("Enter your current password."), "current_password")
    if problem is not None:
        return password_page(services, who, 400, *problem)
    address = client_address(request, services.settings)
    try:
        await portal.change_own_password(
            services, who.user, fields["current_password"], fields["new_password"], address, who.sid
        )
    except Throttled as exc:
        return throttled_page(services, who, "account_password.html", exc, field="current_password")
    except portal.WrongPassword:
        return password_page(services, who, 400, _("Your current password is not right."), "current_password")
    except ValueError as exc:  # the password policy's message
        return password_page(services, who, 400, translated(exc), "new_password")
    except AccountError as exc:
        return unavailable(request, str(exc))
    return see_other(f"{who.prefix}{ACCOUNT_PATH}?saved=password")


def email_page(
    services: Services,
    who: signedin.Viewer,
    status: int = 200,
    error: str | None = None,
    field: str = "",
    email: str = "",
) -> web.Response:
    mail = services.settings.smtp_url is not None
    return signedin.page(
        services, who, "account_email.html", "account", status, error=error, mail=mail, email=email, field=field
    )


@signedin.signed_in_page
async def email_form(request: web.Request, services: Services, who: signedin.Viewer) -> web.Response:
    """``GET <prefix>/account/email``: the form, when we can send mail; else who changes it."""
    return email_page(services, who)


async def change_email(request: web.Request) -> web.Response:
    """``POST <prefix>/account/email`` (``email``, ``current_password``): a link to the new address,
    which changes it once opened. Without a mail server: 409 (an administrator changes it)."""
    services = request.app[SERVICES]
    form = await signed_in_form(request, services, ("email", "current_password"))
    if isinstance(form, web.Response):
        return form
    who, fields = form
    if services.settings.smtp_url is None:
        return email_page(services, who, 409, _("E-mail addresses are changed by an administrator here."))
    email = fields["email"].strip()
    if not email:
        return email_page(services, who, 400, _("Enter your new e-mail address."), "email")
    address = client_address(request, services.settings)
    try:
        await portal.check_own_password(services, who.user, fields["current_password"], address)
        base = portal_links.email_link_base(request, services)
        await links.request_email_change(
            services, who.user, email, address, base, translations=portal_links.mail_language()
        )
    except Throttled as exc:
        return throttled_page(
            services, who, "account_email.html", exc, mail=True, email=email, field="current_password"
        )
    except portal.WrongPassword:
        return email_page(services, who, 400, _("Your current password is not right."), "current_password", email)
    except ValueError as exc:  # not an address we can send to
        return email_page(services, who, 400, translated(exc), "email", email)
    return see_other(f"{who.prefix}{ACCOUNT_PATH}?saved=email_sent")


def add_routes(app: web.Application) -> None:
    """Register the portal pages (and, from portal_links, those reached without signing in)."""
    app.router.add_get(ACCOUNT_PATH, account)
    app.router.add_post(ACCOUNT_PATH + "/sessions/end", end_session)
    app.router.add_post(ACCOUNT_PATH + "/sessions/end-others", end_others)
    app.router.add_get(ACCOUNT_PATH + "/password", password_form)
    app.router.add_post(ACCOUNT_PATH + "/password", change_password)
    app.router.add_get(ACCOUNT_PATH + "/email", email_form)
    app.router.add_post(ACCOUNT_PATH + "/email", change_email)
    portal_tokens.add_routes(app, ACCOUNT_PATH)
    portal_links.add_routes(app, ACCOUNT_PATH)
