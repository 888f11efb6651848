"""The OpenAPI 3.1 document of every public endpoint, served at ``/openapi.json``.

Written as data next to the handlers it describes; ``tests/test_openapi.py`` holds it to the
application's routes and runs schemathesis against a live server.
"""

from __future__ import annotations

from forwardauth import __version__
from forwardauth.config import Settings
from forwardauth.configparse import HeaderNames
from forwardauth.http.openapi_admin import admin_paths
from forwardauth.http.openapi_authorize import authorize_paths
from forwardauth.http.openapi_oidc import oidc_paths
from forwardauth.http.openapi_parts import (
    BAD_REQUEST,
    CROSS_SITE,
    ERROR,
    FIELD,
    FORM,
    HTML,
    JSON,
    OAUTH_ERRORS,
    TEXT,
    THROTTLED,
    TOO_LARGE,
    UNAVAILABLE,
    Schema,
    components,
    form_or_json,
    header,
    json_content,
    ref,
    text_content,
    token_form,
)
from forwardauth.http.openapi_passkeys import passkey_paths
from forwardauth.http.openapi_portal import portal_paths
from forwardauth.http.openapi_secondfactor import second_factor_paths

AUTH_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")  # /auth takes any

# What each identity header carries, by its HeaderNames field: the names come from the settings,
# so the document describes the headers a renamed deployment (e.g. Authelia's) really sends.
_IDENTITY_FIELDS = {
    "user": "Username (a user's token only)",
    "roles": "The user's roles, comma-separated (a user's token only)",
    "email": "E-mail, when known (a user's token only)",
    "subject": "Stable user id, or client:<id> for a client's own token",
    "client": "Client id (a client_credentials token only: no user)",
    "client_roles": "The client's roles, comma-separated (a client_credentials token only)",
    "amr": "How the user signed in: the token's amr, comma-separated (a user's token; pat: a personal access token)",
    "scopes": "A personal access token's scopes, space-separated (that token only)",
    "name": "Display name: the username, as users have no other name (a user's token only)",
}


def identity_headers(names: HeaderNames) -> Schema:
    """The 200 answer's headers under the names in effect, the configured claim headers included."""
    fixed = {getattr(names, f): header(text) for f, text in _IDENTITY_FIELDS.items() if getattr(names, f)}
    claims = {
        name: header(f"The token's {claim} claim: a string, or a list of strings comma-separated (else absent)")
        for claim, name in names.claims
    }
    return {**fixed, **claims}


DENIED = {
    "401": text_content(
        "No valid token (a personal access token is taken as Bearer, or as the password of Basic credentials "
        "whose user is its owner; a Basic password that is not a token is refused unchecked)",
        headers={
            "WWW-Authenticate": header(
                "Bearer challenge; insufficient_user_authentication (RFC 9470) for a step-up; "
                'Basic realm="<site name>" under a rule with challenge: basic'
            ),
            "Location": header("Login page, for browsers behind nginx/Envoy"),
        },
    ),
    "302": text_content(
        "Browser sent to the login page (behind Traefik/Caddy)", headers={"Location": header("Login page with rd")}
    ),
    "400": json_content(
        ERROR,
        "A request /auth will not judge: a path or host backends read in more than one way, "
        "a proxy's description missing, malformed or in two proxies' terms, describing headers from an "
        "address not in FORWARDAUTH_TRUSTED_PROXIES, or forwardauth's refresh cookie on a request for an app",
    ),
    "403": {
        "description": "Refused by an access rule (for a browser, the access-denied page)",
        "content": {TEXT: {"schema": {"type": "string"}}, HTML: {"schema": {"type": "string"}}},
    },
    "431": json_content(ERROR, "A request header over 16 KiB, or more than 100 of them"),
    "503": UNAVAILABLE,
}


def _auth_operation(name: str, summary: str, parameters: list[Schema], headers: Schema) -> Schema:
    return {
        method: {
            "summary": summary,
            "operationId": f"{name}_{method}",
            "parameters": parameters,
            "security": [{}, {"bearer": []}, {"cookie": []}],
            "responses": {"200": {"description": "Allowed", "headers": headers}, **DENIED},
        }
        for method in AUTH_METHODS
    }


def document(settings: Settings) -> Schema:
    """The OpenAPI document for a server whose public base URL is the issuer."""
    credentials = {
        "type": "object",
        "required": ["username", "password"],
        "properties": {
            "username": {**FIELD, "minLength": 1},
            "password": {**FIELD, "minLength": 1},
            "rd": FIELD,
            "otp": FIELD,  # a TOTP or recovery code, when the user has a second factor
        },
    }
    refresh = {"type": "object", "properties": {"refresh_token": FIELD}}
    sign_out = {"type": "object", "properties": {"refresh_token": FIELD, "rd": FIELD}}
    token_request = {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    }
    client_auth: list[Schema] = [{"clientBasic": []}, {}]
    allowed = identity_headers(settings.header_names)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "forwardauth",
            "version": __version__,
            "description": "Forward authentication for reverse proxies, with an OAuth2 token service.",
        },
        "servers": [{"url": settings.issuer}],
        "paths": {
            "/auth": _auth_operation("auth", "Check a request (any method)", [], allowed),
            "/auth/envoy/{original}": _auth_operation(
                "auth_envoy",
                "Check a request for Envoy ext_authz (original path after the prefix)",
                [{"name": "original", "in": "path", "required": True, "schema": {"type": "string"}}],
                allowed,
            ),
            "/login": {
                "get": {
                    "summary": "The login form, or a silent renewal with the browser's refresh cookie (or a "
                    "step-up: to the second-factor page, or the form again, when rd's rule wants more)",
                    "parameters": [
                        {"name": "rd", "in": "query", "schema": {"type": "string"}},
                        {"name": "reauth", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": text_content("HTML form", HTML),
                        "303": {
                            "description": "Renewed with the refresh cookie; redirect to rd",
                            "headers": {
                                "Location": header("rd"),
                                "Set-Cookie": header("New access and refresh cookies"),
                            },
                        },
                        "503": UNAVAILABLE,
                    },
                },
                "post": {
                    "summary": "Log in (form: cookie and redirect; JSON: tokens)",
                    "requestBody": form_or_json(credentials),
                    "responses": {
                        "200": json_content(ref("Tokens"), "Tokens (JSON request)"),
                        "303": {
                            "description": "Cookie set; redirect to rd (or, a second factor due, to its page "
                            "with the pending sign-in's cookie)",
                            "headers": {
                                "Location": header("rd or /"),
                                "Set-Cookie": header("The access and refresh cookies"),
                            },
                        },
                        "400": {
                            "description": "Malformed input; or (HTML) a browser that would not keep the "
                            "cookie or send it to rd, told why",
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "401": {
                            "description": "Wrong username or password; or (JSON, error second_factor_required) "
                            "a second factor is due and otp is missing or wrong",
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "429": {
                            **THROTTLED,
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "403": CROSS_SITE,
                        "413": TOO_LARGE,
                        "415": json_content(ERROR, "Not JSON nor a form"),
                        "503": UNAVAILABLE,
                    },
                },
            },
            "/refresh": {
                "post": {
                    "summary": "Rotate a refresh token",
                    "requestBody": form_or_json(refresh),
                    "responses": {
                        "200": json_content(ref("Tokens"), "New tokens"),
                        "400": BAD_REQUEST,
                        "401": json_content(ERROR, "Invalid, expired, revoked or reused"),
                        "413": TOO_LARGE,
                        "415": json_content(ERROR, "Not JSON nor a form"),
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/logout": {
                "get": {
                    "summary": "The sign-out page: who is signed in, and a button that posts the sign-out",
                    "parameters": [{"name": "rd", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": text_content("HTML page", HTML), "503": UNAVAILABLE},
                },
                "post": {
                    "summary": "End the session of the presented token",
                    "security": [{}, {"bearer": []}, {"cookie": []}],
                    "requestBody": {"content": {JSON: {"schema": sign_out}, FORM: {"schema": sign_out}}},
                    "responses": {
                        "200": json_content(
                            {"type": "object", "properties": {"logged_out": {"type": "boolean"}}}, "Done (idempotent)"
                        ),
                        "202": json_content(
                            {
                                "type": "object",
                                "properties": {
                                    "logged_out": {"type": "boolean"},
                                    "revocation_pending": {"type": "boolean"},
                                },
                            },
                            "Session ended; Redis refused to revoke its access tokens: queued until it "
                            "takes writes again",
                        ),
                        "303": {"description": "Browser: back to the login page (with rd, when given)"},
                        "400": BAD_REQUEST,
                        "401": BAD_REQUEST,
                        "403": CROSS_SITE,
                        "413": TOO_LARGE,
                        "415": json_content(ERROR, "Not JSON nor a form"),
                        "503": UNAVAILABLE,
                    },
                },
            },
            "/forbidden": {
                "get": {
                    "summary": "The access-denied page for the request described as for /auth (nginx error_page 403)",
                    "security": [{}, {"cookie": []}],
                    "responses": {
                        "403": {
                            "description": "The page for a browser (Accept: text/html), else plain text",
                            "content": {HTML: {"schema": {"type": "string"}}, TEXT: {"schema": {"type": "string"}}},
                        },
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/logout/all": {
                "post": {
                    "summary": "End every session of the token's user",
                    "security": [{"bearer": []}, {"cookie": []}],
                    "responses": {
                        "200": json_content(
                            {"type": "object", "properties": {"sessions_revoked": {"type": "integer"}}}, "Done"
                        ),
                        "202": json_content(
                            {
                                "type": "object",
                                "properties": {
                                    "sessions_revoked": {"type": "integer"},
                                    "revocation_pending": {"type": "boolean"},
                                },
                            },
                            "Ended; Redis refused writes: access tokens revoked when it takes them",
                        ),
                        "400": BAD_REQUEST,
                        "401": json_content(ERROR, "No live access token"),
                        "403": CROSS_SITE,
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/oauth/token": {
                "post": {
                    "summary": "RFC 6749 token endpoint",
                    "security": client_auth,
                    "requestBody": {"required": True, "content": {FORM: {"schema": token_form()}}},
                    "responses": {"200": json_content(ref("Tokens"), "Tokens"), **OAUTH_ERRORS},
                }
            },
            "/oauth/revoke": {
                "post": {
                    "summary": "RFC 7009 revocation",
                    "security": client_auth,
                    "requestBody": {"required": True, "content": {FORM: {"schema": token_request}}},
                    "responses": {"200": {"description": "Revoked, or unknown"}, **OAUTH_ERRORS},
                }
            },
            "/oauth/introspect": {
                "post": {
                    "summary": "RFC 7662 introspection (confidential clients)",
                    "security": [{"clientBasic": []}, {}],
                    "requestBody": {"required": True, "content": {FORM: {"schema": token_request}}},
                    "responses": {
                        "200": json_content(
                            {"type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}}},
                            "Token state",
                        ),
                        **OAUTH_ERRORS,
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "summary": "Public signing keys",
                    "responses": {
                        "200": json_content(
                            {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
                            "JWK set",
                        )
                    },
                }
            },
            "/.well-known/oauth-authorization-server": {
                "get": {
                    "summary": "RFC 8414 metadata",
                    "responses": {"200": json_content(ref("Metadata"), "Server metadata")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": json_content({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": json_content({"type": "object"}, "Alive")}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of every worker (others' up to ~1 s old)",
                    "responses": {"200": text_content("Prometheus text format 0.0.4")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready to serve",
                    "responses": {
                        "200": json_content(ref("Ready"), "Redis and PostgreSQL answer, migrations applied"),
                        "503": json_content(ref("Ready"), "Not ready"),
                    },
                }
            },
            **passkey_paths(),
            **second_factor_paths(),
            **oidc_paths(),
            **authorize_paths(),
            **portal_paths(),
            **admin_paths(),
        },
        "components": components(settings.cookie_name),
    }
