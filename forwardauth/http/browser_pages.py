"""Pages for browsers beside the login form: the 403 page (``GET /forbidden``, which nginx's
``error_page 403`` asks for) and the sign-out page (``GET /logout``).

A link can lead to either, so neither changes anything: the sign-out page shows who is signed in
and a button that posts to ``/logout``, whose cross-site check (see csrf) keeps other sites from
signing a visitor out.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from forwardauth.accounts.issue import live_claims
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.core.csrf import origin_of
from forwardauth.core.forwarding import OriginalRequest, path_prefix, public_origin
from forwardauth.core.policy import ALLOW_ALL_AUTHENTICATED, Effect, Verdict
from forwardauth.core.redirects import safe_redirect
from forwardauth.core.tokens import Identity, TokenError
from forwardauth.http import browser
from forwardauth.http.authz import access_rule, original_of
from forwardauth.http.common import BadInput, html_page, see_other, token_of
from forwardauth.http.cookies import refresh_cookie
from forwardauth.http.pages import logout_page
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import sessions


async def signed_in(request: web.Request, services: Services, allow_expired: bool = False) -> Identity | None:
    """Who the browser's access cookie names, when its token is valid (and live, unless
    ``allow_expired``: the sign-out page names a session whose access cookie ran out too)."""
    try:
        token = token_of(request, services.settings.cookie_name)
    except AmbiguousToken:
        return None
    if token is None:
        return None
    if not allow_expired:
        live = await live_claims(services, token)
        return None if live is None else live.identity
    try:
        return services.tokens.verify(token, allow_expired=True).identity
    except TokenError:
        return None


async def forbidden(request: web.Request) -> web.Response:
    """The 403 page for the request nginx describes (``X-Original-*``, as for /auth): who is
    signed in, that this host is not open to them, and the ways out."""
    services = request.app[SERVICES]
    settings = services.settings
    if "text/html" not in request.headers.get("Accept", ""):  # an API client: no page
        return web.Response(status=403, text="forbidden\n", headers={"Cache-Control": "no-store"})
    original: OriginalRequest | None = None
    rule: Verdict | None = None
    try:
        original = original_of(request, settings)
        if services.policy is not ALLOW_ALL_AUTHENTICATED:
            rule = access_rule(request, services)[1]
    except BadInput:  # described in two proxies' terms: the page without the host's name
        pass
    identity = await signed_in(request, services)
    host = original.host if original else (request.host or "")
    url = original.url if original else ""
    needs_role = rule is not None and rule.effect is Effect.RESTRICTED
    return browser.forbidden_response(settings, host, url, identity, needs_role)


async def logout_form(request: web.Request) -> web.Response:
    """``GET /logout``: who is signed in, and a button to sign out (a POST: a link must not do it)."""
    services = request.app[SERVICES]
    settings = services.settings
    rd = safe_redirect(request.query.get("rd"), settings.allowed_domains) or ""
    home = origin_of(settings.login_url)  # a login host of its own holds the refresh cookie: sign out there
    if home is not None and home != public_origin(
        request.scheme, request.headers, request.remote, settings.trusted_proxies
    ):
        return see_other(browser.logout_action(settings) + (f"?rd={quote(rd, safe='')}" if rd else ""))
    prefix = path_prefix(request.headers, request.remote, settings.trusted_proxies)
    identity = await signed_in(request, services, allow_expired=True)
    username = identity.username if identity else None
    token = refresh_cookie(request, settings)
    if username is None and token is not None:
        info = await services.db.run(sessions.refresh_info, token)
        username = info.user.username if info else None
    page = logout_page(
        signed_in=identity is not None or token is not None,
        username=username,
        action=prefix + "/logout",
        rd=rd,
        login_href=prefix + "/login",
    )
    return html_page(page, settings)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/logout", logout_form)
    app.router.add_get("/forbidden", forbidden)
