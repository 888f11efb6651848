"""OpenID Connect's discovery document (Discovery 1.0) and UserInfo endpoint (Core 5.3).

UserInfo takes the access token as a Bearer credential only (RFC 6750: the header, or the form
body of a POST), never the browser's cookie: it answers the client, not the browser. Its errors
are RFC 6750 3's, in ``WWW-Authenticate`` (with the same in a JSON body). The claims come from
the user's row as it is now, not from the token: a changed e-mail or role shows at once.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from forwardauth.accounts.issue import live_claims
from forwardauth.core import oidc
from forwardauth.core.credentials import AmbiguousToken, access_token
from forwardauth.http.common import BadInput, bounded, json_response, posted_form
from forwardauth.http.oauth_errors import NO_STORE
from forwardauth.http.services import SERVICES
from forwardauth.stores import clients, users

FORM = "application/x-www-form-urlencoded"
REALM = 'Bearer realm="forwardauth"'
PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


async def openid_configuration(request: web.Request) -> web.Response:
    """The provider metadata; 404 while the signing key is HS256 (no ID token can be issued)."""
    services = request.app[SERVICES]
    try:
        body = oidc.discovery(services.settings, services.tokens.ring, clients.GRANT_TYPES)
    except ValueError as exc:
        return json_response({"error": "not_found", "error_description": str(exc)}, status=404)
    return json_response(body, headers=PUBLIC_CACHE)


def bearer_error(status: int, error: str | None, description: str, scope: str | None = None) -> web.Response:
    """An RFC 6750 3 answer. ``error`` None: the request had no token, so the challenge names no
    error (3.1); the body still says what is missing. The descriptions are ours: no quotes."""
    challenge = REALM
    if error is not None:
        challenge += f', error="{error}", error_description="{description}"'
    if scope is not None:
        challenge += f', scope="{scope}"'
    body = {"error": error or "invalid_token", "error_description": description}
    return json_response(body, status=status, headers={**NO_STORE, hdrs.WWW_AUTHENTICATE: challenge})


async def bearer_token(request: web.Request) -> str | None:
    """The access token of a UserInfo request: the Authorization header, or (POST) the form's
    ``access_token`` (RFC 6750 2.2). Both, or twice: ``BadInput``."""
    try:
        token = access_token(request.headers.getall(hdrs.AUTHORIZATION, ()), (), "")
    except AmbiguousToken as exc:
        raise BadInput(str(exc)) from None
    if request.method != hdrs.METH_POST or request.content_type != FORM:
        return token
    values = (await posted_form(request)).getall("access_token", [])
    if not values:
        return token
    if token is not None or len(values) > 1:
        raise BadInput("give the access token once: in the Authorization header or the form")
    value = values[0]
    if not isinstance(value, str) or not value or not bounded(value) or not value.isascii():
        raise BadInput("access_token is not a token")
    return value


async def userinfo(request: web.Request) -> web.Response:
    """The claims of the token's user that its scope releases (``openid`` required)."""
    services = request.app[SERVICES]
    try:
        token = await bearer_token(request)
    except BadInput as exc:
        if exc.status != 400:  # a body too large
            raise
        return bearer_error(400, "invalid_request", str(exc))
    if token is None:
        return bearer_error(401, None, "a Bearer access token is required")
    claims = await live_claims(services, token)
    if claims is None:
        return bearer_error(401, "invalid_token", "the access token is invalid, expired or revoked")
    scopes = oidc.parse_scope(claims.scope) if claims.scope else ()
    if claims.identity.client is not None:
        return bearer_error(403, "insufficient_scope", "a client's own token speaks for no user", oidc.OPENID)
    if oidc.OPENID not in scopes:
        return bearer_error(403, "insufficient_scope", "the access token was not granted openid", oidc.OPENID)
    user = await services.db.run(users.get, claims.identity.subject)
    if user is None or user.disabled:
        return bearer_error(401, "invalid_token", "the token's user is unknown or disabled")
    return json_response(oidc.userinfo_claims(user.identity, scopes), headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/oauth/userinfo", userinfo)
    app.router.add_post("/oauth/userinfo", userinfo)
