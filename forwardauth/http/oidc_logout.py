"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): ``GET``/``POST /oauth/logout``,
discovery's ``end_session_endpoint``.

It ends the browser's session, the one both kinds of app share, with the sessions OIDC clients
opened from it (their back-channel logouts queued: accounts.authorize.log_out), and clears the
cookies, so ``/auth`` refuses them at once. The sessions are those the browser's cookies name, and
the one the ``id_token_hint`` names (its ``sid``) when it is of the same user or the browser has none.

A link can lead here from anywhere, so a browser holding a live session is asked to confirm
(a button posting back here, checked against cross-site posts) unless the ``id_token_hint``, one
of our ID tokens, names that very session. The browser goes back to ``post_logout_redirect_uri``
(with ``state``) only when it is registered, exactly, for the client the hint or ``client_id``
names; otherwise it sees the signed-out page. An unreadable hint is a page, never a redirect.
"""

from __future__ import annotations

from aiohttp import web

from forwardauth.accounts import authorize as accounts
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.core.idtokens import IdTokenError, IdTokenHint, IdTokenService
from forwardauth.core.oidc import redirect_uri_registered, response_url
from forwardauth.core.tokens import TokenError
from forwardauth.http.authorize import error_page, onward
from forwardauth.http.common import (
    BadInput,
    bounded,
    client_address,
    html_page,
    posted_form,
    refuse_cross_site,
    see_other,
    token_of,
)
from forwardauth.http.cookies import refresh_cookie, set_access_cookie, set_refresh_cookie
from forwardauth.http.i18n import N_
from forwardauth.http.pages import logged_out_page
from forwardauth.http.secondfactor import browser_session, prefix_of
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import sessions

LOGOUT_PATH = "/oauth/logout"
PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")


async def _params(request: web.Request) -> dict[str, str]:
    """The parameters we use (the query, or a posted form), each once and a bounded string."""
    if request.method == "POST":
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadInput("post the logout request as application/x-www-form-urlencoded", 415)
        source = await posted_form(request)
    else:
        source = request.query  # type: ignore[assignment]
    params: dict[str, str] = {}
    for name in (*PARAMS, "confirm"):
        values = source.getall(name, [])
        if len(values) > 1:
            raise BadInput(f"{name} is given more than once")
        if values:
            value = values[0]
            if not isinstance(value, str) or not bounded(value):
                raise BadInput(f"{name} is too long or not text")
            params[name] = value
    return params


async def _cookie_sessions(request: web.Request, services: Services) -> list[str]:
    """Every session the browser's cookies name, live or not: the access cookie's (expired too)
    and the refresh cookie's, which may be another (signed in again on this host since)."""
    settings = services.settings
    found: list[str] = []
    try:
        token = token_of(request, settings.cookie_name)
    except AmbiguousToken:  # two access cookies: the refresh cookie still says
        token = None
    if token:
        try:
            claims = services.tokens.verify(token, allow_expired=True)
            if claims.identity.client is None:
                found.append(claims.sid)
        except TokenError:
            pass
    refresh = refresh_cookie(request, settings)
    if refresh:
        sid = await services.db.run(sessions.family_of, refresh)
        if sid is not None:
            found.append(sid)
    return list(dict.fromkeys(found))


async def _target(services: Services, params: dict[str, str], hint: IdTokenHint | None) -> str | None:
    """Where to send the browser afterwards: a post-logout URI registered for the named client."""
    uri = params.get("post_logout_redirect_uri")
    client_id = params.get("client_id") or (hint.client_id if hint else None)
    if not uri or not client_id:
        return None
    client = await accounts.find_client(services, client_id)
    if client is None or client.disabled or not redirect_uri_registered(uri, client.post_logout_redirect_uris):
        return None
    return response_url(uri, {"state": params.get("state")})


async def end_session(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    params = await _params(request)
    confirmed = request.method == "POST" and params.get("confirm") == "1"
    if confirmed:  # our own page's button: never another site's form
        refuse_cross_site(request, settings)
    hint: IdTokenHint | None = None
    if params.get("id_token_hint"):
        try:
            hint = IdTokenService(services.tokens).verify_id_token_hint(params["id_token_hint"])
        except IdTokenError:
            return error_page(
                services, "invalid_request", N_("The sign-out request has a token this server did not issue.")
            )
    if hint is not None and params.get("client_id") and params["client_id"] not in hint.audience:
        return error_page(services, "invalid_request", N_("The sign-out request names two different applications."))
    client_id = params.get("client_id") or (hint.client_id if hint else None)
    held = await browser_session(request, services)
    prefix = prefix_of(request, settings)
    if held is not None and not confirmed and (hint is None or hint.sid != held.sid):
        fields = [(name, params[name]) for name in PARAMS if name in params]
        page = logged_out_page(
            confirm=True,
            login_href=prefix + "/login",
            username=held.username,
            client=client_id,
            action=prefix + LOGOUT_PATH,
            fields=fields,
        )
        return html_page(page, settings)
    ended = await _cookie_sessions(request, services)
    if held is not None:
        ended.append(held.sid)
    if hint is not None and hint.sid and (held is None or hint.subject == held.user_id):
        ended.append(hint.sid)  # the relying party's session of this user (from another browser too)
    ended = list(dict.fromkeys(ended))
    if ended:
        user_id = held.user_id if held else (hint.subject if hint else None)
        username = held.username if held else None
        await accounts.log_out(services, ended, user_id, username, client_address(request, settings), client_id)
    target = await _target(services, params, hint)
    if target is None:
        response = html_page(logged_out_page(confirm=False, login_href=prefix + "/login"), settings)
    elif confirmed:
        response = onward(services, target, N_("Signed out"))
    else:
        response = see_other(target)
    set_access_cookie(response, settings, None)
    set_refresh_cookie(response, request, settings, None)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get(LOGOUT_PATH, end_session, allow_head=False)  # a HEAD would sign out
    app.router.add_post(LOGOUT_PATH, end_session)
