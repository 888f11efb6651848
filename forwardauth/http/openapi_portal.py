"""OpenAPI paths of the account portal (http.portal, http.portal_links): pages for browsers,
their forms posted (JSON is read too), answered with pages or redirects."""

from __future__ import annotations

from forwardauth.http.openapi_parts import (
    ERROR,
    FIELD,
    FORM,
    HTML,
    JSON,
    TOO_LARGE,
    UNAVAILABLE,
    Schema,
    header,
    json_content,
)
from forwardauth.http.openapi_secondfactor import PAGE


def _html_or_json(description: str) -> Schema:
    """A page saying what is wrong, or (a body that cannot be read, a refused form) a JSON error."""
    return {
        "description": description,
        "content": {HTML: {"schema": {"type": "string"}}, JSON: {"schema": ERROR}},
    }


def _html(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


SIGN_IN = {
    "description": "Not signed in: the login page, then back here; after a change: the page again, saying so "
    "(?saved=); after signing out this session: the login page",
    "headers": {"Location": header("Where to"), "Set-Cookie": header("Cleared cookies, when this session signed out")},
}
REFUSED = json_content(ERROR, "A form not from our page (Origin), or without this session's csrf_token")
REFUSED_ANONYMOUS = json_content(ERROR, "A form not from our page, or without this browser's csrf_token")
BODY_ERRORS = {
    "400": _html_or_json("Malformed input, or a field missing or not accepted (the form again, saying why)"),
    "413": TOO_LARGE,
    "415": json_content(ERROR, "Not a form nor JSON"),
    "503": UNAVAILABLE,
}
THROTTLED_PAGE = {
    **_html("Too many wrong passwords or requests: wait Retry-After seconds (the form again)"),
    "headers": {"Retry-After": header("Seconds to wait")},
}
NO_MAIL = _html("No mail server (FORWARDAUTH_SMTP_URL): not offered")
TOKEN_QUERY = [{"name": "token", "in": "query", "schema": {"type": "string"}}]
INVALID_LINK = _html_or_json("A link (token) that is unknown, used or expired; or malformed input")


def _page(summary: str, responses: Schema, parameters: list[Schema] | None = None) -> Schema:
    operation: Schema = {
        "summary": summary,
        "security": [{}, {"cookie": []}],
        "responses": {"200": PAGE, "503": UNAVAILABLE, **responses},
    }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _post(summary: str, fields: Schema, responses: Schema, security: list[Schema]) -> Schema:
    body = {"type": "object", "properties": {**fields, "csrf_token": FIELD}}
    return {
        "summary": summary,
        "security": security,
        "requestBody": {"content": {FORM: {"schema": body}, JSON: {"schema": body}}},
        "responses": {**BODY_ERRORS, **responses},
    }


def _signed_in_post(summary: str, fields: Schema, responses: Schema | None = None) -> Schema:
    return _post(summary, fields, {"303": SIGN_IN, "403": REFUSED, **(responses or {})}, [{}, {"cookie": []}])


def _anonymous_post(summary: str, fields: Schema, responses: Schema | None = None) -> Schema:
    return _post(summary, fields, {"200": PAGE, "403": REFUSED_ANONYMOUS, **(responses or {})}, [{}])


TOKEN_FIELDS = {"name": FIELD, "expires": FIELD, "scopes": FIELD}
TOKEN_ID = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def token_paths() -> dict[str, Schema]:
    """/account/tokens: the user's personal access tokens (http.portal_tokens)."""
    revoke = _signed_in_post(
        "Revoke one of the user's personal access tokens (at once on every worker)",
        {},
        {"404": _html("Not a token of this user (the tokens page, saying so)")},
    )
    return {
        "/account/tokens": {
            "get": _page(
                "The user's personal access tokens (never the tokens), and the form creating one",
                {"303": SIGN_IN},
                [{"name": "saved", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/account/tokens/new": {
            "post": _signed_in_post(
                "Create a personal access token (name; expires: a duration such as 30d, at most "
                "FORWARDAUTH_PAT_MAX_TTL; scopes separated by spaces or commas): the token, shown once",
                TOKEN_FIELDS,
                {
                    "200": _html("The token, shown once (never cached)"),
                    "403": _html_or_json(
                        "A form not from our page or without this session's csrf_token (JSON); or a sign-in "
                        "more than 15 minutes old (the page, with a link to sign in again)"
                    ),
                },
            )
        },
        "/account/tokens/{token_id}/revoke": {"post": {**revoke, "parameters": [TOKEN_ID]}},
    }


def portal_paths() -> dict[str, Schema]:
    return {
        "/account": {
            "get": _page(
                "The signed-in user's account: who, how this session signed in, every live session",
                {"303": SIGN_IN},
                [{"name": "saved", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/account/sessions/end": {
            "post": _signed_in_post(
                "Sign out one of the user's sessions (sid); this one: cookies cleared, on to the login page",
                {"sid": FIELD},
                {"404": _html("Not a live session of this user (the account page, saying so)")},
            )
        },
        "/account/sessions/end-others": {
            "post": _signed_in_post("Sign out every session of the user but this one", {}),
        },
        "/account/password": {
            "get": _page("The form to change the password", {"303": SIGN_IN}),
            "post": _signed_in_post(
                "Change the password (the current one, the new one twice); the other sessions end",
                {"current_password": FIELD, "new_password": FIELD, "new_password_again": FIELD},
                {"429": THROTTLED_PAGE},
            ),
        },
        "/account/email": {
            "get": _page("The form to change the e-mail address (with a mail server)", {"303": SIGN_IN}),
            "post": _signed_in_post(
                "Send a verification link to a new e-mail address (the current password too)",
                {"email": FIELD, "current_password": FIELD},
                {"409": _html("No mail server: an administrator changes addresses"), "429": THROTTLED_PAGE},
            ),
        },
        "/account/email/verify": {
            "get": _page(
                "A button confirming the new e-mail address of a link (nothing changes yet)",
                {"400": INVALID_LINK},
                TOKEN_QUERY,
            ),
            "post": _anonymous_post("Confirm the new e-mail address of a link (token)", {"token": FIELD}),
        },
        "/account/forgot": {
            "get": _page("The forgotten-password form (username or e-mail address)", {"404": NO_MAIL}),
            "post": _anonymous_post(
                "Send a password-reset link if an account matches (the same answer either way)",
                {"login": FIELD},
                {"404": NO_MAIL, "429": THROTTLED_PAGE},
            ),
        },
        "/account/reset": {
            "get": _page(
                "The new-password form of a reset or set-password link (not used up yet)",
                {"400": INVALID_LINK},
                TOKEN_QUERY,
            ),
            "post": _anonymous_post(
                "Set the password with a link (token), ending every session of the account",
                {"token": FIELD, "new_password": FIELD, "new_password_again": FIELD},
            ),
        },
        **token_paths(),
    }
