"""The portal's pages for someone who need not be signed in: a forgotten password (asks for a
link by e-mail), and the pages the e-mailed links open (a new password; a new e-mail address).

A link's token is the proof: these pages need no session. Their forms carry an anonymous CSRF
token (formtokens: bound to a cookie of this browser). A GET never uses a token up (mail
scanners fetch links); only the form's POST does. The forgotten-password answer is the same
whether or not the account exists, and does not wait for the mail server (accounts.links sends
in the background): neither its text nor its timing tells who has an account.
"""

from __future__ import annotations

import gettext
from typing import Any

from aiohttp import web

from forwardauth.accounts import links
from forwardauth.accounts.signin import Throttled
from forwardauth.core.forwarding import public_origin
from forwardauth.core.links import link_base
from forwardauth.http import browser, formtokens, i18n
from forwardauth.http.common import bounded, client_address, html_page, read_fields, refuse_cross_site
from forwardauth.http.i18n import _, translated
from forwardauth.http.pages import render
from forwardauth.http.secondfactor import prefix_of
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import users

MAX_TOKEN = 128  # ours are 43 characters; a longer one is not looked up
RESET_PURPOSES = ("reset_password", "set_password")


def email_link_base(request: web.Request, services: Services) -> str:
    """Where e-mailed links lead (core.links: from the configuration, not the Host header alone)."""
    settings = services.settings
    origin = public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies)
    return link_base(
        settings.login_url, settings.issuer, origin, prefix_of(request, settings), settings.allowed_domains
    )


def mail_language() -> gettext.NullTranslations:
    """The e-mail in the language of the page it was asked for on."""
    return i18n.TRANSLATIONS[i18n.current()]


def new_password_problem(new: str, again: str) -> tuple[str, str] | None:
    """(the error, the field it is about) when the new password was not given twice alike."""
    if not new:
        return _("Enter a new password."), "new_password"
    if new != again:
        return _("The two new passwords are not the same."), "new_password_again"
    return None


def anonymous_page(
    request: web.Request, services: Services, template: str, status: int = 200, **values: Any
) -> web.Response:
    """``template`` (extending base.html) with a CSRF token for this browser's form cookie."""
    prefix = prefix_of(request, services.settings)
    token, fresh = formtokens.anonymous_token(request, services)
    body = render(template, prefix=prefix, csrf_token=token, **values)
    response = html_page(body, services.settings, status)
    formtokens.set_anonymous_cookie(response, request, services, fresh, prefix + "/")
    return response


def message_page(
    request: web.Request, services: Services, status: int, heading: str, text: str, link: tuple[str, str, str] | None
) -> web.Response:
    """A heading and a sentence (``link``: id, href, label of a link under it)."""
    return anonymous_page(request, services, "account_message.html", status, heading=heading, text=text, link=link)


def invalid_link(request: web.Request, services: Services, purpose: str = "reset_password") -> web.Response:
    """400: a link that is unknown, used or expired; and where to ask for a new one."""
    prefix = prefix_of(request, services.settings)
    again: tuple[str, str, str] | None = None
    if purpose == "verify_email":
        again = ("change-email", prefix + "/account/email", _("Change your e-mail address"))
    elif services.settings.smtp_url is not None:
        again = ("forgot-password", prefix + "/account/forgot", _("Ask for a new link"))
    text = _("Links in our e-mails work once, for a short time.")
    return message_page(request, services, 400, _("This link is invalid or has expired"), text, again)


def usable(token: str) -> bool:
    """Worth looking up: given, not too long, no NUL."""
    return bool(token) and len(token) <= MAX_TOKEN and bounded(token)


async def anonymous_form(request: web.Request, services: Services, names: tuple[str, ...]) -> dict[str, str]:
    """A posted form of these pages: our own origin, this browser's CSRF token (else 403)."""
    refuse_cross_site(request, services.settings)
    fields = await read_fields(request, (*names, formtokens.FIELD))
    formtokens.check_anonymous(request, services, fields)
    return fields


# --- a forgotten password -----------------------------------------------------------------------


def no_mail(request: web.Request, services: Services) -> web.Response:
    text = _("Forgotten passwords are reset by an administrator here.")
    return message_page(request, services, 404, _("Not available"), text, None)


async def forgot_form(request: web.Request) -> web.Response:
    """``GET <prefix>/account/forgot``: the form (only with a mail server)."""
    services = request.app[SERVICES]
    if services.settings.smtp_url is None:
        return no_mail(request, services)
    return anonymous_page(request, services, "account_forgot.html", login="", error=None, sent=False)


async def forgot(request: web.Request) -> web.Response:
    """``POST <prefix>/account/forgot`` (``login``: a username or an e-mail address)."""
    services = request.app[SERVICES]
    if services.settings.smtp_url is None:
        return no_mail(request, services)
    fields = await anonymous_form(request, services, ("login",))
    login = fields["login"].strip()
    if not login:
        error = _("Enter your username or e-mail address.")
        return anonymous_page(request, services, "account_forgot.html", 400, login="", error=error, sent=False)
    address = client_address(request, services.settings)
    try:
        base = email_link_base(request, services)
        await links.request_reset(services, login, address, base, translations=mail_language())
    except Throttled as exc:
        browser.log_login_failed(login[:64], exc.retry_after)
        error = _("Too many attempts. Try again in {seconds} seconds.").format(seconds=exc.retry_after)
        response = anonymous_page(request, services, "account_forgot.html", 429, login=login, error=error, sent=False)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return anonymous_page(request, services, "account_forgot.html", login="", error=None, sent=True)


# --- a new password from a link -----------------------------------------------------------------


async def reset_link(services: Services, token: str) -> tuple[users.User, str] | None:
    """The user and purpose of a usable reset or set-password link (nothing used up)."""
    if not usable(token):
        return None
    for purpose in RESET_PURPOSES:
        user = await links.link_user(services, token, purpose)
        if user is not None:
            return user, purpose
    return None


def reset_page(
    request: web.Request,
    services: Services,
    token: str,
    found: tuple[users.User, str],
    status: int = 200,
    error: str | None = None,
    field: str = "",
) -> web.Response:
    user, purpose = found
    values = {"token": token, "username": user.username, "choose": purpose == "set_password"}
    return anonymous_page(request, services, "account_reset.html", status, error=error, field=field, **values)


async def reset_form(request: web.Request) -> web.Response:
    """``GET <prefix>/account/reset?token=``: the new-password form (the link is not used up yet)."""
    services = request.app[SERVICES]
    token = request.query.get("token", "")
    found = await reset_link(services, token)
    if found is None:
        return invalid_link(request, services)
    return reset_page(request, services, token, found)


async def reset(request: web.Request) -> web.Response:
    """``POST <prefix>/account/reset``: the password set, every session ended, the link used up."""
    services = request.app[SERVICES]
    fields = await anonymous_form(request, services, ("token", "new_password", "new_password_again"))
    token = fields["token"]
    found = await reset_link(services, token)
    if found is None:
        return invalid_link(request, services)
    problem = new_password_problem(fields["new_password"], fields["new_password_again"])
    if problem is not None:
        return reset_page(request, services, token, found, 400, *problem)
    address = client_address(request, services.settings)
    try:
        await links.reset_password(services, token, fields["new_password"], address)
    except links.LinkInvalid:
        return invalid_link(request, services)
    except ValueError as exc:  # the password policy's message
        return reset_page(request, services, token, found, 400, translated(exc), "new_password")
    prefix = prefix_of(request, services.settings)
    text = _("Sign in with your new password. Every session of your account was signed out.")
    link = ("sign-in", prefix + "/login", _("Sign in"))
    return message_page(request, services, 200, _("Your password is changed"), text, link)


# --- a new e-mail address from a link -----------------------------------------------------------


async def verify_form(request: web.Request) -> web.Response:
    """``GET <prefix>/account/email/verify?token=``: a button that confirms (a GET changes nothing)."""
    services = request.app[SERVICES]
    token = request.query.get("token", "")
    user = await links.link_user(services, token, "verify_email") if usable(token) else None
    if user is None:
        return invalid_link(request, services, "verify_email")
    return anonymous_page(request, services, "account_verify.html", token=token, username=user.username)


async def verify(request: web.Request) -> web.Response:
    """``POST <prefix>/account/email/verify`` (``token``): the address is changed."""
    services = request.app[SERVICES]
    fields = await anonymous_form(request, services, ("token",))
    if not usable(fields["token"]):
        return invalid_link(request, services, "verify_email")
    try:
        user = await links.confirm_email(services, fields["token"], client_address(request, services.settings))
    except links.LinkInvalid:
        return invalid_link(request, services, "verify_email")
    prefix = prefix_of(request, services.settings)
    heading = _("Your e-mail address is changed")
    text = _("Your e-mail address is now {email}.").format(email=user.email or "")
    return message_page(request, services, 200, heading, text, ("account", prefix + "/account", _("Your account")))


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(base + "/forgot", forgot_form)
    app.router.add_post(base + "/forgot", forgot)
    app.router.add_get(base + "/reset", reset_form)
    app.router.add_post(base + "/reset", reset)
    app.router.add_get(base + "/email/verify", verify_form)
    app.router.add_post(base + "/email/verify", verify)
