"""OAuth2 endpoints: token (RFC 6749), revocation (RFC 7009), introspection (RFC 7662) and
server metadata (RFC 8414), so a stock OAuth2 client library works without special cases.

Errors are exactly RFC 6749 5.2: ``{"error", "error_description"}``, 400, or 401 with a
``WWW-Authenticate: Basic`` challenge when client authentication failed.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from aiohttp import hdrs, web

from forwardauth.accounts.changes import end_user_sessions
from forwardauth.accounts.issue import live_claims, rotate_refresh
from forwardauth.accounts.secondfactor import SecondFactorRequired, with_code
from forwardauth.accounts.signin import SecondFactorDue, Throttled, sign_in
from forwardauth.config import Settings
from forwardauth.core import oidc
from forwardauth.core.tokens import Identity, TokenError
from forwardauth.http import browser
from forwardauth.http.common import (
    BadInput,
    bearer_or_cookie,
    bounded,
    client_address,
    json_response,
    posted_form,
    refuse_cross_site,
    token_response,
    too_many_attempts,
)
from forwardauth.http.oauth_errors import NO_STORE, OAuthError, oauth_error_response
from forwardauth.http.oidc_token import authorization_code_grant
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import clients, sessions

FORM = "application/x-www-form-urlencoded"


async def read_form(request: web.Request) -> dict[str, str]:
    """The form parameters; each may appear once (RFC 6749 3.2), values are bounded strings."""
    if request.content_type != FORM:
        raise OAuthError("invalid_request", f"the body must be {FORM}")
    try:
        posted = await posted_form(request)
    except BadInput as exc:  # malformed (400) or too large (413)
        raise OAuthError("invalid_request", str(exc), exc.status) from None
    form: dict[str, str] = {}
    for name in set(posted.keys()):
        values = posted.getall(name)
        if len(values) > 1:
            raise OAuthError("invalid_request", f"{name} is given more than once")
        value = values[0]
        if not isinstance(value, str) or not bounded(value):
            raise OAuthError("invalid_request", f"{name} is not a short text value")
        form[name] = value
    return form


def client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """(client_id, client_secret) from HTTP Basic or the form (RFC 6749 2.3.1), never both."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        if "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII (bytes not UTF-8), not UTF-8 once decoded
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        return unquote(client_id), unquote(secret)
    return form.get("client_id"), form.get("client_secret")


async def authenticate_client(
    services: Services, request: web.Request, form: dict[str, str], confidential: bool
) -> clients.Client:
    client_id, secret = client_credentials(request, form)
    if not client_id:
        raise OAuthError("invalid_client", "client authentication is required", 401)
    client = await services.db.run(clients.find, client_id)
    if client is None or client.disabled or not client.check_secret(secret or None):
        raise OAuthError("invalid_client", "unknown client, wrong secret or disabled client", 401)
    if confidential and client.public:
        raise OAuthError("invalid_client", "this endpoint needs a confidential client", 401)
    if "client_id" in form and form["client_id"] != client.id:
        raise OAuthError("invalid_request", "client_id does not match the authenticated client")
    return client


def granted_scope(requested: str | None, allowed: tuple[str, ...]) -> str | None:
    """The scope to grant: what was asked, if allowed; by default all the client may have."""
    if not requested:
        return " ".join(allowed) or None
    asked = tuple(dict.fromkeys(requested.split()))
    if not asked or any(s not in allowed for s in asked):
        raise OAuthError("invalid_scope", "the requested scope is not allowed for this client")
    return " ".join(asked)


def narrower(requested: str | None) -> Any:
    """For a refresh: keep the session's scope, or a subset of it (RFC 6749 6)."""

    def narrow(current: str | None) -> str | None:
        if not requested:
            return current
        return granted_scope(requested, tuple((current or "").split()))

    return narrow


async def token(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    try:
        form = await read_form(request)
        client = await authenticate_client(services, request, form, confidential=False)
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant not in clients.GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        if grant not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use the {grant} grant")
        if grant == "password":
            return await password_grant(services, request, form, client)
        if grant == "refresh_token":
            return await refresh_grant(services, request, form, client)
        if grant == "authorization_code":
            return await authorization_code_grant(services, request, form, client)
        return await client_credentials_grant(services, form, client, settings)
    except OAuthError as exc:
        return oauth_error_response(exc)


async def password_grant(
    services: Services, request: web.Request, form: dict[str, str], client: clients.Client
) -> web.Response:
    if not form.get("username") or not form.get("password"):
        raise OAuthError("invalid_request", "username and password are required")
    scope = granted_scope(form.get("scope"), client.scopes)
    address = client_address(request, services.settings)
    try:
        agent = request.headers.get(hdrs.USER_AGENT)
        signed = await sign_in(
            services,
            form["username"],
            form["password"],
            address,
            browser.log_login_failed,
            client.id,
            scope,
            user_agent=agent,
        )
        if isinstance(signed, SecondFactorDue):  # the user's second factor: a TOTP or recovery code as otp
            signed = await with_code(services, signed, form.get("otp", ""), address, client.id, scope, agent)
    except Throttled as exc:
        return too_many_attempts(exc, NO_STORE)
    except sessions.ClientDisabled:  # disabled while this request was under way
        raise OAuthError("invalid_client", "unknown client, wrong secret or disabled client", 401) from None
    except SecondFactorRequired as exc:
        raise OAuthError("invalid_grant", str(exc)) from None
    if signed is None:
        raise OAuthError("invalid_grant", "wrong username or password")
    return token_response(services.settings, signed.access, signed.session.refresh_token, NO_STORE)


async def refresh_grant(
    services: Services, request: web.Request, form: dict[str, str], client: clients.Client
) -> web.Response:
    if not form.get("refresh_token"):
        raise OAuthError("invalid_request", "refresh_token is required")
    try:
        session, minted = await rotate_refresh(
            services,
            form["refresh_token"],
            client_address(request, services.settings),
            client.id,
            narrower(form.get("scope")),
        )
    except sessions.RefreshError:
        raise OAuthError("invalid_grant", "refresh token is invalid, expired or revoked") from None
    return token_response(services.settings, minted, session.refresh_token, NO_STORE)


async def client_credentials_grant(
    services: Services, form: dict[str, str], client: clients.Client, settings: Settings
) -> web.Response:
    """A token for the client itself (no user, no refresh token: RFC 6749 4.4.3).

    It speaks for no user (``sub`` is ``client:<id>``, no ``preferred_username``), and its session
    id groups it with the client's other tokens of the hour, so disabling the client finds it.
    """
    if client.public:
        raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
    scope = granted_scope(form.get("scope"), client.scopes)
    sid = clients.own_session(client.id)
    minted = services.tokens.mint(Identity.of_client(client.id, client.roles), sid, scope=scope, client_id=client.id)
    await services.revocations.register(sid, minted.claims.jti, settings.access_ttl)
    # A disable that committed since the client was read has revoked its sessions in Redis, maybe
    # before this token was registered: look again, now that it is, and take it back if so.
    current = await services.db.run(clients.find, client.id)
    if current is None or current.disabled:
        await services.revocations.revoke(sid, minted.claims.jti)
        raise OAuthError("invalid_client", "unknown client, wrong secret or disabled client", 401)
    return token_response(services.settings, minted, None, NO_STORE)


async def token_request(services: Services, request: web.Request, confidential: bool) -> tuple[clients.Client, str]:
    """The authenticated client and the ``token`` parameter of a revoke/introspect request."""
    form = await read_form(request)
    client = await authenticate_client(services, request, form, confidential)
    if not form.get("token"):
        raise OAuthError("invalid_request", "token is required")
    return client, form["token"]


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: 200 for any well-formed request, whether or not the token was known."""
    services = request.app[SERVICES]
    try:
        client, token_value = await token_request(services, request, confidential=False)
    except OAuthError as exc:
        return oauth_error_response(exc)
    # The hint may be wrong (RFC 7009 2.1): try both kinds.
    try:
        claims = services.tokens.verify(token_value, allow_expired=True)
    except TokenError:
        claims = None
    if claims is not None:
        if claims.client_id == client.id:
            await services.revocations.revoke(claims.sid, claims.jti)
    else:
        sid = await services.db.run(
            sessions.revoke_by_token, token_value, client.id, client_address(request, services.settings)
        )
        if sid is not None:  # its access tokens go with it (when Redis takes writes again, if it refuses now)
            await services.revocations.revoke_or_queue([sid])
    return web.Response(status=200, headers=NO_STORE)


async def introspect(request: web.Request) -> web.Response:
    """RFC 7662, for confidential clients: ``{"active": false}`` unless the token is live and the
    caller may know about it.

    A client may introspect only tokens issued to itself (RFC 7662 2.1 lets the server decide):
    another client's token, live or not, is ``{"active": false}``, so a stolen refresh token cannot
    be tested here without spending it (and setting off reuse detection). A client marked as a
    resource server may introspect access tokens issued to anyone, but refresh tokens, which no
    resource server ever receives, still only its own.
    """
    services = request.app[SERVICES]
    settings = services.settings
    try:
        caller, token_value = await token_request(services, request, confidential=True)
    except OAuthError as exc:
        return oauth_error_response(exc)
    inactive = json_response({"active": False}, headers=NO_STORE)
    claims = await live_claims(services, token_value)
    if claims is not None:
        if claims.client_id != caller.id and not caller.resource_server:
            return inactive
        identity = claims.identity
        body: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            "sub": identity.subject,
            "roles": list(identity.roles),
            "exp": claims.expires_at,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "iss": settings.issuer,
            "aud": settings.audience,
            "jti": claims.jti,
        }
        # A client's own token has no username: its id is client_id only (never taken for a user's name).
        optional = {
            "username": identity.username,
            "scope": claims.scope,
            "client_id": claims.client_id,
            "email": identity.email,
        }
        body.update({k: v for k, v in optional.items() if v})
        return json_response(body, headers=NO_STORE)
    info = await services.db.run(sessions.refresh_info, token_value)
    if info is None or info.client_id != caller.id:
        return inactive
    body = {
        "active": True,
        "token_type": "refresh_token",
        "sub": info.user.id,
        "username": info.user.username,
        "exp": info.expires_at,
        "iat": info.issued_at,
        "iss": settings.issuer,
    }
    body.update({k: v for k, v in {"scope": info.scope, "client_id": info.client_id}.items() if v})
    return json_response(body, headers=NO_STORE)


async def logout_everywhere(request: web.Request) -> web.Response:
    """End every session of the user whose access token this is (all devices)."""
    services = request.app[SERVICES]
    refuse_cross_site(request, services.settings)
    token_value = bearer_or_cookie(request, services.settings.cookie_name)
    claims = await live_claims(services, token_value) if token_value else None
    if claims is None:
        return json_response(
            {"error": "invalid_token", "error_description": "a live access token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if claims.identity.client is not None:  # a client's own token: there is no user to log out
        return json_response(
            {"error": "invalid_request", "error_description": "a client's own token has no user sessions to end"},
            status=400,
            headers=NO_STORE,
        )
    count, revoked = await end_user_sessions(
        services, claims.identity.subject, client_address(request, services.settings)
    )
    if not revoked:  # PostgreSQL ended them; Redis will, once it takes writes again
        return json_response({"sessions_revoked": count, "revocation_pending": True}, status=202, headers=NO_STORE)
    return json_response({"sessions_revoked": count}, headers=NO_STORE)


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 metadata (OpenID Connect's, a superset: http.oidc)."""
    base = settings.issuer
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": list(clients.GRANT_TYPES),
        "response_types_supported": [oidc.RESPONSE_TYPE],
        "response_modes_supported": [oidc.RESPONSE_MODE],
        "code_challenge_methods_supported": [oidc.PKCE_METHOD],
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "subject_types_supported": ["public"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "sid",
            "preferred_username",
            "roles",
            "email",
            "scope",
            "client_id",
        ],
    }


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(metadata(request.app[SERVICES].settings), headers={"Cache-Control": "public, max-age=300"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/oauth/token", token)
    app.router.add_post("/oauth/revoke", revoke)
    app.router.add_post("/oauth/introspect", introspect)
    app.router.add_post("/logout/all", logout_everywhere)
    app.router.add_get("/.well-known/oauth-authorization-server", server_metadata)
