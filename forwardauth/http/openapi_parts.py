"""The vocabulary of the OpenAPI document: media types, response and schema builders, the error
answers every endpoint shares, and the components the paths refer to.

``openapi`` writes the endpoints with these, so a path reads as what it accepts and answers.
"""

from __future__ import annotations

from typing import Any

from forwardauth.stores.clients import GRANT_TYPES

Schema = dict[str, Any]

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"
TEXT = "text/plain"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def text_content(description: str, media: str = TEXT, headers: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "content": {media: {"schema": {"type": "string"}}}}
    if headers:
        response["headers"] = headers
    return response


def header(description: str) -> Schema:
    return {"description": description, "schema": {"type": "string"}}


ERROR = ref("Error")
BAD_REQUEST = json_content(ERROR, "Malformed input")
UNAVAILABLE = json_content(ERROR, "PostgreSQL or Redis unreachable")
TOO_LARGE = json_content(ERROR, "Body larger than 64 KiB")
CROSS_SITE = json_content(ERROR, "A form posted from a page that is not ours (see Security in the README)")
THROTTLED = {
    **json_content(ref("Error"), "Too many failed logins: wait Retry-After seconds"),
    "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}},
}
OAUTH_ERRORS = {
    "400": json_content(ERROR, "RFC 6749 5.2 error"),
    "429": THROTTLED,
    "401": {
        **json_content(ERROR, "Client authentication failed"),
        "headers": {"WWW-Authenticate": header("Basic challenge")},
    },
    "413": TOO_LARGE,
    "503": UNAVAILABLE,
}


def form_or_json(schema: Schema) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema}, FORM: {"schema": schema}}}


def token_form() -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": list(GRANT_TYPES)},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "otp": {"type": "string"},
            "refresh_token": {"type": "string"},
            "code": {"type": "string"},
            "redirect_uri": {"type": "string"},
            "code_verifier": {"type": "string"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
        },
    }


# A text field as the handlers accept it: at most 4096 characters, no NUL.
FIELD: Schema = {"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"}


def components(cookie_name: str) -> Schema:
    """The security schemes (``cookie_name``: the access cookie) and the schemas the paths refer to."""
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": cookie_name},
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
    }
