"""The console's personal access tokens of a user (``/admin/users/{username}``, its "Personal
access tokens" section): create one for the user (a service user's, typically; the token shown
once on admin_secret.html, made ``created_by`` the administrator) and revoke one.

accounts.pats audits both (``pat_created``, ``pat_revoked``, with the administrator in ``by``).
A token id that is not one of the user's is a 404 on the user's page; a user who does not exist,
the users page with a 404 (admin_users.user_page).
"""

from __future__ import annotations

from aiohttp import web

from forwardauth.accounts import pats
from forwardauth.http import pat_pages
from forwardauth.http.admin_pages import Route, secret_page, user_href
from forwardauth.http.admin_users import BACK, refused, user_page
from forwardauth.http.common import bounded, client_address, see_other
from forwardauth.http.errors import unavailable
from forwardauth.http.i18n import _, translated
from forwardauth.http.services import Services
from forwardauth.http.signedin import Viewer, posted
from forwardauth.stores import users


async def create(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/users/{username}/tokens/new`` (``name``, ``expires``, ``scopes``)."""
    username = request.match_info["username"]
    fields = await posted(request, services, who, pat_pages.FIELDS)
    if not bounded(username):  # no user's name (and PostgreSQL refuses NUL)
        return await user_page(request, services, who, username)
    address = client_address(request, services.settings)
    try:
        name, scopes, ttl = pat_pages.asked(fields)
        info, token = await pats.create(services, username, name, scopes, ttl, who.user.username, address)
    except pats.PatError as exc:
        return await user_page(request, services, who, username, 400, translated(exc), fields)
    except users.UserError as exc:
        return await refused(request, services, who, username, exc)
    except pats.RedisUnavailable as exc:
        return unavailable(request, str(exc))
    back = user_href(who, username)
    return secret_page(
        services, who, "users", kind="pat", secret=token, holder=username, back=back, token_name=info.name
    )


async def revoke(request: web.Request, services: Services, who: Viewer) -> web.Response:
    """``POST /admin/users/{username}/tokens/{token_id}/revoke``: at once on every worker."""
    username, token_id = request.match_info["username"], request.match_info["token_id"]
    await posted(request, services, who, ())
    if not bounded(username):
        return await user_page(request, services, who, username)
    address = client_address(request, services.settings)
    try:
        done = pat_pages.plausible_id(token_id) and await pats.revoke(
            services, username, token_id, who.user.username, address
        )
    except users.UserError as exc:
        return await refused(request, services, who, username, exc)
    except pats.RedisUnavailable as exc:
        return unavailable(request, str(exc))
    if not done:
        return await user_page(request, services, who, username, 404, _("The user has no such token."))
    return see_other(f"{user_href(who, username)}?saved=token_revoked")


# Any character in a name or an id, line breaks too (``.`` would leave those to aiohttp's plain 404).
TOKENS = r"/admin/users/{username:[\s\S]+}/tokens"
ROUTES: list[Route] = [
    ("POST", TOKENS + "/new", create, BACK),
    ("POST", TOKENS + r"/{token_id:[\s\S]+}/revoke", revoke, BACK),
]
