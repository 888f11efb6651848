"""The OpenID Connect endpoints of the OpenAPI document served by http.oidc (discovery and
userinfo), merged into its paths.

The token endpoint's ``authorization_code`` grant is documented with /oauth/token (openapi_parts.token_form).
"""

from __future__ import annotations

from forwardauth.http.openapi_parts import (
    ERROR,
    FORM,
    TOO_LARGE,
    UNAVAILABLE,
    Schema,
    header,
    json_content,
)

BEARER_CHALLENGE = {"WWW-Authenticate": header("Bearer challenge with the RFC 6750 error")}
DISCOVERY: Schema = {
    "type": "object",
    "required": [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ],
    "properties": {
        "issuer": {"type": "string"},
        "authorization_endpoint": {"type": "string"},
        "token_endpoint": {"type": "string"},
        "userinfo_endpoint": {"type": "string"},
        "jwks_uri": {"type": "string"},
        "end_session_endpoint": {"type": "string"},
        "scopes_supported": {"type": "array", "items": {"type": "string"}},
        "response_types_supported": {"type": "array", "items": {"type": "string"}},
        "subject_types_supported": {"type": "array", "items": {"type": "string"}},
        "id_token_signing_alg_values_supported": {"type": "array", "items": {"type": "string"}},
        "claims_supported": {"type": "array", "items": {"type": "string"}},
    },
}
USERINFO: Schema = {
    "type": "object",
    "required": ["sub"],
    "properties": {
        "sub": {"type": "string"},
        "preferred_username": {"type": "string"},
        "name": {"type": "string"},
        "email": {"type": "string"},
        "email_verified": {"type": "boolean"},
        "groups": {"type": "array", "items": {"type": "string"}},
    },
}
USERINFO_RESPONSES: Schema = {
    "200": json_content(USERINFO, "The user's claims, by the token's scope (sub always)"),
    "400": {**json_content(ERROR, "invalid_request: the token given twice or malformed"), "headers": BEARER_CHALLENGE},
    "401": {
        **json_content(ERROR, "No token, or invalid_token: not live, or its user unknown or disabled"),
        "headers": BEARER_CHALLENGE,
    },
    "403": {
        **json_content(ERROR, "insufficient_scope: the token was not granted openid (or is a client's own)"),
        "headers": BEARER_CHALLENGE,
    },
    "413": TOO_LARGE,
    "503": UNAVAILABLE,
}
USERINFO_FORM: Schema = {"type": "object", "properties": {"access_token": {"type": "string"}}}


def oidc_paths() -> Schema:
    """Discovery and userinfo (/oauth/authorize and /oauth/logout: openapi_authorize)."""
    return {
        "/.well-known/openid-configuration": {
            "get": {
                "summary": "OpenID Connect Discovery 1.0 provider metadata",
                "responses": {
                    "200": json_content(DISCOVERY, "Provider metadata"),
                    "404": json_content(ERROR, "No OpenID Connect: the signing key is HS256 (no ID tokens)"),
                },
            }
        },
        "/oauth/userinfo": {
            "get": {
                "summary": "OpenID Connect UserInfo: the claims of the access token's user",
                "security": [{"bearer": []}],
                "responses": USERINFO_RESPONSES,
            },
            "post": {
                "summary": "UserInfo, the token in the Authorization header or the form (RFC 6750 2.2)",
                "security": [{"bearer": []}, {}],
                "requestBody": {"content": {FORM: {"schema": USERINFO_FORM}}},
                "responses": USERINFO_RESPONSES,
            },
        },
    }
