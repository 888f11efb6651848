"""What the admin console's pages share (http.admin_users, http.admin_system): the handlers'
shape, the notices of ``?saved=``, strict query values, links, the acting administrator, times,
and the page of a one-time secret.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from forwardauth.accounts.admin import Actor, AdminError
from forwardauth.core.forwarding import public_origin
from forwardauth.core.links import link_base
from forwardauth.http.common import bounded, client_address
from forwardauth.http.i18n import N_, _
from forwardauth.http.services import Services
from forwardauth.http.signedin import Viewer, page

# A console handler: called only by http.admin's access check, with the administrator.
Handler = Callable[[web.Request, Services, Viewer], Awaitable[web.Response]]
# (method, path, handler, for a POST: the page it was posted from, as a path template of the
# route's values). That page is where a sign-in or step-up the POST needs leads back to.
Route = tuple[str, str, Handler, str]

# What an action leads to (``?saved=``): fixed sentences, never text from the URL.
SAVED = {
    "created": N_("The account was created. A link to choose a password was e-mailed to it."),
    "disabled": N_("The account is disabled and its sessions ended."),
    "enabled": N_("The account is enabled."),
    "roles": N_("The roles were saved."),
    "mfa_reset": N_("The second factors were removed."),
    "sessions_ended": N_("Every session of the account was ended."),
    "session_ended": N_("The session was ended."),
    "client_created": N_("The client was added."),
    "client_disabled": N_("The client is disabled: every token it held stopped working."),
    "client_enabled": N_("The client is enabled."),
    "token_revoked": N_("The token is revoked: it stops working at once."),
    "key_rotated": N_("A new signing key is in use. Tokens signed with the old one stay valid until they expire."),
}


class BadFilter(ValueError):
    """A query or path value a page cannot take; the message names the field (a 400 page)."""


def query_value(values: Mapping[str, str], name: str) -> str:
    """``values[name]`` ("" when absent) if it is a value we take (bounded: no NUL, not huge)."""
    value = values.get(name, "")
    if not bounded(value):
        raise BadFilter(_("{field}: too long, or holds a NUL character.").format(field=name))
    return value


def refusal_status(exc: Exception) -> int:
    """A store's refusal (users.UserError, clients.ClientError: bad input): 400; the console's
    (AdminError: not possible now, e.g. locking oneself out): 409."""
    return 409 if isinstance(exc, AdminError) else 400


def saved(request: web.Request) -> str | None:
    """The notice of ``?saved=`` (None for an unknown key), in the request's language."""
    key = request.query.get("saved", "")
    return _(SAVED[key]) if key in SAVED else None


def user_href(who: Viewer, username: str) -> str:
    """A user's page (any character a username may hold, ``/`` too, quoted)."""
    return f"{who.prefix}/admin/users/{quote(username, safe='')}"


def actor(request: web.Request, services: Services, who: Viewer) -> Actor:
    """The administrator acting, for the audit trail."""
    return Actor(who.user.id, who.user.username, client_address(request, services.settings))


def links_base(request: web.Request, services: Services, who: Viewer) -> str:
    """Where links to our pages lead (see core.links: from the configuration, not the Host)."""
    settings = services.settings
    origin = public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies)
    return link_base(settings.login_url, settings.issuer, origin, who.prefix, settings.allowed_domains)


def console_page(
    services: Services, who: Viewer, template: str, section: str, status: int = 200, **values: Any
) -> web.Response:
    """A console page (signedin.page: ``notice``, ``error``, ...) with ``when`` for its times."""
    return page(services, who, template, section, status, **values)


def console_view(
    request: web.Request, services: Services, who: Viewer, template: str, section: str, status: int = 200, **values: Any
) -> web.Response:
    """A console page answering ``request``, with ``user_href`` for links to users' pages and, on a
    GET, the notice of ``?saved=`` (a page shown again after a refused POST has only its error)."""
    values.setdefault("notice", saved(request) if request.method == "GET" else None)
    return console_page(services, who, template, section, status, user_href=lambda name: user_href(who, name), **values)


def secret_page(services: Services, who: Viewer, section: str, **values: Any) -> web.Response:
    """A one-time secret (admin_secret.html: ``kind`` "link", "client_secret" or "pat"), shown once:
    a 200 page, never cached (html_page's headers), never in a URL."""
    return console_page(services, who, "admin_secret.html", section, notice=None, **values)
