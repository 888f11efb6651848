"""The OpenID Connect token side on the real application (PostgreSQL, Redis): the authorization_code
grant, userinfo and discovery. Codes are issued with the store directly (the authorization
endpoint is tested in test_oidc_authorize)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from forwardauth.stores import clients, users
from forwardauth.stores.codes import AuthorizationCode
from forwardauth.stores.postgres import Database

from .test_oauth import basic, password_grant, token
from .test_web import MakeUser, auth_status, login, services_of

Client = Any
ISSUER = "http://auth.example.test"
REDIRECT = "https://app.example.test/callback"
OTHER_REDIRECT = "https://app.example.test/other"
ALL_SCOPES = ("openid", "profile", "email", "groups", "offline_access")


def s256(verifier: str) -> str:
    """RFC 7636 4.2, written out here (not the code under test's)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def relying_party(
    database: Database, public: bool = False, redirect_uris: tuple[str, ...] = (REDIRECT,)
) -> tuple[clients.Client, str | None]:
    return database.call(
        clients.create,
        f"rp-{secrets.token_hex(4)}",
        ["authorization_code", "refresh_token"],
        list(ALL_SCOPES),
        [],
        public,
        redirect_uris=redirect_uris,
    )


class Browser:
    """A user signed in through /login: the browser session codes are issued from."""

    def __init__(self, tokens: dict[str, Any], user: users.User) -> None:
        self.tokens = tokens
        self.user = user
        self.claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})

    @property
    def sid(self) -> str:
        return str(self.claims["sid"])


async def sign_in(client: Client, user: users.User) -> Browser:
    return Browser(await login(client, user), user)


async def issue(
    client: Client,
    browser: Browser,
    rp: clients.Client,
    scope: str = "openid profile email groups",
    nonce: str | None = "n-0S6_WzA2Mj",
    challenge: str | None = None,
    redirect_uri: str = REDIRECT,
) -> str:
    code = AuthorizationCode(
        client_id=rp.id,
        redirect_uri=redirect_uri,
        user_id=browser.user.id,
        username=browser.user.username,
        scope=scope,
        nonce=nonce,
        code_challenge=challenge,
        sid=browser.sid,
        amr=tuple(browser.claims["amr"]),
        auth_time=browser.claims["auth_time"],
        issued_at=int(time.time()),
    )
    return await services_of(client).codes.issue(code)


async def redeem(
    client: Client, rp: clients.Client, secret: str | None, code: str, **extra: str
) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **extra}
    form = {k: v for k, v in form.items() if v}
    if secret is None:
        form["client_id"] = rp.id
    return await token(client, form, basic(rp.id, secret) if secret else None)  # type: ignore[no-any-return]


def refused(answer: tuple[int, dict[str, Any]]) -> bool:
    status, body = answer
    return status == 400 and body["error"] == "invalid_grant" and bool(body["error_description"])


async def userinfo(client: Client, access_token: str, method: str = "GET") -> tuple[int, dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {access_token}"}
    response = await client.request(method, "/oauth/userinfo", headers=headers)
    return response.status, await response.json(), response.headers.get("WWW-Authenticate", "")


async def refresh(client: Client, rp: clients.Client, secret: str | None, value: str) -> tuple[int, dict[str, Any]]:
    return await token(  # type: ignore[no-any-return]
        client, {"grant_type": "refresh_token", "refresh_token": value}, basic(rp.id, secret or "")
    )


# --- the grant ------------------------------------------------------------------------------------


async def test_code_gives_an_id_token_checked_from_the_jwks_alone(
    client: Client, database: Database, make_user: MakeUser
) -> None:
    rp, secret = relying_party(database)
    user = make_user(roles=("ops", "dev"), email="ann@example.test")
    browser = await sign_in(client, user)
    verifier = secrets.token_urlsafe(48)
    code = await issue(client, browser, rp, challenge=s256(verifier))
    status, body = await redeem(client, rp, secret, code, code_verifier=verifier)
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["scope"] == "openid profile email groups"
    assert "refresh_token" not in body  # no offline_access

    jwks = await (await client.get("/.well-known/jwks.json")).json()
    decoded = jose_jwt.decode(body["id_token"], KeySet.import_key_set(jwks))
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": rp.id},
        sub={"essential": True, "value": user.id},
        nonce={"essential": True, "value": "n-0S6_WzA2Mj"},
        sid={"essential": True, "value": browser.sid},
    ).validate(decoded.claims)
    claims = decoded.claims
    assert decoded.header["typ"] == "JWT" and decoded.header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert claims["amr"] == ["pwd"] and claims["acr"] == "urn:forwardauth:acr:1fa"
    assert claims["auth_time"] == browser.claims["auth_time"] and claims["exp"] > time.time()
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert claims["preferred_username"] == user.username and claims["email"] == "ann@example.test"
    assert claims["groups"] == ["ops", "dev"]

    access = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert access["client_id"] == rp.id and access["sub"] == user.id and access["scope"] == body["scope"]
    assert access["sid"] != browser.sid  # the client's own session, child of the browser's
    assert await auth_status(client, body["access_token"]) == 200


async def test_public_client_needs_its_verifier(client: Client, database: Database, make_user: MakeUser) -> None:
    rp, secret = relying_party(database, public=True)
    assert secret is None
    browser = await sign_in(client, make_user())
    verifier = secrets.token_urlsafe(48)
    assert refused(await redeem(client, rp, None, await issue(client, browser, rp, challenge=s256(verifier))))
    wrong = secrets.token_urlsafe(48)
    code = await issue(client, browser, rp, challenge=s256(verifier))
    assert refused(await redeem(client, rp, None, code, code_verifier=wrong))
    assert refused(await redeem(client, rp, None, code, code_verifier=verifier))  # spent by the wrong try
    assert refused(await redeem(client, rp, None, await issue(client, browser, rp)))  # a code without PKCE
    status, body = await redeem(
        client, rp, None, await issue(client, browser, rp, challenge=s256(verifier)), code_verifier=verifier
    )
    assert status == 200 and body["id_token"]


async def test_confidential_client_with_wrong_or_unasked_verifier(
    client: Client, database: Database, make_user: MakeUser
) -> None:
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    verifier = secrets.token_urlsafe(48)
    code = await issue(client, browser, rp, challenge=s256(verifier))
    assert refused(await redeem(client, rp, secret, code, code_verifier=verifier[:-1] + "x"))
    assert refused(await redeem(client, rp, secret, await issue(client, browser, rp), code_verifier=verifier))
    status, body = await redeem(client, rp, secret, await issue(client, browser, rp))  # no PKCE asked, none given
    assert status == 200 and body["id_token"]


async def test_code_of_another_client(client: Client, database: Database, make_user: MakeUser) -> None:
    rp, secret = relying_party(database)
    thief, thief_secret = relying_party(database)
    browser = await sign_in(client, make_user())
    code = await issue(client, browser, rp)
    assert refused(await redeem(client, thief, thief_secret, code))
    assert refused(await redeem(client, rp, secret, code))  # spent: a leaked code is good for nobody


async def test_redirect_uri_must_be_the_requests(client: Client, database: Database, make_user: MakeUser) -> None:
    rp, secret = relying_party(database, redirect_uris=(REDIRECT, OTHER_REDIRECT))
    browser = await sign_in(client, make_user())
    assert refused(await redeem(client, rp, secret, await issue(client, browser, rp), redirect_uri=OTHER_REDIRECT))
    assert refused(await redeem(client, rp, secret, await issue(client, browser, rp), redirect_uri=REDIRECT + "/"))
    assert refused(await redeem(client, rp, secret, await issue(client, browser, rp), redirect_uri=""))
    # the only URI a client registered: it could have been no other, so it may be left out
    single, single_secret = relying_party(database)
    assert (await redeem(client, single, single_secret, await issue(client, browser, single), redirect_uri=""))[
        0
    ] == 200


async def test_code_reused_revokes_its_tokens(client: Client, database: Database, make_user: MakeUser) -> None:
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    code = await issue(client, browser, rp, scope="openid offline_access")
    status, first = await redeem(client, rp, secret, code)
    assert status == 200 and first["refresh_token"]
    assert await auth_status(client, first["access_token"]) == 200
    assert refused(await redeem(client, rp, secret, code))
    assert await auth_status(client, first["access_token"]) == 401
    assert refused(await refresh(client, rp, secret, first["refresh_token"]))
    assert await auth_status(client, browser.tokens["access_token"]) == 200  # the browser's session stays


async def test_unknown_code_and_missing_code(client: Client, database: Database) -> None:
    rp, secret = relying_party(database)
    assert refused(await redeem(client, rp, secret, secrets.token_urlsafe(32)))
    status, body = await redeem(client, rp, secret, "")
    assert status == 400 and body["error"] == "invalid_request"


async def test_browser_session_must_still_be_live(client: Client, database: Database, make_user: MakeUser) -> None:
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    code = await issue(client, browser, rp)
    response = await client.post("/logout", headers={"Authorization": f"Bearer {browser.tokens['access_token']}"})
    assert response.status == 200
    assert refused(await redeem(client, rp, secret, code))


async def test_offline_access_refresh_token_rotates_and_ends_with_the_browser_session(
    client: Client, database: Database, make_user: MakeUser
) -> None:
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    status, first = await redeem(client, rp, secret, await issue(client, browser, rp, scope="openid offline_access"))
    assert status == 200 and first["refresh_token"]
    status, second = await refresh(client, rp, secret, first["refresh_token"])
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert jwt.decode(second["access_token"], options={"verify_signature": False})["scope"] == "openid offline_access"
    assert await auth_status(client, second["access_token"]) == 200
    # Signing out of the browser session ends the client's session too, rotated or not.
    response = await client.post("/logout", headers={"Authorization": f"Bearer {browser.tokens['access_token']}"})
    assert response.status == 200
    assert await auth_status(client, second["access_token"]) == 401
    assert refused(await refresh(client, rp, secret, second["refresh_token"]))


async def test_a_client_not_allowed_the_grant(client: Client, database: Database, make_user: MakeUser) -> None:
    app, secret = database.call(clients.create, f"pw-{secrets.token_hex(4)}", ["password"], ["openid"], [], False)
    browser = await sign_in(client, make_user())
    status, body = await redeem(client, app, secret, await issue(client, browser, app))
    assert status == 400 and body["error"] == "unauthorized_client"


# --- userinfo -------------------------------------------------------------------------------------


async def access_for(client: Client, database: Database, user: users.User, scope: str) -> str:
    rp, secret = relying_party(database)
    browser = await sign_in(client, user)
    status, body = await redeem(client, rp, secret, await issue(client, browser, rp, scope=scope))
    assert status == 200, body
    return str(body["access_token"])


@pytest.mark.parametrize(
    "scope,expected",
    [
        ("openid", {"sub"}),
        ("openid profile", {"sub", "preferred_username", "name"}),
        ("openid email", {"sub", "email", "email_verified"}),
        ("openid groups", {"sub", "groups", "roles"}),
    ],
)
async def test_userinfo_by_scope(
    client: Client, database: Database, make_user: MakeUser, scope: str, expected: set[str]
) -> None:
    user = make_user(roles=("ops",), email="bo@example.test")
    access = await access_for(client, database, user, scope)
    for method in ("GET", "POST"):
        status, body, _ = await userinfo(client, access, method)
        assert status == 200 and set(body) == expected and body["sub"] == user.id
    assert body.get("email", "bo@example.test") == "bo@example.test" and body.get("email_verified") in (None, False)
    assert body.get("groups", ["ops"]) == ["ops"]


async def test_userinfo_reads_the_user_as_they_are_now(client: Client, database: Database, make_user: MakeUser) -> None:
    user = make_user()
    access = await access_for(client, database, user, "openid")
    database.call(users.set_disabled, user.username, True)
    status, body, challenge = await userinfo(client, access)
    assert status == 401 and body["error"] == "invalid_token" and 'error="invalid_token"' in challenge


async def test_userinfo_token_in_the_form(client: Client, database: Database, make_user: MakeUser) -> None:
    user = make_user()
    access = await access_for(client, database, user, "openid profile")
    response = await client.post("/oauth/userinfo", data={"access_token": access})
    assert response.status == 200 and (await response.json())["preferred_username"] == user.username
    both = await client.post(
        "/oauth/userinfo", data={"access_token": access}, headers={"Authorization": f"Bearer {access}"}
    )
    assert both.status == 400 and 'error="invalid_request"' in both.headers["WWW-Authenticate"]


async def test_userinfo_refusals_follow_rfc6750(client: Client, database: Database, make_user: MakeUser) -> None:
    user = make_user()
    # no token: a challenge naming no error (RFC 6750 3.1)
    response = await client.get("/oauth/userinfo")
    assert response.status == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="forwardauth"'
    status, body, challenge = await userinfo(client, "not.a.token")
    assert status == 401 and 'error="invalid_token"' in challenge and body["error"] == "invalid_token"
    # a token without openid: the browser's own, a password grant's
    browser = await sign_in(client, user)
    status, body, challenge = await userinfo(client, browser.tokens["access_token"])
    assert status == 403 and 'error="insufficient_scope"' in challenge and 'scope="openid"' in challenge
    app, secret = database.call(
        clients.create, f"pw-{secrets.token_hex(4)}", ["password", "client_credentials"], ["read"], [], False
    )
    tokens = await password_grant(client, app, secret, user)
    assert (await userinfo(client, tokens["access_token"]))[0] == 403
    # a client's own token, even one granted a scope named openid, speaks for no user
    own, own_secret = database.call(
        clients.create, f"cc-{secrets.token_hex(4)}", ["client_credentials"], ["openid"], [], False
    )
    _, tokens = await token(client, {"grant_type": "client_credentials"}, basic(own.id, own_secret or ""))
    status, _, challenge = await userinfo(client, tokens["access_token"])
    assert status == 403 and 'error="insufficient_scope"' in challenge
    # a revoked token
    access = await access_for(client, database, user, "openid")
    await client.post("/logout", headers={"Authorization": f"Bearer {access}"})
    assert (await userinfo(client, access))[0] == 401


# --- discovery ------------------------------------------------------------------------------------


def routed(client: Client) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in client.server.app.router.routes() if r.resource is not None}


async def test_discovery_is_true_to_the_server(client: Client) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert response.status == 200
    meta = await response.json()
    routes = routed(client)
    assert meta["issuer"] == ISSUER
    endpoints = {
        "authorization_endpoint": ("GET", "/oauth/authorize"),
        "token_endpoint": ("POST", "/oauth/token"),
        "userinfo_endpoint": ("GET", "/oauth/userinfo"),
        "jwks_uri": ("GET", "/.well-known/jwks.json"),
        "end_session_endpoint": ("GET", "/oauth/logout"),
        "revocation_endpoint": ("POST", "/oauth/revoke"),
        "introspection_endpoint": ("POST", "/oauth/introspect"),
    }
    for name, (method, path) in endpoints.items():
        assert meta[name] == ISSUER + path and (method, path) in routes, name
    assert ("POST", "/oauth/userinfo") in routes
    assert meta["response_types_supported"] == ["code"] and meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["subject_types_supported"] == ["public"]
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert meta["id_token_signing_alg_values_supported"] == [jwks["keys"][0]["alg"]]
    assert {"openid", "profile", "email", "groups", "offline_access"} <= set(meta["scopes_supported"])
    assert "authorization_code" in meta["grant_types_supported"]
    assert set(meta["prompt_values_supported"]) == {"none", "login", "consent"}
    assert {"sub", "nonce", "at_hash", "sid", "email", "groups"} <= set(meta["claims_supported"])
    # The RFC 8414 document agrees with it and stays plain OAuth metadata.
    oauth = await (await client.get("/.well-known/oauth-authorization-server")).json()
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert oauth[name] == meta[name]
    assert "userinfo_endpoint" not in oauth and oauth["authorization_response_iss_parameter_supported"] is True
