"""OAuth2 token service on the real application, with real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import jwt
import pytest

from forwardauth.core import policyfile
from forwardauth.stores import clients, users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, MakeClient
from .test_web import MakeUser, auth_status, services_of

Client = Any


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def token(client: Client, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = await client.post("/oauth/token", data=form, headers=headers or {})
    assert response.headers["Cache-Control"] == "no-store"
    return response.status, await response.json()


async def password_grant(
    client: Client, app: clients.Client, secret: str | None, user: users.User, **extra: str
) -> dict[str, Any]:
    form = {"grant_type": "password", "username": user.username, "password": PASSWORD, **extra}
    status, body = await token(client, form, basic(app.id, secret) if secret else None)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


# --- token endpoint --------------------------------------------------------------------------------


async def test_password_grant_with_basic_auth(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    user = make_user()
    body = await password_grant(client, app, secret, user)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["scope"] == "read write"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == app.id and claims["scope"] == "read write" and claims["sub"] == user.id
    assert await auth_status(client, body["access_token"]) == 200


async def test_client_secret_post_and_narrowed_scope(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    app, secret = make_client()
    assert secret is not None
    form = {
        "grant_type": "password",
        "username": make_user().username,
        "password": PASSWORD,
        "client_id": app.id,
        "client_secret": secret,
        "scope": "read",
    }
    status, body = await token(client, form)
    assert status == 200 and body["scope"] == "read"


async def test_public_client(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client(public=True)
    assert secret is None
    form = {"grant_type": "password", "username": make_user().username, "password": PASSWORD, "client_id": app.id}
    status, body = await token(client, form)
    assert status == 200 and body["refresh_token"]
    status, body = await token(client, {**form, "client_secret": "guess"})
    assert status == 401 and body["error"] == "invalid_client"


@pytest.mark.parametrize(
    "change,status,error",
    [
        ({"secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"grant_type": "device_code"}, 400, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, 400, "unauthorized_client"),
        ({"grant_type": "client_credentials"}, 400, "unauthorized_client"),
        ({"password": "wrong"}, 400, "invalid_grant"),
        ({"username": "nobody-at-all"}, 400, "invalid_grant"),
        ({"password": ""}, 400, "invalid_request"),
        ({"scope": "admin"}, 400, "invalid_scope"),
    ],
)
async def test_token_errors_follow_rfc6749(
    client: Client, make_client: MakeClient, make_user: MakeUser, change: dict[str, str], status: int, error: str
) -> None:
    app, secret = make_client()
    assert secret is not None
    client_id = change.pop("client_id", app.id)
    secret = change.pop("secret", secret)
    form = {"grant_type": "password", "username": make_user().username, "password": PASSWORD, **change}
    form = {k: v for k, v in form.items() if v != "" or k == "grant_type"}
    response = await client.post("/oauth/token", data=form, headers=basic(client_id, secret))
    assert response.status == status
    body = await response.json()
    assert body["error"] == error and body["error_description"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="forwardauth"'


async def test_malformed_token_requests(client: Client, make_client: MakeClient) -> None:
    app, secret = make_client()
    assert secret is not None
    json_body = await client.post("/oauth/token", json={"grant_type": "password"}, headers=basic(app.id, secret))
    assert json_body.status == 400 and (await json_body.json())["error"] == "invalid_request"
    twice = await client.post(
        "/oauth/token",
        data="grant_type=password&grant_type=password",
        headers={**basic(app.id, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert twice.status == 400 and (await twice.json())["error"] == "invalid_request"
    both = await client.post(
        "/oauth/token", data={"grant_type": "password", "client_secret": secret}, headers=basic(app.id, secret)
    )
    assert both.status == 400
    garbled = await client.post(
        "/oauth/token", data={"grant_type": "password"}, headers={"Authorization": "Basic !!!not-base64"}
    )
    assert garbled.status == 401


async def test_disabled_client_is_refused(
    client: Client, make_client: MakeClient, make_user: MakeUser, database: Database
) -> None:
    app, secret = make_client()
    database.call(clients.set_disabled, app.id, True)
    form = {"grant_type": "password", "username": make_user().username, "password": PASSWORD}
    status, body = await token(client, form, basic(app.id, secret or ""))
    assert status == 401 and body["error"] == "invalid_client"


async def test_rotated_client_secret(
    client: Client, make_client: MakeClient, make_user: MakeUser, database: Database
) -> None:
    app, old = make_client()
    new = database.call(clients.rotate_secret, app.id)
    form = {"grant_type": "password", "username": make_user().username, "password": PASSWORD}
    assert (await token(client, form, basic(app.id, old or "")))[0] == 401
    assert (await token(client, form, basic(app.id, new)))[0] == 200


# --- refresh ---------------------------------------------------------------------------------------


async def test_refresh_grant_rotates_and_narrows(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    assert secret is not None
    first = await password_grant(client, app, secret, make_user())
    status, second = await token(
        client,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "scope": "read"},
        basic(app.id, secret),
    )
    assert status == 200 and second["scope"] == "read" and second["refresh_token"] != first["refresh_token"]
    # a refresh cannot widen the scope again
    status, body = await token(
        client,
        {"grant_type": "refresh_token", "refresh_token": second["refresh_token"], "scope": "read write"},
        basic(app.id, secret),
    )
    assert status == 400 and body["error"] == "invalid_scope"


async def test_refresh_token_is_bound_to_its_client(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    app, secret = make_client()
    other, other_secret = make_client()
    tokens = await password_grant(client, app, secret, make_user())
    status, body = await token(
        client,
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        basic(other.id, other_secret or ""),
    )
    assert status == 400 and body["error"] == "invalid_grant"
    # nor can a /login refresh token be used through OAuth, or the other way round
    response = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status == 401


async def test_refresh_reuse_revokes_the_family(
    client: Client, make_client: MakeClient, make_user: MakeUser, database: Database
) -> None:
    app, secret = make_client()
    assert secret is not None
    user = make_user()
    first = await password_grant(client, app, secret, user)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    status, second = await token(client, refresh, basic(app.id, secret))
    assert status == 200
    thief = {**basic(app.id, secret), "X-Forwarded-For": "203.0.113.66"}  # not the same client retrying
    status, body = await token(client, refresh, thief)  # replayed: theft
    assert status == 400 and body["error"] == "invalid_grant"
    assert await auth_status(client, second["access_token"]) == 401
    assert await auth_status(client, first["access_token"]) == 401
    status, _ = await token(
        client, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}, basic(app.id, secret)
    )
    assert status == 400


# --- client credentials ----------------------------------------------------------------------------


async def test_client_credentials(client: Client, make_client: MakeClient) -> None:
    app, secret = make_client(grants=("client_credentials",), scopes=("metrics",), roles=("service",))
    status, body = await token(client, {"grant_type": "client_credentials"}, basic(app.id, secret or ""))
    assert status == 200 and "refresh_token" not in body and body["scope"] == "metrics"
    response = await client.get("/auth", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status == 200
    # The client's own headers, never a user's: no X-Auth-User, X-Auth-Roles nor X-Auth-Email.
    assert response.headers["X-Auth-Client"] == app.id and response.headers["X-Auth-Client-Roles"] == "service"
    assert response.headers["X-Auth-Subject"] == f"client:{app.id}"
    assert not {"X-Auth-User", "X-Auth-Roles", "X-Auth-Email"} & set(response.headers)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == f"client:{app.id}" and claims["client_id"] == app.id
    assert "preferred_username" not in claims


async def auth_as(client: Client, path: str, access_token: str) -> tuple[int, dict[str, str]]:
    """/auth for ``path`` (described as Envoy does), with the X-Auth-* headers of the answer."""
    response = await client.get("/auth/envoy" + path, headers={"Authorization": f"Bearer {access_token}"})
    return response.status, {k: v for k, v in response.headers.items() if k.lower().startswith("x-auth-")}


async def test_a_client_named_like_a_user_is_never_that_user(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    """Issue 12.5: a client_credentials client ``bob`` passed as the user ``bob`` (header and rules)."""
    name = f"bob-{secrets.token_hex(4)}"
    user = make_user(name=name, roles=("service",), email=None)
    app, secret = database.call(clients.create, name, ["client_credentials"], [], ["service"], False)
    assert user.username == app.id == name and secret is not None
    services_of(client).use_policy(
        policyfile.from_data(
            {
                "default": "deny",
                "rules": [
                    {"path": "/users", "users": [name]},
                    {"path": "/roles", "roles": ["service"]},
                    {"path": "/clients", "clients": [name]},
                    {"path": "/client-roles", "client_roles": ["service"]},
                    {"path": "/any", "policy": "authenticated"},
                ],
            },
            "test",
        )
    )
    as_user = (await password_grant_login(client, user))["access_token"]
    status, body = await token(client, {"grant_type": "client_credentials"}, basic(app.id, secret))
    assert status == 200
    as_client = body["access_token"]

    user_headers = {"X-Auth-User": name, "X-Auth-Roles": "service", "X-Auth-Subject": user.id, "X-Auth-AMR": "pwd"}
    client_headers = {"X-Auth-Client": name, "X-Auth-Client-Roles": "service", "X-Auth-Subject": f"client:{name}"}
    for path in ("/users", "/roles", "/any"):
        assert await auth_as(client, path, as_user) == (200, user_headers), path
    for path in ("/clients", "/client-roles"):
        assert (await auth_as(client, path, as_user))[0] == 403, path
    for path in ("/clients", "/client-roles", "/any"):
        assert await auth_as(client, path, as_client) == (200, client_headers), path
    for path in ("/users", "/roles"):
        assert (await auth_as(client, path, as_client))[0] == 403, path


async def password_grant_login(client: Client, user: users.User) -> dict[str, Any]:
    response = await client.post("/login", json={"username": user.username, "password": PASSWORD})
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]


async def test_a_clients_own_token_cannot_log_out_everywhere(client: Client, make_client: MakeClient) -> None:
    """There is no user behind it: a clear 400, not a 500 (its id is no user id)."""
    app, secret = make_client(grants=("client_credentials",))
    body = (await token(client, {"grant_type": "client_credentials"}, basic(app.id, secret or "")))[1]
    response = await client.post("/logout/all", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status == 400 and (await response.json())["error"] == "invalid_request"
    assert await auth_status(client, body["access_token"]) == 200


async def test_public_clients_cannot_be_created_for_client_credentials(database: Database) -> None:
    with pytest.raises(clients.ClientError):
        database.call(clients.create, f"p-{secrets.token_hex(3)}", ["client_credentials"], [], [], True)


# --- revocation and introspection -------------------------------------------------------------------


async def revoke(client: Client, app: clients.Client, secret: str | None, value: str, hint: str = "") -> int:
    form = {"token": value, **({"token_type_hint": hint} if hint else {})}
    if secret is None:
        form["client_id"] = app.id
    response = await client.post("/oauth/revoke", data=form, headers=basic(app.id, secret) if secret else {})
    return int(response.status)


async def test_revoke_access_token(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    tokens = await password_grant(client, app, secret, make_user())
    # a misleading hint does not matter
    assert await revoke(client, app, secret, tokens["access_token"], hint="refresh_token") == 200
    assert await auth_status(client, tokens["access_token"]) == 401


async def test_revoke_refresh_token_revokes_its_access_tokens(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    app, secret = make_client(public=True)
    tokens = await password_grant(client, app, None, make_user(), client_id=app.id)
    assert await revoke(client, app, secret, tokens["refresh_token"]) == 200
    assert await auth_status(client, tokens["access_token"]) == 401
    status, _ = await token(
        client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.id}
    )
    assert status == 400


async def test_revoke_unknown_or_foreign_tokens_is_200_and_harmless(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    app, secret = make_client()
    other, other_secret = make_client()
    tokens = await password_grant(client, app, secret, make_user())
    assert await revoke(client, app, secret, "no-such-token") == 200
    assert await revoke(client, other, other_secret, tokens["access_token"]) == 200
    assert await revoke(client, other, other_secret, tokens["refresh_token"]) == 200
    assert await auth_status(client, tokens["access_token"]) == 200
    response = await client.post("/oauth/revoke", data={}, headers=basic(app.id, secret or ""))
    assert response.status == 400 and (await response.json())["error"] == "invalid_request"


async def introspect(client: Client, app: clients.Client, secret: str, value: str) -> tuple[int, Any]:
    response = await client.post("/oauth/introspect", data={"token": value}, headers=basic(app.id, secret))
    return response.status, await response.json()


async def test_introspection(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    assert secret is not None
    user = make_user(roles=("ops",))
    tokens = await password_grant(client, app, secret, user)
    status, body = await introspect(client, app, secret, tokens["access_token"])
    assert status == 200 and body["active"] is True
    assert body["sub"] == user.id and body["username"] == user.username and body["client_id"] == app.id
    assert body["scope"] == "read write" and body["token_type"] == "Bearer" and body["roles"] == ["ops"]
    assert body["exp"] > time.time() and body["iss"] == "http://auth.example.test"
    status, body = await introspect(client, app, secret, tokens["refresh_token"])
    assert body["active"] is True and body["token_type"] == "refresh_token" and body["client_id"] == app.id
    await revoke(client, app, secret, tokens["access_token"])
    assert (await introspect(client, app, secret, tokens["access_token"]))[1] == {"active": False}


async def test_a_client_introspects_only_its_own_tokens(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    """Issue 21.8: app2 learned that app1's refresh token was live without spending it."""
    app1, secret1 = make_client()
    app2, secret2 = make_client(grants=("client_credentials",))
    assert secret1 is not None and secret2 is not None
    user = make_user()
    tokens = await password_grant(client, app1, secret1, user)
    browser = await password_grant_login(client, user)
    own = (await token(client, {"grant_type": "client_credentials"}, basic(app2.id, secret2)))[1]["access_token"]
    for value in (tokens["access_token"], tokens["refresh_token"], browser["access_token"], browser["refresh_token"]):
        assert await introspect(client, app2, secret2, value) == (200, {"active": False})
    for value in (tokens["access_token"], tokens["refresh_token"]):
        assert (await introspect(client, app1, secret1, value))[1]["active"] is True
    for value in (browser["access_token"], browser["refresh_token"], own):
        assert await introspect(client, app1, secret1, value) == (200, {"active": False})
    status, body = await introspect(client, app2, secret2, own)  # its own client_credentials token
    assert status == 200 and body["active"] is True and body["client_id"] == app2.id
    assert body["sub"] == f"client:{app2.id}" and "username" not in body
    # Nothing was spent: the refresh token still rotates, once.
    assert (
        await token(
            client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, basic(app1.id, secret1)
        )
    )[0] == 200


async def test_a_resource_server_introspects_any_access_token_but_no_foreign_refresh_token(
    client: Client, make_client: MakeClient, make_user: MakeUser, database: Database
) -> None:
    resource, secret = database.call(
        clients.create, f"api-{secrets.token_hex(4)}", ["client_credentials"], [], [], False, True
    )
    assert resource.resource_server and secret is not None
    app, app_secret = make_client()
    user = make_user()
    tokens = await password_grant(client, app, app_secret, user)
    browser = await password_grant_login(client, user)
    status, body = await introspect(client, resource, secret, tokens["access_token"])
    assert status == 200 and body["active"] is True and body["client_id"] == app.id
    assert body["username"] == user.username
    assert (await introspect(client, resource, secret, browser["access_token"]))[1]["active"] is True
    for value in (tokens["refresh_token"], browser["refresh_token"]):
        assert await introspect(client, resource, secret, value) == (200, {"active": False})


async def test_introspection_of_dead_tokens(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    assert secret is not None
    services = services_of(client)
    user = make_user()
    expired = services.tokens.mint(user.identity, "s", now=int(time.time()) - 3600).token
    for value in (expired, "garbage", "a.b.c", "x" * 300):
        assert (await introspect(client, app, secret, value)) == (200, {"active": False})


async def test_introspection_needs_a_confidential_client(client: Client, make_client: MakeClient) -> None:
    app, _ = make_client(public=True)
    response = await client.post("/oauth/introspect", data={"token": "x", "client_id": app.id})
    assert response.status == 401 and (await response.json())["error"] == "invalid_client"


# --- logout everywhere and metadata ---------------------------------------------------------------


async def test_logout_everywhere(client: Client, make_client: MakeClient, make_user: MakeUser) -> None:
    app, secret = make_client()
    user = make_user()
    phone = await password_grant(client, app, secret, user)
    browser = await client.post("/login", json={"username": user.username, "password": PASSWORD})
    laptop = await browser.json()
    bystander = await password_grant(client, app, secret, make_user())
    response = await client.post("/logout/all", headers={"Authorization": f"Bearer {laptop['access_token']}"})
    assert response.status == 200 and (await response.json())["sessions_revoked"] == 2
    for tokens in (phone, laptop):
        assert await auth_status(client, tokens["access_token"]) == 401
    assert (
        await token(
            client,
            {"grant_type": "refresh_token", "refresh_token": phone["refresh_token"]},
            basic(app.id, secret or ""),
        )
    )[0] == 400
    assert (await client.post("/refresh", json={"refresh_token": laptop["refresh_token"]})).status == 401
    assert await auth_status(client, bystander["access_token"]) == 200
    again = await client.post("/logout/all", headers={"Authorization": f"Bearer {laptop['access_token']}"})
    assert again.status == 401


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
async def test_metadata(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    body = await response.json()
    assert body["issuer"] == "http://auth.example.test"
    assert body["token_endpoint"] == "http://auth.example.test/oauth/token"
    assert body["jwks_uri"] == "http://auth.example.test/.well-known/jwks.json"
    assert set(body["grant_types_supported"]) == {
        "password",
        "refresh_token",
        "client_credentials",
        "authorization_code",
    }
    assert body["authorization_endpoint"] == "http://auth.example.test/oauth/authorize"
    assert body["response_types_supported"] == ["code"] and body["code_challenge_methods_supported"] == ["S256"]
    assert "client_secret_basic" in body["token_endpoint_auth_methods_supported"]
