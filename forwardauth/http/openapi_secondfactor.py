"""The second-factor pages of the OpenAPI document (http.secondfactor, http.enrol), merged into its
paths: pages for browsers, posted as forms (JSON is read too), answered with pages or redirects.
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

PAGE = text_content("HTML page", HTML)
ONWARD = {
    "description": "On to where the browser can go: the login page (no pending sign-in, or it ran out), the "
    "second-factor page (a step-up first), the password form (a sign-in too old to change factors), /mfa, or rd "
    "once signed in",
    "headers": {"Location": header("Where to"), "Set-Cookie": header("The session's cookies, once signed in")},
}
MALFORMED = {
    "description": "Malformed input, or no code given (the page again, saying so)",
    "content": {JSON: {"schema": ERROR}, HTML: {"schema": {"type": "string"}}},
}
BODY_ERRORS = {"403": CROSS_SITE, "413": TOO_LARGE, "415": json_content(ERROR, "Not a form nor JSON")}
CONFLICT = text_content("Not possible now: the last second factor where they are required, or none set up", HTML)


def _post(summary: str, fields: Schema | None, responses: Schema) -> Schema:
    operation: Schema = {"summary": summary, "security": [{}, {"cookie": []}], "responses": responses}
    if fields is not None:
        body = {"type": "object", "properties": fields}
        operation["requestBody"] = {"content": {FORM: {"schema": body}, JSON: {"schema": body}}}
    return {"post": operation}


def second_factor_paths() -> Schema:
    return {
        "/login/second-factor": {
            "get": {
                "summary": "The second-factor page of the pending sign-in (its cookie): a TOTP or recovery code",
                "responses": {"200": PAGE, "303": ONWARD, "503": UNAVAILABLE},
            },
            **_post(
                "Complete the pending sign-in with a TOTP code (code) or a recovery code (recovery_code)",
                {"code": FIELD, "recovery_code": FIELD},
                {
                    "303": ONWARD,
                    "400": MALFORMED,
                    "401": text_content("Wrong or already used code (the page again)", HTML),
                    "429": {**THROTTLED, "content": {HTML: {"schema": {"type": "string"}}}},
                    **BODY_ERRORS,
                    "503": UNAVAILABLE,
                },
            ),
        },
        "/mfa": {
            "get": {
                "summary": "The user's second factors: what is set up, and the ways to change it",
                "security": [{}, {"cookie": []}],
                "parameters": [{"name": "saved", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": PAGE, "303": ONWARD, "503": UNAVAILABLE},
            }
        },
        "/mfa/totp/start": _post(
            "Set up an authenticator app: a new key (QR code and text), active once a code confirms it",
            None,
            {"200": PAGE, "303": ONWARD, "403": CROSS_SITE, "503": UNAVAILABLE},
        ),
        "/mfa/totp/confirm": _post(
            "Confirm the key being set up with one of its codes (code); recovery codes shown once after a first "
            "factor; a pending sign-in that had to enrol is then signed in",
            {"code": FIELD},
            {
                "200": text_content("The new recovery codes, shown once", HTML),
                "303": ONWARD,
                "400": MALFORMED,
                "429": {**THROTTLED, "content": {HTML: {"schema": {"type": "string"}}}},
                **BODY_ERRORS,
                "503": UNAVAILABLE,
            },
        ),
        "/mfa/totp/remove": _post(
            "Remove the authenticator app",
            None,
            {"303": ONWARD, "403": CROSS_SITE, "409": CONFLICT, "503": UNAVAILABLE},
        ),
        "/mfa/recovery-codes": _post(
            "Ten new recovery codes, shown once (the old ones stop working)",
            None,
            {
                "200": text_content("The new recovery codes", HTML),
                "303": ONWARD,
                "403": CROSS_SITE,
                "409": CONFLICT,
                "503": UNAVAILABLE,
            },
        ),
    }
