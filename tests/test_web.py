"""The HTTP API on the real application, with real PostgreSQL and Redis."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import redis
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from forwardauth import config
from forwardauth.constants import RedisKeys
from forwardauth.core.passwords import Passwords
from forwardauth.http.app import create_app
from forwardauth.http.services import SERVICES, Services
from forwardauth.stores import users
from forwardauth.stores.postgres import Connection, Database

from .support import PASSWORD, REDIS_URL, free_port

Client = Any
MakeUser = Callable[..., users.User]


def services_of(client: Client) -> Services:
    return client.server.app[SERVICES]  # type: ignore[no-any-return]


async def login(client: Client, user: users.User, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/login", json={"username": user.username, "password": password})
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def auth_status(client: Client, token: str) -> int:
    response = await client.get("/auth", headers={"Authorization": f"Bearer {token}"})
    return int(response.status)


def audit_events(database: Database, username: str) -> list[str]:
    def query(conn: Connection) -> list[str]:
        with conn.cursor() as cur:
            cur.execute("SELECT event FROM audit_events WHERE username = %s ORDER BY id", (username,))
            return [row[0] for row in cur.fetchall()]

    return database.call(query)


# --- login -----------------------------------------------------------------------------------


async def test_json_login_returns_tokens(client: Client, make_user: MakeUser) -> None:
    user = make_user(roles=("admin", "ops"))
    response = await client.post("/login", json={"username": user.username, "password": PASSWORD})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user.id and claims["preferred_username"] == user.username
    assert claims["roles"] == ["admin", "ops"] and claims["email"] == user.email
    assert claims["exp"] - claims["iat"] == 900
    key = RedisKeys(services_of(client).settings.redis_prefix).access_token(claims["sid"], claims["jti"])
    ttl = redis.Redis.from_url(REDIS_URL).ttl(key)
    assert 890 <= ttl <= 900
    assert audit_events(services_of(client).db, user.username)[-1] == "login_success"


async def test_username_is_case_and_width_insensitive(client: Client, make_user: MakeUser) -> None:
    """Names are NFKC-normalised and case-folded at creation and at login: one account however typed."""
    tag = secrets.token_hex(3)
    user = make_user(name=f"Straße-Élan-K-{tag}")
    assert user.username == f"strasse-élan-k-{tag}"
    for variant in (
        user.username.upper(),
        "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in user.username),  # full width
        f"STRASSE-E\u0301LAN-\u212a-{tag}",  # a combining accent; the Kelvin sign
        f"\U0001d42c\U0001d42d\U0001d42b\U0001d41a\U0001d42c\U0001d42c\U0001d41e-élan-k-{tag}",  # bold letters
        f"straße-élan-k-{tag}",
    ):
        response = await client.post("/login", json={"username": variant, "password": PASSWORD})
        assert response.status == 200, variant
        claims = jwt.decode((await response.json())["access_token"], options={"verify_signature": False})
        assert claims["sub"] == user.id


async def test_lookalike_usernames_are_other_names(client: Client, make_user: MakeUser) -> None:
    """Characters NFKC does not fold (other scripts, dotless i, invisible ones) make another name:
    they do not sign in to the account they imitate."""
    tag = secrets.token_hex(3)
    user = make_user(name=f"alice-io-{tag}")
    for lookalike in (
        f"\u0430lice-io-{tag}",  # Cyrillic a
        f"alice-\u0131o-{tag}",  # dotless i
        f"alice-i\u03bf-{tag}",  # Greek omicron
        f"al\u200bice-io-{tag}",
    ):  # a zero-width space
        response = await client.post("/login", json={"username": lookalike, "password": PASSWORD})
        assert response.status == 401, lookalike
    assert (await client.post("/login", json={"username": user.username, "password": PASSWORD})).status == 200


async def test_failed_logins_look_the_same(client: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    disabled = make_user()
    database.call(users.set_disabled, disabled.username, True)
    attempts = [
        {"username": user.username, "password": "wrong"},
        {"username": "nobody-" + user.username, "password": PASSWORD},
        {"username": disabled.username, "password": PASSWORD},
    ]
    bodies = []
    for attempt in attempts:
        response = await client.post("/login", json=attempt)
        assert response.status == 401
        bodies.append(await response.read())
    assert bodies[0] == bodies[1] == bodies[2]
    assert json.loads(bodies[0])["error"] == "invalid_credentials"
    assert audit_events(database, user.username)[-1] == "login_failure"
    assert audit_events(database, disabled.username)[-1] == "login_failure"


async def test_login_rehashes_when_parameters_changed(client: Client, make_user: MakeUser, database: Database) -> None:
    weaker = Passwords(time_cost=1, memory_cost=512, parallelism=1)
    user = make_user()
    database.call(users.set_password, weaker, user.username, PASSWORD)
    assert "m=512" in database.call(users.find, user.username).password_hash
    await login(client, user)
    stored = database.call(users.find, user.username).password_hash
    assert "m=1024" in stored and stored.startswith("$argon2id$")


async def test_form_login_sets_cookie_and_redirects(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    rd = "https://app.example.test/after?x=1"
    response = await client.post(
        "/login", data={"username": user.username, "password": PASSWORD, "rd": rd}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == rd
    cookies = response.headers.getall("Set-Cookie")
    [refresh] = [c for c in cookies if c.startswith("forwardauth_refresh=")]
    [device] = [c for c in cookies if c.startswith("forwardauth_device=")]  # see tests/test_regulation.py
    ours, stale = sorted((c for c in cookies if c not in (refresh, device)), key=lambda c: "Domain=" not in c)
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Domain=example.test", "Max-Age=900"):
        assert attribute in ours
    # The browser's refresh cookie (tests/test_renewal.py): for forwardauth's host and paths only.
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={14 * 86400}"):
        assert attribute in refresh
    assert "Domain" not in refresh
    # A host-only cookie of the same name, left from before the cookie domain was set, is expired.
    assert stale.startswith("forwardauth=;") and "Max-Age=0" in stale and "Domain" not in stale
    token = response.cookies["forwardauth"].value
    auth = await client.get("/auth", cookies={"forwardauth": token})
    assert auth.status == 200 and auth.headers["X-Auth-User"] == user.username


@pytest.mark.parametrize("rd", ["https://evil.test/", "//evil.test", "javascript:alert(1)", ""])
async def test_form_login_ignores_unsafe_rd(client: Client, make_user: MakeUser, rd: str) -> None:
    user = make_user()
    response = await client.post(
        "/login", data={"username": user.username, "password": PASSWORD, "rd": rd}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/"


async def test_login_always_issues_a_fresh_session(client: Client, make_user: MakeUser) -> None:
    """No session fixation: a cookie the browser already holds (planted, or of an earlier login) is
    never reused; each login mints a new token in a new session."""
    user = make_user()
    earlier = (await login(client, user))["access_token"]
    planted = services_of(client).tokens.mint(user.identity, sid="chosen-by-the-attacker").token
    for held in (earlier, planted, "not-even-a-token"):
        response = await client.post(
            "/login",
            data={"username": user.username, "password": PASSWORD},
            headers={"Cookie": f"forwardauth={held}"},
            allow_redirects=False,
        )
        assert response.status == 303
        fresh = response.cookies["forwardauth"].value
        assert fresh != held
        sid = jwt.decode(fresh, options={"verify_signature": False})["sid"]
        assert sid not in (jwt.decode(t, options={"verify_signature": False}).get("sid") for t in (earlier, planted))
        assert await auth_status(client, fresh) == 200
    assert await auth_status(client, planted) == 401  # never made live by a login


async def test_secure_cookie_by_default(aiohttp_client: Any, env: dict[str, str], make_user: MakeUser) -> None:
    settings = config.load({k: v for k, v in env.items() if k != "FORWARDAUTH_COOKIE_SECURE"})
    secure_client = await aiohttp_client(create_app(settings))
    user = make_user()
    response = await secure_client.post(
        "/login", data={"username": user.username, "password": PASSWORD}, allow_redirects=False
    )
    assert "Secure" in response.headers["Set-Cookie"]


async def test_form_login_failure_shows_the_form_again(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    rd = "https://app.example.test/x"
    response = await client.post("/login", data={"username": user.username, "password": "no", "rd": rd})
    assert response.status == 401
    assert_page_headers(response)
    page = await response.text()
    assert "Wrong username or password." in page
    assert f'value="{rd}"' in page and f'value="{user.username}"' in page


def assert_page_headers(response: Any) -> None:
    """What every HTML page of ours sends: not cached, not framed, not sniffed, no Referer off site."""
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"):
        assert directive in csp


async def test_login_page(client: Client) -> None:
    response = await client.get("/login", params={"rd": 'https://app.example.test/"><script>'})
    assert response.status == 200
    assert_page_headers(response)
    page = await response.text()
    assert '<form method="post" action="/login">' in page
    assert "<script>" not in page and "&#34;&gt;&lt;script&gt;" in page  # Jinja2's autoescape
    evil = await client.get("/login", params={"rd": "https://evil.test/"})
    assert "evil.test" not in await evil.text()


# --- /auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE", "PATCH"])
async def test_auth_passes_a_live_token(client: Client, make_user: MakeUser, method: str) -> None:
    user = make_user(roles=("a", "b"))
    token = (await login(client, user))["access_token"]
    response = await client.request(method, "/auth", headers={"Authorization": f"bearer {token}"})
    assert response.status == 200
    assert response.headers["X-Auth-User"] == user.username
    assert response.headers["X-Auth-Roles"] == "a,b"
    assert response.headers["X-Auth-Email"] == user.email
    assert response.headers["X-Auth-Subject"] == user.id


async def test_auth_without_email_sends_no_email_header(client: Client, make_user: MakeUser) -> None:
    token = (await login(client, make_user(email=None)))["access_token"]
    response = await client.get("/auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200 and "X-Auth-Email" not in response.headers


async def test_auth_without_token(client: Client) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = await client.get("/auth", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_auth_refuses_a_valid_signature_unknown_to_redis(client: Client, make_user: MakeUser) -> None:
    """A correctly signed token that was never registered (or whose key was lost) does not pass."""
    services = services_of(client)
    token = services.tokens.mint(make_user().identity, sid="never-registered").token
    assert await auth_status(client, token) == 401


# --- behind proxies: the login redirect and Envoy ---------------------------------------------

BROWSER = {"Accept": "text/html,application/xhtml+xml"}


@pytest.mark.parametrize(
    "headers,status,location",
    [
        # Traefik / Caddy: our 302 goes back to the browser as is
        (
            {
                "X-Forwarded-Method": "GET",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "app.example.test",
                "X-Forwarded-Uri": "/a?b=1&c=2",
            },
            302,
            "http://auth.example.test/login?rd=https%3A%2F%2Fapp.example.test%2Fa%3Fb%3D1%26c%3D2",
        ),
        # nginx: 401 with Location, which error_page turns into a redirect
        (
            {"X-Original-URL": "https://app.example.test/x", "X-Original-Method": "GET"},
            401,
            "http://auth.example.test/login?rd=https%3A%2F%2Fapp.example.test%2Fx",
        ),
        # a host outside the allowed domains: no rd
        (
            {"X-Forwarded-Uri": "/", "X-Forwarded-Host": "evil.test", "X-Forwarded-Method": "GET"},
            302,
            "http://auth.example.test/login",
        ),
    ],
)
async def test_browser_without_token_is_sent_to_login(
    client: Client, headers: dict[str, str], status: int, location: str
) -> None:
    response = await client.get("/auth", headers={**BROWSER, **headers}, allow_redirects=False)
    assert response.status == status
    assert response.headers["Location"] == location
    assert response.headers["Cache-Control"] == "no-store"


async def test_api_client_without_token_gets_no_redirect(client: Client) -> None:
    response = await client.get(
        "/auth", headers={"X-Forwarded-Uri": "/", "Accept": "application/json"}, allow_redirects=False
    )
    assert response.status == 401 and "Location" not in response.headers


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_envoy_route_accepts_any_method_and_path(client: Client, make_user: MakeUser, method: str) -> None:
    token = (await login(client, make_user()))["access_token"]
    response = await client.request(method, "/auth/envoy/api/items/7?x=1", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200 and response.headers["X-Auth-User"]
    denied = await client.request(
        method, "/auth/envoy/api/items/7?x=1", headers={**BROWSER, "Host": "app.example.test"}, allow_redirects=False
    )
    assert denied.status == 401
    assert denied.headers["Location"] == (
        "http://auth.example.test/login?rd=http%3A%2F%2Fapp.example.test%2Fapi%2Fitems%2F7%3Fx%3D1"
    )


async def test_login_form_follows_the_proxy_prefix(client: Client) -> None:
    page = await (await client.get("/login", headers={"X-Forwarded-Prefix": "/forwardauth"})).text()
    assert 'action="/forwardauth/login"' in page
    bogus = await (await client.get("/login", headers={"X-Forwarded-Prefix": "//evil.test"})).text()
    assert 'action="/login"' in bogus


async def test_browser_logout_returns_to_the_login_page(client: Client, make_user: MakeUser) -> None:
    token = (await login(client, make_user()))["access_token"]
    response = await client.post(
        "/logout", headers={**BROWSER, "Authorization": f"Bearer {token}"}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/login?signed_out=1"
    assert await auth_status(client, token) == 401


# --- refresh and logout ------------------------------------------------------------------------


async def test_refresh_rotates(client: Client, make_user: MakeUser) -> None:
    first = await login(client, make_user())
    response = await client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    second = await response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert await auth_status(client, second["access_token"]) == 200
    first_claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    second_claims = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert first_claims["sid"] == second_claims["sid"] and first_claims["jti"] != second_claims["jti"]
    # the new refresh token works once more (form body this time)
    third = await client.post("/refresh", data={"refresh_token": second["refresh_token"]})
    assert third.status == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_session(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    first = await login(client, user)
    second = await (await client.post("/refresh", json={"refresh_token": first["refresh_token"]})).json()
    # replayed from elsewhere (the same client again, within REFRESH_RETRY_GRACE, is a retry: test_retry.py)
    replay = await client.post(
        "/refresh", json={"refresh_token": first["refresh_token"]}, headers={"X-Forwarded-For": "203.0.113.66"}
    )
    assert replay.status == 401
    assert (await replay.json())["error"] == "invalid_grant"
    # everything of that session is dead now: the access tokens and the latest refresh token
    assert await auth_status(client, second["access_token"]) == 401
    assert await auth_status(client, first["access_token"]) == 401
    again = await client.post("/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status == 401

    def reuse_events(conn: Connection) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_events WHERE event = 'refresh_reuse' AND user_id = %s", (user.id,))
            row = cur.fetchone()
            return int(row[0]) if row else 0

    assert database.call(reuse_events) == 1


@pytest.mark.parametrize("token", ["", "unknown-token", "x" * 300, "ü"])
async def test_refresh_with_bad_token(client: Client, token: str) -> None:
    response = await client.post("/refresh", json={"refresh_token": token})
    assert response.status == 401


async def test_refresh_for_a_disabled_user_fails(client: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    tokens = await login(client, user)
    database.call(users.set_disabled, user.username, True)
    response = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status == 401


async def test_logout_revokes_the_whole_session(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    first = await login(client, user)
    other_session = await login(client, user)
    second = await (await client.post("/refresh", json={"refresh_token": first["refresh_token"]})).json()
    response = await client.post("/logout", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert response.status == 200 and (await response.json()) == {"logged_out": True}
    assert "forwardauth=" in response.headers["Set-Cookie"]
    assert "Max-Age=0" in response.headers["Set-Cookie"] or "expires" in response.headers["Set-Cookie"].lower()
    assert await auth_status(client, first["access_token"]) == 401
    assert await auth_status(client, second["access_token"]) == 401
    assert (await client.post("/refresh", json={"refresh_token": second["refresh_token"]})).status == 401
    # another login of the same user is not affected
    assert await auth_status(client, other_session["access_token"]) == 200
    assert audit_events(services_of(client).db, user.username)[-1] == "logout"


async def test_logout_with_cookie_and_with_refresh_token(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    by_cookie = await login(client, user)
    response = await client.post("/logout", cookies={"forwardauth": by_cookie["access_token"]})
    assert (await response.json()) == {"logged_out": True}
    assert await auth_status(client, by_cookie["access_token"]) == 401
    by_refresh = await login(client, user)
    response = await client.post("/logout", json={"refresh_token": by_refresh["refresh_token"]})
    assert (await response.json()) == {"logged_out": True}
    assert await auth_status(client, by_refresh["access_token"]) == 401


async def test_logout_works_with_an_expired_access_token(client: Client, make_user: MakeUser) -> None:
    services = services_of(client)
    tokens = await login(client, make_user())
    claims = services.tokens.verify(tokens["access_token"])
    expired = services.tokens.mint(claims.identity, claims.sid, now=int(time.time()) - 3600).token
    response = await client.post("/logout", headers={"Authorization": f"Bearer {expired}"})
    assert (await response.json()) == {"logged_out": True}
    assert await auth_status(client, tokens["access_token"]) == 401


async def test_logout_without_a_session_is_harmless(client: Client) -> None:
    response = await client.post("/logout")
    assert response.status == 200 and (await response.json()) == {"logged_out": False}


# --- keys and health ---------------------------------------------------------------------------


async def test_jwks_verifies_minted_tokens_with_another_library(client: Client, make_user: MakeUser) -> None:
    token = (await login(client, make_user()))["access_token"]
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    jwks = await response.json()
    assert all("d" not in key and "p" not in key for key in jwks["keys"])  # public parts only
    decoded = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["kid"] == services_of(client).tokens.ring.current.kid
    assert decoded.claims["aud"] == "forwardauth"


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json()) == {"ready": True, "checks": {"redis": "ok", "postgres": "ok"}}


async def test_readiness_reports_unreachable_stores(aiohttp_client: Any, env: dict[str, str]) -> None:
    broken = {
        **env,
        "FORWARDAUTH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "FORWARDAUTH_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
    }
    down = await aiohttp_client(create_app(config.load(broken)))
    response = await down.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"redis": "unreachable", "postgres": "unreachable"}
    # the hot path fails closed with 503, and login with 503, never 500
    token = "x.y.z"
    assert (await down.get("/auth", headers={"Authorization": f"Bearer {token}"})).status == 401
    login_response = await down.post("/login", json={"username": "a", "password": "b"})
    assert login_response.status == 503


async def test_ambiguous_subrequest_is_a_400(client: Client) -> None:
    response = await client.get("/auth", headers={**BROWSER, "X-Forwarded-Uri": "/admin", "X-Original-URI": "/public"})
    assert response.status == 400 and (await response.json())["error"] == "invalid_request"
