"""The OpenAPI 3.1 document of every public endpoint, served at ``/openapi.json``.

Written as data next to the handlers it describes; ``tests/test_openapi.py`` holds it to the
application's routes and runs schemathesis against a live server.
"""

from __future__ import annotations

from typing import Any

from forwardauth import __version__
from forwardauth.config import Settings
from forwardauth.stores.clients import GRANT_TYPES

Schema = dict[str, Any]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"
TEXT = "text/plain"
AUTH_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _text(description: str, media: str = TEXT, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": {media: {"schema": {"type": "string"}}}}
    if headers:
        response["headers"] = headers
    return response


def _header(description: str) -> Schema:
    return {"description": description, "schema": {"type": "string"}}


ERROR = _ref("Error")
BAD_REQUEST = _json(ERROR, "Malformed input")
UNAVAILABLE = _json(ERROR, "PostgreSQL or Redis unreachable")
TOO_LARGE = _json(ERROR, "Body larger than 64 KiB")
CROSS_SITE = _json(ERROR, "A form posted from a page that is not ours (see Security in the README)")
THROTTLED = {
    **_json(_ref("Error"), "Too many failed logins: wait Retry-After seconds"),
    "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}},
}
OAUTH_ERRORS = {
    "400": _json(ERROR, "RFC 6749 5.2 error"),
    "429": THROTTLED,
    "401": {
        **_json(ERROR, "Client authentication failed"),
        "headers": {"WWW-Authenticate": _header("Basic challenge")},
    },
    "413": TOO_LARGE,
    "503": UNAVAILABLE,
}

IDENTITY_HEADERS = {
    "X-Auth-User": _header("Username (a user's token only)"),
    "X-Auth-Roles": _header("The user's roles, comma-separated (a user's token only)"),
    "X-Auth-Email": _header("E-mail, when known (a user's token only)"),
    "X-Auth-Subject": _header("Stable user id, or client:<id> for a client's own token"),
    "X-Auth-Client": _header("Client id (a client_credentials token only: no user)"),
    "X-Auth-Client-Roles": _header("The client's roles, comma-separated (a client_credentials token only)"),
}
DENIED = {
    "401": _text(
        "No valid token",
        headers={
            "WWW-Authenticate": _header("Bearer challenge"),
            "Location": _header("Login page, for browsers behind nginx/Envoy"),
        },
    ),
    "302": _text(
        "Browser sent to the login page (behind Traefik/Caddy)", headers={"Location": _header("Login page with rd")}
    ),
    "400": _json(
        ERROR,
        "A request /auth will not judge: a path or host backends read in more than one way, "
        "a proxy's description missing, malformed or in two proxies' terms, describing headers from an "
        "address not in FORWARDAUTH_TRUSTED_PROXIES, or forwardauth's refresh cookie on a request for an app",
    ),
    "403": {
        "description": "Refused by an access rule (for a browser, the access-denied page)",
        "content": {TEXT: {"schema": {"type": "string"}}, HTML: {"schema": {"type": "string"}}},
    },
    "431": _json(ERROR, "A request header over 16 KiB, or more than 100 of them"),
    "503": UNAVAILABLE,
}


def _form_or_json(schema: Schema) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema}, FORM: {"schema": schema}}}


def _auth_operation(name: str, summary: str, parameters: list[Schema]) -> Schema:
    return {
        method: {
            "summary": summary,
            "operationId": f"{name}_{method}",
            "parameters": parameters,
            "security": [{}, {"bearer": []}, {"cookie": []}],
            "responses": {"200": {"description": "Allowed", "headers": IDENTITY_HEADERS}, **DENIED},
        }
        for method in AUTH_METHODS
    }


def _token_form() -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": list(GRANT_TYPES)},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "refresh_token": {"type": "string"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    }


# A text field as the handlers accept it: at most 4096 characters, no NUL.
FIELD: Schema = {"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"}


def document(settings: Settings) -> Schema:
    """The OpenAPI document for a server whose public base URL is the issuer."""
    credentials = {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {**FIELD, "minLength": 1}, "password": {**FIELD, "minLength": 1}, "rd": FIELD},
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "forwardauth",
            "version": __version__,
            "description": "Forward authentication for reverse proxies, with an OAuth2 token service.",
        },
        "servers": [{"url": settings.issuer}],
        "paths": {
            "/auth": _auth_operation("auth", "Check a request (any method)", []),
            "/auth/envoy/{original}": _auth_operation(
                "auth_envoy",
                "Check a request for Envoy ext_authz (original path after the prefix)",
                [{"name": "original", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/login": {
                "get": {
                    "summary": "The login form, or a silent renewal with the browser's refresh cookie",
                    "parameters": [{"name": "rd", "in": "query", "schema": {"type": "string"}}],
                    "responses": {
                        "200": _text("HTML form", HTML),
                        "303": {
                            "description": "Renewed with the refresh cookie; redirect to rd",
                            "headers": {
                                "Location": _header("rd"),
                                "Set-Cookie": _header("New access and refresh cookies"),
                            },
                        },
                        "503": UNAVAILABLE,
                    },
                },
                "post": {
                    "summary": "Log in (form: cookie and redirect; JSON: tokens)",
                    "requestBody": _form_or_json(credentials),
                    "responses": {
                        "200": _json(_ref("Tokens"), "Tokens (JSON request)"),
                        "303": {
                            "description": "Cookie set; redirect to rd",
                            "headers": {
                                "Location": _header("rd or /"),
                                "Set-Cookie": _header("The access and refresh cookies"),
                            },
                        },
                        "400": {
                            "description": "Malformed input; or (HTML) a browser that would not keep the "
                            "cookie or send it to rd, told why",
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "401": {
                            "description": "Wrong username or password",
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "429": {
                            **THROTTLED,
                            "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
                        },
                        "403": CROSS_SITE,
                        "413": TOO_LARGE,
                        "415": _json(ERROR, "Not JSON nor a form"),
                        "503": UNAVAILABLE,
                    },
                },
            },
            "/refresh": {
                "post": {
                    "summary": "Rotate a refresh token",
                    "requestBody": _form_or_json(refresh),
                    "responses": {
                        "200": _json(_ref("Tokens"), "New tokens"),
                        "400": BAD_REQUEST,
                        "401": _json(ERROR, "Invalid, expired, revoked or reused"),
                        "413": TOO_LARGE,
                        "415": _json(ERROR, "Not JSON nor a form"),
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/logout": {
                "get": {
                    "summary": "The sign-out page: who is signed in, and a button that posts the sign-out",
                    "parameters": [{"name": "rd", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _text("HTML page", HTML), "503": UNAVAILABLE},
                },
                "post": {
                    "summary": "End the session of the presented token",
                    "security": [{}, {"bearer": []}, {"cookie": []}],
                    "requestBody": {"content": {JSON: {"schema": sign_out}, FORM: {"schema": sign_out}}},
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"logged_out": {"type": "boolean"}}}, "Done (idempotent)"
                        ),
                        "202": _json(
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
                        "415": _json(ERROR, "Not JSON nor a form"),
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
                        "200": _json(
                            {"type": "object", "properties": {"sessions_revoked": {"type": "integer"}}}, "Done"
                        ),
                        "202": _json(
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
                        "401": _json(ERROR, "No live access token"),
                        "403": CROSS_SITE,
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/oauth/token": {
                "post": {
                    "summary": "RFC 6749 token endpoint",
                    "security": client_auth,
                    "requestBody": {"required": True, "content": {FORM: {"schema": _token_form()}}},
                    "responses": {"200": _json(_ref("Tokens"), "Tokens"), **OAUTH_ERRORS},
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
                        "200": _json(
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
                        "200": _json(
                            {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
                            "JWK set",
                        )
                    },
                }
            },
            "/.well-known/oauth-authorization-server": {
                "get": {
                    "summary": "RFC 8414 metadata",
                    "responses": {"200": _json(_ref("Metadata"), "Server metadata")},
                }
            },
            "/.well-known/openid-configuration": {
                "get": {
                    "summary": "The same metadata",
                    "responses": {"200": _json(_ref("Metadata"), "Server metadata")},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of every worker (others' up to ~1 s old)",
                    "responses": {"200": _text("Prometheus text format 0.0.4")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready to serve",
                    "responses": {
                        "200": _json(_ref("Ready"), "Redis and PostgreSQL answer, migrations applied"),
                        "503": _json(_ref("Ready"), "Not ready"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": settings.cookie_name},
                "clientBasic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
                },
                "Tokens": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"const": "Bearer"},
                        "expires_in": {"type": "integer"},
                        "refresh_token": {"type": "string"},
                        "scope": {"type": "string"},
                    },
                },
                "Metadata": {
                    "type": "object",
                    "required": ["issuer", "token_endpoint", "jwks_uri"],
                    "properties": {"issuer": {"type": "string"}},
                },
                "Ready": {
                    "type": "object",
                    "required": ["ready", "checks"],
                    "properties": {"ready": {"type": "boolean"}, "checks": {"type": "object"}},
                },
            },
        },
    }
