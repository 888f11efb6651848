"""The errors of the OAuth2 endpoints (RFC 6749 5.2): ``{"error", "error_description"}``, 400, or
401 with a ``WWW-Authenticate: Basic`` challenge when client authentication failed. Shared by the
token endpoint's grants (http.oauth, http.oidc_token)."""

from __future__ import annotations

from aiohttp import web

from forwardauth.http.common import json_response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


def oauth_error_response(exc: OAuthError) -> web.Response:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="forwardauth"'
    return json_response({"error": exc.error, "error_description": str(exc)}, status=exc.status, headers=headers)
