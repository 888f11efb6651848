"""``<prefix>/account/tokens``: the signed-in user's personal access tokens (issue 17): the list
(never the tokens), revoke, and create (the token shown once, on the page answering the form).

Creating needs a sign-in at most RECENT_AUTH old, as changing second factors does (http.enrol):
a stolen session cookie should not be able to mint a token that outlives the session by months.
Revoking needs none: it only takes access away. A token id that is not one of the user's is a 404,
whoever's it is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web

from forwardauth.accounts import pats, secondfactor
from forwardauth.http import pat_pages, signedin
from forwardauth.http.common import client_address, see_other
from forwardauth.http.errors import unavailable
from forwardauth.http.i18n import N_, _, translated
from forwardauth.http.secondfactor import reauth_href
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import users

SECTION = "tokens"
SAVED = {"revoked": N_("The token is revoked: it stops working at once.")}


def recent(who: signedin.Viewer) -> bool:
    """Whether ``who``'s sign-in is recent enough to create a token."""
    return who.auth is not None and who.auth.age(time.time()) <= secondfactor.RECENT_AUTH


async def tokens_page(
    request: web.Request,
    services: Services,
    who: signedin.Viewer,
    status: int = 200,
    error: str | None = None,
    form: Mapping[str, str] | None = None,
) -> web.Response:
    """The tokens page (``form``: the values posted, kept after an error)."""
    here = f"{who.prefix}/account/tokens"
    tokens = await pats.list_for(services, who.user.username)
    notice = request.query.get("saved", "") if request.method == "GET" else ""
    return signedin.page(
        services,
        who,
        "account_tokens.html",
        SECTION,
        status,
        _(SAVED[notice]) if notice in SAVED else None,
        error,
        recent=recent(who),
        reauth_href=reauth_href(request, services.settings, here),
        **pat_pages.table_values(tokens, form, services.settings),
    )


@signedin.signed_in_page
async def tokens(request: web.Request, services: Services, who: signedin.Viewer) -> web.Response:
    """``GET <prefix>/account/tokens``."""
    return await tokens_page(request, services, who)


async def create(request: web.Request) -> web.Response:
    """``POST <prefix>/account/tokens/new`` (``name``, ``expires``, ``scopes``): the token, shown
    once; a sign-in older than RECENT_AUTH: 403, the page with a link to sign in again."""
    services = request.app[SERVICES]
    form = await signedin.signed_in_form(request, services, pat_pages.FIELDS)
    if isinstance(form, web.Response):
        return form
    who, fields = form
    if not recent(who):
        error = _("Sign in again to create a token: your sign-in is more than 15 minutes old.")
        return await tokens_page(request, services, who, 403, error, fields)
    username = who.user.username
    try:
        name, scopes, ttl = pat_pages.asked(fields)
        info, token = await pats.create(
            services, username, name, scopes, ttl, username, client_address(request, services.settings)
        )
    except (pats.PatError, users.UserError) as exc:
        return await tokens_page(request, services, who, 400, translated(exc), fields)
    except pats.RedisUnavailable as exc:
        return unavailable(request, str(exc))
    return signedin.page(
        services, who, "account_token_new.html", SECTION, secret=token, holder=username, token_name=info.name
    )


async def revoke(request: web.Request) -> web.Response:
    """``POST <prefix>/account/tokens/{token_id}/revoke``: at once on every worker; 404 for a
    token that is not the user's."""
    services = request.app[SERVICES]
    form = await signedin.signed_in_form(request, services, ())
    if isinstance(form, web.Response):
        return form
    who = form[0]
    token_id = request.match_info["token_id"]
    address = client_address(request, services.settings)
    try:
        done = pat_pages.plausible_id(token_id) and await pats.revoke(
            services, who.user.username, token_id, who.user.username, address
        )
    except pats.RedisUnavailable as exc:
        return unavailable(request, str(exc))
    if not done:
        return await tokens_page(request, services, who, 404, _("You have no such token."))
    return see_other(f"{who.prefix}/account/tokens?saved=revoked")


def add_routes(app: web.Application, account_path: str) -> None:
    app.router.add_get(account_path + "/tokens", tokens)
    app.router.add_post(account_path + "/tokens/new", create)
    app.router.add_post(account_path + r"/tokens/{token_id:[\s\S]+}/revoke", revoke)
