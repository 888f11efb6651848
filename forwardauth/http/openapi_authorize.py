"""The authorization side of the OpenID Connect provider in the OpenAPI document (http.authorize,
http.oidc_logout), merged into its paths: browser endpoints answered with pages or redirects.
"""

from __future__ import annotations

from forwardauth.http.openapi_parts import (
    CROSS_SITE,
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
    text_content,
)

REQUEST_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "acr_values",
    "response_mode",
)
LOGOUT_PARAMETERS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
REFUSED = {
    "description": "Refused before the client and its redirect URI were known good (an error page, no redirect), "
    "or malformed input (JSON)",
    "content": {HTML: {"schema": {"type": "string"}}, JSON: {"schema": ERROR}},
}
ONWARD = {
    "description": "To the client's redirect_uri (code, state and iss; or error, error_description, state and iss), "
    "or to the login page, the second-factor page or enrolment, then back with resume",
    "headers": {"Location": header("Where to")},
}
PAGE = text_content(
    "The consent page, or (a request resumed after one of our forms) a page moving on to the client at once",
    HTML,
    {"Refresh": header("0; url=<the client's redirect_uri with the response>")},
)
BODY_ERRORS = {"413": TOO_LARGE, "415": json_content(ERROR, "Not a form")}


def _query(names: tuple[str, ...]) -> list[Schema]:
    return [{"name": name, "in": "query", "schema": FIELD} for name in names]


def _form(names: tuple[str, ...], extra: Schema | None = None) -> Schema:
    properties = {name: FIELD for name in names} | (extra or {})
    return {"content": {FORM: {"schema": {"type": "object", "properties": properties}}}}


def authorize_paths() -> Schema:
    authorize_responses = {"200": PAGE, "303": ONWARD, "400": REFUSED, "503": UNAVAILABLE}
    logout_responses = {
        "200": text_content("Asks to confirm (a session other than the hint's), or says the user is signed out", HTML),
        "303": {
            "description": "Signed out: back to the registered post_logout_redirect_uri, with state",
            "headers": {"Location": header("Where to"), "Set-Cookie": header("The cookies, cleared")},
        },
        "400": REFUSED,
        "503": UNAVAILABLE,
    }
    return {
        "/oauth/authorize": {
            "get": {
                "summary": "OpenID Connect / OAuth 2.0 authorization request (response_type=code, PKCE S256), "
                "answered from the browser's session; resume: a request waiting for the browser to sign in",
                "security": [{}, {"cookie": []}],
                "parameters": [*_query(REQUEST_PARAMETERS), *_query(("resume",))],
                "responses": authorize_responses,
            },
            "post": {
                "summary": "The same request, posted as a form",
                "security": [{}, {"cookie": []}],
                "requestBody": _form(REQUEST_PARAMETERS),
                "responses": {**authorize_responses, **BODY_ERRORS},
            },
        },
        "/oauth/authorize/consent": {
            "post": {
                "summary": "The consent page's answer: allow (remembered) or deny the client the scopes it asked for",
                "security": [{}, {"cookie": []}],
                "requestBody": _form(("request",), {"decision": {"type": "string", "enum": ["allow", "deny"]}}),
                "responses": {**authorize_responses, "403": CROSS_SITE, **BODY_ERRORS},
            }
        },
        "/oauth/logout": {
            "get": {
                "summary": "RP-initiated logout (end_session_endpoint): ends the browser's session and those "
                "opened from it",
                "security": [{}, {"cookie": []}],
                "parameters": _query(LOGOUT_PARAMETERS),
                "responses": logout_responses,
            },
            "post": {
                "summary": "The same, posted as a form (confirm=1: the confirmation page's button)",
                "security": [{}, {"cookie": []}],
                "requestBody": _form((*LOGOUT_PARAMETERS, "confirm")),
                "responses": {**logout_responses, "403": CROSS_SITE, **BODY_ERRORS},
            },
        },
    }
