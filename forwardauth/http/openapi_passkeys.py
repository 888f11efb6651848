"""The passkey endpoints of the OpenAPI document (http.passkeys), merged into its paths.

Their JSON is the browser's WebAuthn API's: options for navigator.credentials.create()/get()
(``publicKey``, binary fields in base64url) and the PublicKeyCredential's JSON form back.
"""

from __future__ import annotations

from forwardauth.http.openapi_parts import (
    CROSS_SITE,
    ERROR,
    FIELD,
    FORM,
    HTML,
    JSON,
    THROTTLED,
    TOO_LARGE,
    UNAVAILABLE,
    Schema,
    header,
    json_content,
    text_content,
)

CHALLENGE_COOKIE = header("The challenge's id (HttpOnly, five minutes)")
OPTIONS = json_content(
    {"type": "object", "required": ["publicKey"], "properties": {"publicKey": {"type": "object"}}},
    "WebAuthn options; the challenge cookie is set",
)
DONE = {
    **json_content(
        {
            "type": "object",
            "required": ["redirect"],
            "properties": {
                "redirect": {"type": "string"},
                "recovery_codes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Accepted: where the browser goes next (and new recovery codes, shown once, after a first factor)",
    ),
    "headers": {"Set-Cookie": header("The session's cookies, when a sign-in completes")},
}
ANSWER = {
    "type": "object",
    "required": ["credential"],
    "properties": {"credential": {"type": "object"}, "rd": FIELD, "name": FIELD},
}
EMPTY = {"type": "object"}
CREDENTIAL = {"type": "string", "pattern": "^[A-Za-z0-9_-]{2,1400}$", "description": "The passkey's id (base64url)"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"}
FAILED = {
    "400": json_content(ERROR, "Malformed, expired or spent challenge, or a page outside the relying party"),
    "401": json_content(ERROR, "Not accepted (or, with redirect, sign in again first)"),
    "403": json_content(ERROR, "Passkeys off, or the account is disabled"),
    "413": TOO_LARGE,
    "415": json_content(ERROR, "Not JSON"),
    "429": THROTTLED,
    "503": UNAVAILABLE,
}
BACK_TO_MFA = {
    "303": {"description": "Back to /mfa", "headers": {"Location": header("/mfa")}},
    "400": {
        "description": "Malformed input",
        "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
    },
    "403": CROSS_SITE,
    "409": text_content("The last second factor, where they are required", HTML),
    "413": TOO_LARGE,
    "415": json_content(ERROR, "Not a form nor JSON"),
    "503": UNAVAILABLE,
}


def _json_post(summary: str, body: Schema, responses: Schema) -> Schema:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
            "responses": responses,
        }
    }


def _options(summary: str) -> Schema:
    return _json_post(summary, EMPTY, {"200": {**OPTIONS, "headers": {"Set-Cookie": CHALLENGE_COOKIE}}, **FAILED})


def _form(summary: str, fields: Schema) -> Schema:
    body = {"type": "object", "required": list(fields), "properties": fields}
    content = {FORM: {"schema": body}, JSON: {"schema": body}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": content},
            "responses": BACK_TO_MFA,
        }
    }


def passkey_paths() -> Schema:
    return {
        "/static/passkeys.js": {
            "get": {
                "summary": "The script of the passkey buttons (CSP script-src 'self')",
                "responses": {"200": text_content("JavaScript", "text/javascript")},
            }
        },
        "/login/passkey/options": _options("Passwordless sign-in: options (any discoverable passkey)"),
        "/login/passkey": _json_post(
            "Passwordless sign-in: the passkey's answer, and rd", ANSWER, {"200": DONE, **FAILED}
        ),
        "/login/second-factor/passkey/options": _options("Second factor of the pending sign-in: options"),
        "/login/second-factor/passkey": _json_post(
            "Second factor of the pending sign-in: the passkey's answer", ANSWER, {"200": DONE, **FAILED}
        ),
        "/mfa/passkeys/options": _options("Register a passkey: options (a recent multi-factor sign-in)"),
        "/mfa/passkeys": _json_post(
            "Register a passkey: the new credential, and its name", ANSWER, {"200": DONE, **FAILED}
        ),
        "/mfa/passkeys/rename": _form("Rename one of one's passkeys", {"credential": CREDENTIAL, "name": NAME}),
        "/mfa/passkeys/remove": _form("Remove one of one's passkeys", {"credential": CREDENTIAL}),
    }
