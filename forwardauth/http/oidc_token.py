"""The token endpoint's ``authorization_code`` grant (RFC 6749 4.1.3, OpenID Connect Core 3.1.3),
dispatched from http.oauth's token(), which has authenticated the client and checked that it may
use the grant. The work is accounts.oidc_tokens'; this maps its refusals to RFC 6749 5.2 errors.
"""

from __future__ import annotations

from aiohttp import web

from forwardauth.accounts.oidc_tokens import CodeRefused, exchange_code
from forwardauth.http.common import client_address, token_response
from forwardauth.http.oauth_errors import NO_STORE, OAuthError
from forwardauth.http.services import Services
from forwardauth.stores import clients, sessions


async def authorization_code_grant(
    services: Services, request: web.Request, form: dict[str, str], client: clients.Client
) -> web.Response:
    """Tokens for a code: access token, ``id_token`` (scope ``openid``), refresh token
    (``offline_access``). Any refusal of the code itself is ``invalid_grant`` (RFC 6749 5.2)."""
    if not form.get("code"):
        raise OAuthError("invalid_request", "code is required")
    try:
        done = await exchange_code(
            services,
            form["code"],
            client,
            form.get("redirect_uri") or None,
            form.get("code_verifier") or None,
            client_address(request, services.settings),
        )
    except CodeRefused as exc:
        raise OAuthError("invalid_grant", str(exc)) from None
    except sessions.ClientDisabled:  # disabled while this request was under way
        raise OAuthError("invalid_client", "unknown client, wrong secret or disabled client", 401) from None
    return token_response(services.settings, done.access, done.refresh_token, NO_STORE, done.id_token)
