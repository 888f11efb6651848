"""The admin console's routes in the OpenAPI document (http.admin, admin_users, admin_system):
pages for a browser signed in with FORWARDAUTH_ADMIN_ROLE, forms posted with a CSRF token.

Every route answers the same way to anyone else, before reading anything of the request: 303 to
the login page (not signed in, or a step-up the console needs), 403 (signed in, not an
administrator).
"""

from __future__ import annotations

from forwardauth.http.openapi_parts import ERROR, FORM, HTML, JSON, TOO_LARGE, UNAVAILABLE, Schema, header


def _html(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


PAGE = _html("HTML page")
ONWARD = {
    "description": "The login page (not signed in; a step-up: the password again or a second factor), or after "
    "an action the page it was done from, saying what was done",
    "headers": {"Location": header("Where to"), "Set-Cookie": header("A pending sign-in, for a step-up")},
}
FORBIDDEN = {
    "description": "Not an administrator (an HTML page); for a form, also: posted from a page not ours, or "
    "without a valid CSRF token (JSON)",
    "content": {HTML: {"schema": {"type": "string"}}, JSON: {"schema": ERROR}},
}


def _page_or_json(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}, JSON: {"schema": ERROR}}}


BAD = _page_or_json("Input the page cannot take (the page again, saying which), or a malformed body (JSON)")
SEEN = {"200": PAGE, "303": ONWARD, "400": BAD, "403": FORBIDDEN, "503": UNAVAILABLE}
POSTED = {
    "303": ONWARD,
    "400": BAD,
    "403": FORBIDDEN,
    "409": {
        "description": "Refused now (the page again, saying why)",
        "content": {HTML: {"schema": {"type": "string"}}},
    },
    "413": TOO_LARGE,
    "415": {"description": "Not a form nor JSON", "content": {JSON: {"schema": ERROR}}},
    "503": UNAVAILABLE,
}
NOT_FOUND = {
    "description": "No such user, session or token (the page, saying so)",
    "content": {HTML: {"schema": {"type": "string"}}},
}
SECRET = _html("The one-time secret (a set-password link, a client's secret, a personal access token), shown once")
NAME = {"name": "username", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
CLIENT = {"name": "client_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
TOKEN_ID = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
COOKIE: list[Schema] = [{}, {"cookie": []}]


def _query(*names: str) -> list[Schema]:
    return [{"name": name, "in": "query", "schema": {"type": "string"}} for name in names]


def _get(summary: str, parameters: list[Schema], responses: Schema = SEEN) -> Schema:
    return {"get": {"summary": summary, "security": COOKIE, "parameters": parameters, "responses": responses}}


def _post(summary: str, fields: tuple[str, ...], responses: Schema, parameters: list[Schema] | None = None) -> Schema:
    # The fields' names, not their types: the access check answers before the body is read, so a
    # body of any shape gets the same 303 or 403 (an administrator's malformed one: 400).
    body = {"properties": {name: {"description": "a text field"} for name in ("csrf_token", *fields)}}
    operation: Schema = {
        "summary": summary,
        "security": COOKIE,
        "parameters": parameters or [],
        "requestBody": {"content": {FORM: {"schema": body}, JSON: {"schema": body}}},
        "responses": responses,
    }
    return {"post": operation}


def _user_action(summary: str, fields: tuple[str, ...] = (), shown: bool = False) -> Schema:
    responses = {**POSTED, "404": NOT_FOUND, **({"200": SECRET} if shown else {})}
    return _post(summary, fields, responses, [NAME])


def _client_action(summary: str, shown: bool = False) -> Schema:
    return _post(summary, (), {**POSTED, **({"200": SECRET} if shown else {})}, [CLIENT])


def admin_paths() -> dict[str, Schema]:
    return {
        "/admin": _get("The console: on to its users page", [], {"303": ONWARD, "403": FORBIDDEN, "503": UNAVAILABLE}),
        "/admin/users": _get("Users: search (q), and the form creating one", _query("q", "saved")),
        "/admin/users/new": {
            **_get(
                "The page of a user named new (the path the create form posts to)",
                _query("saved"),
                {**SEEN, "404": NOT_FOUND},
            ),
            **_post(
                "Create a user (username, email, roles); its set-password link shown once (delivery=link) or e-mailed "
                "(delivery=email)",
                ("username", "email", "roles", "delivery"),
                {**POSTED, "200": SECRET},
            ),
        },
        "/admin/users/{username}": _get(
            "A user: details, sessions, and the actions on them",
            [NAME, *_query("saved")],
            {**SEEN, "404": NOT_FOUND},
        ),
        "/admin/users/{username}/disable": _user_action("Disable the user and end their sessions (not oneself)"),
        "/admin/users/{username}/enable": _user_action("Enable the user"),
        "/admin/users/{username}/roles": _user_action(
            "Set the user's roles (roles, separated by spaces or commas); a role removed ends their sessions",
            ("roles",),
        ),
        "/admin/users/{username}/mfa-reset": _user_action("Remove the user's second factors and recovery codes"),
        "/admin/users/{username}/end-sessions": _user_action("End every session of the user"),
        "/admin/users/{username}/password-link": _user_action(
            "A new set-password link for the user, shown once", shown=True
        ),
        "/admin/users/{username}/tokens/new": _user_action(
            "Create a personal access token for the user (name; expires: a duration such as 30d; scopes), shown once",
            ("name", "expires", "scopes"),
            shown=True,
        ),
        "/admin/users/{username}/tokens/{token_id}/revoke": _post(
            "Revoke a personal access token of the user (at once on every worker)",
            (),
            {**POSTED, "404": NOT_FOUND},
            [NAME, TOKEN_ID],
        ),
        "/admin/sessions": _get(
            "Every live session (q: a username filter; page: from 0)", _query("q", "page", "saved")
        ),
        "/admin/sessions/end": _post(
            "End a session (sid); user: the page it was posted from, a user's",
            ("sid", "user"),
            {**POSTED, "404": NOT_FOUND},
        ),
        "/admin/clients": _get("The OAuth2 clients, and the form adding one", _query("saved")),
        "/admin/clients/new": _post(
            "Add a client (client_id, redirect_uris one per line, scopes, grant_types, public, trusted); a "
            "confidential client's secret shown once",
            ("client_id", "redirect_uris", "scopes", "grant_types", "public", "trusted"),
            {**POSTED, "200": SECRET},
        ),
        "/admin/clients/{client_id}/disable": _client_action("Disable the client: every token it holds stops working"),
        "/admin/clients/{client_id}/enable": _client_action("Enable the client"),
        "/admin/clients/{client_id}/rotate": _client_action("A new secret for the client, shown once", shown=True),
        "/admin/keys": _get("The signing keys", _query("saved")),
        "/admin/keys/rotate": _post("Rotate the signing key", (), POSTED),
        "/admin/audit": _get(
            "The audit trail, newest first, 50 a page (user, event, since and until as YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM, before: an event id)",
            _query("user", "event", "since", "until", "before"),
        ),
    }
