"""Second factors on the real application (real PostgreSQL and Redis), codes computed with pyotp:
TOTP enrolment on /mfa, the second-factor step after the password, replay and throttling,
recovery codes, the ``otp`` field of JSON sign-in and of the password grant,
FORWARDAUTH_SECOND_FACTOR=required and off, and step-up on the login page.

Cookies are sent by hand (see test_renewal.send), as a browser would send them.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pyotp
import pytest

from forwardauth import config
from forwardauth.core.authn import Authentication
from forwardauth.http.app import create_app
from forwardauth.stores import recovery, secondfactors, totp, users
from forwardauth.stores.postgres import Connection, Database

from .support import PASSWORD, AppServer, MakeClient, backdate_sessions
from .test_renewal import REFRESH, send, set_cookies, value_of
from .test_web import MakeUser, audit_events, services_of

Client = Any
MakeApp = Callable[..., Awaitable[Client]]
COOKIE = "forwardauth"
PENDING = "forwardauth_2fa"
RD = "https://app.example.test/reports"
VAULT = "https://vault.example.test/secrets"  # second_factor: required
FRESH = "https://fresh.example.test/payroll"  # max_auth_age: 10m
POLICY = """\
default: authenticated
rules:
  - host: vault.example.test
    policy: authenticated
    second_factor: required
  - host: fresh.example.test
    policy: authenticated
    max_auth_age: 10m
"""


@pytest.fixture
def make_app(aiohttp_client: Any, env: dict[str, str], tmp_path: Path) -> MakeApp:
    """The application with the test policy and ``extra`` settings."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)

    async def make(**extra: str) -> Client:
        settings = config.load({**env, "FORWARDAUTH_POLICY_FILE": str(policy), **extra})
        return await aiohttp_client(AppServer(create_app(settings)))

    return make


@pytest.fixture
async def app(make_app: MakeApp) -> Client:
    return await make_app()


def code_at(secret: str, steps: int = 0) -> str:
    """The code of the step ``steps`` away from now (each code is accepted once, ±1 step)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


def wrong_code(secret: str) -> str:
    """A code that none of the accepted steps has."""
    near = {code_at(secret, k) for k in (-2, -1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(1000000)) if c not in near)


async def enrol(client: Client, user: users.User) -> tuple[str, list[str]]:
    """A confirmed TOTP secret and recovery codes, stored as enrolment stores them."""
    services = services_of(client)
    secret = pyotp.random_base32()
    sealed = services.sealer.seal(secret.encode(), user.id.encode())

    def store(conn: Connection) -> list[str]:
        totp.begin(conn, user.id, sealed)
        assert totp.confirm(conn, user.id)
        return recovery.generate(conn, user.id)

    return secret, await services.db.run(store)


def enrolled(database: Database, user: users.User) -> secondfactors.Enrolled:
    return database.call(secondfactors.enrolled, user.id)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


async def password_step(client: Client, user: users.User, rd: str = RD, **headers: str) -> Any:
    return await send(
        client, "POST", "/login", data={"username": user.username, "password": PASSWORD, "rd": rd}, headers=headers
    )


async def pending_after_password(client: Client, user: users.User, rd: str = RD) -> str:
    """The password form posted: on to the second-factor page, with only the pending cookie."""
    response = await password_step(client, user, rd)
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/login/second-factor"
    cookies = set_cookies(response)
    assert COOKIE not in cookies and REFRESH not in cookies  # no session yet
    return value_of(cookies[PENDING])


async def second_factor(client: Client, pending: str, headers: dict[str, str] | None = None, **fields: str) -> Any:
    return await send(client, "POST", "/login/second-factor", {PENDING: pending}, data=fields, headers=headers or {})


async def auth_for(client: Client, token: str, url: str) -> Any:
    """/auth for a GET of ``url``, as Traefik asks (an API client: no redirect)."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": scheme,
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": "/" + path,
    }
    return await client.get("/auth", headers=headers, allow_redirects=False)


async def form_sign_in(client: Client, user: users.User, rd: str = RD) -> tuple[str, str]:
    """A password-only sign-in (a user with no factor): (access token, refresh token)."""
    response = await password_step(client, user, rd)
    assert response.status == 303 and response.headers["Location"] == rd
    cookies = set_cookies(response)
    return value_of(cookies[COOKIE]), value_of(cookies[REFRESH])


# --- enrolment --------------------------------------------------------------------------------


async def test_totp_is_active_only_once_a_code_confirms_it(
    app: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    access, _ = await form_sign_in(app, user)
    page = await send(app, "GET", "/mfa", {COOKIE: access})
    assert page.status == 200 and 'id="totp-status">Not set up<' in await page.text()

    started = await send(app, "POST", "/mfa/totp/start", {COOKIE: access})
    body = await started.text()
    assert started.status == 200 and "<svg" in body and 'autocomplete="one-time-code"' in body
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', body)
    assert found is not None
    secret = found.group(1)

    wrong = await send(app, "POST", "/mfa/totp/confirm", {COOKIE: access}, data={"code": wrong_code(secret)})
    text = await wrong.text()
    assert wrong.status == 400 and 'aria-describedby="code-error"' in text and 'id="code-error"' in text
    assert not enrolled(database, user).totp  # not active

    right = await send(app, "POST", "/mfa/totp/confirm", {COOKIE: access}, data={"code": code_at(secret)})
    codes = re.findall(r"<li><code>([a-z2-7-]+)</code></li>", await right.text())
    assert right.status == 200 and len(codes) == 10  # shown once
    assert enrolled(database, user) == secondfactors.Enrolled(totp=True, passkeys=0, recovery_codes=10)
    assert "mfa_enrol" in audit_events(database, user.username)

    # the session was opened with the password alone: now that the user has a factor, the page
    # asks for it before showing anything
    again = await send(app, "GET", "/mfa", {COOKIE: access})
    assert again.status == 303 and again.headers["Location"] == "/login/second-factor"


async def test_the_mfa_page_needs_a_session(app: Client) -> None:
    response = await send(app, "GET", "/mfa")
    assert response.status == 303 and response.headers["Location"] == "/login?rd=%2Fmfa"


async def test_changes_need_a_recent_sign_in(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    services = services_of(app)
    # a token whose sign-in is 20 minutes old (as a renewal of an old session mints)
    old = Authentication.of(("pwd",), int(time.time()) - 1200)
    minted = services.tokens.mint(user.identity, "sid-" + secrets.token_hex(4), auth=old)
    await services.revocations.register(minted.claims.sid, minted.claims.jti, 60)
    page = await send(app, "GET", "/mfa", {COOKIE: minted.token})
    assert page.status == 200 and "/login?rd=%2Fmfa&amp;reauth=1" in await page.text()
    refused = await send(app, "POST", "/mfa/totp/start", {COOKIE: minted.token})
    assert refused.status == 303 and refused.headers["Location"] == "/login?rd=%2Fmfa&reauth=1"
    assert database.call(totp.pending_secret, user.id) is None
    # which shows the password form again, the username filled in, and leads back to /mfa
    form = await send(app, "GET", "/login?rd=%2Fmfa&reauth=1", {COOKIE: minted.token})
    text = await form.text()
    assert form.status == 200 and "Sign in again to continue." in text and f'value="{user.username}"' in text
    assert 'name="rd" value="/mfa"' in text


# --- signing in with a second factor -----------------------------------------------------------


async def test_password_then_totp_gives_a_multi_factor_session(
    app: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    secret, _ = await enrol(app, user)
    response = await password_step(app, user)
    pending_line = set_cookies(response)[PENDING]
    assert "HttpOnly" in pending_line and "Max-Age=300" in pending_line and "SameSite=Lax" in pending_line
    assert "Domain" not in pending_line and "Path=/;" in pending_line + ";"  # host-only, our folder
    pending = value_of(pending_line)

    page = await send(app, "GET", "/login/second-factor", {PENDING: pending})
    text = await page.text()
    assert page.status == 200 and user.username in text
    assert '<label for="code">' in text and 'inputmode="numeric"' in text and 'autocomplete="one-time-code"' in text
    assert '<label for="recovery_code">' in text

    code = code_at(secret, 1)
    done = await second_factor(app, pending, code=code)
    assert done.status == 303 and done.headers["Location"] == RD
    cookies = set_cookies(done)
    access = value_of(cookies[COOKIE])
    claims = claims_of(access)
    assert set(claims["amr"]) == {"pwd", "otp", "mfa"} and claims["acr"] == "urn:forwardauth:acr:mfa"
    assert value_of(cookies[PENDING]) in ("", '""')  # spent
    passed = await auth_for(app, access, VAULT)
    assert passed.status == 200 and set(passed.headers["X-Auth-AMR"].split(",")) == {"pwd", "otp", "mfa"}
    assert audit_events(database, user.username)[-2:] == ["login_success", "mfa_success"]

    # the pending sign-in is spent; the same code is refused for the next one
    assert (await second_factor(app, pending, code=code)).headers["Location"] == "/login"
    replayed = await second_factor(app, await pending_after_password(app, user), code=code)
    assert replayed.status == 401 and "wrong or was already used" in await replayed.text()
    assert audit_events(database, user.username)[-1] == "mfa_failure"


async def test_wrong_codes_are_throttled(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(
        FORWARDAUTH_LOGIN_MAX_FAILURES="3",
        FORWARDAUTH_LOGIN_WINDOW="60",
        FORWARDAUTH_REDIS_PREFIX=f"fatest:2fa{secrets.token_hex(3)}:",  # counters of its own
    )
    user = make_user()
    secret, _ = await enrol(app, user)
    pending = await pending_after_password(app, user)
    for _ in range(3):
        assert (await second_factor(app, pending, code=wrong_code(secret))).status == 401
    throttled = await second_factor(app, pending, code=code_at(secret))  # even the right code waits
    assert throttled.status == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 61
    assert "Too many failed attempts" in await throttled.text()
    json_login = await app.post("/login", json={"username": user.username, "password": PASSWORD, "otp": "123456"})
    assert json_login.status == 429 and "Retry-After" in json_login.headers


async def test_a_recovery_code_works_once(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    _, codes = await enrol(app, user)
    done = await second_factor(app, await pending_after_password(app, user), recovery_code=codes[0].upper())
    assert done.status == 303
    assert set(claims_of(value_of(set_cookies(done)[COOKIE]))["amr"]) == {"pwd", "kba", "mfa"}
    assert enrolled(database, user).recovery_codes == 9

    def detail(conn: Connection) -> Any:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT detail FROM audit_events WHERE username = %s AND event = 'mfa_success' ORDER BY id",
                (user.username,),
            )
            return [row[0] for row in cur.fetchall()]

    assert database.call(detail) == [{"method": "recovery_code", "left": 9}]
    again = await second_factor(app, await pending_after_password(app, user), recovery_code=codes[0])
    text = await again.text()
    assert again.status == 401 and 'aria-describedby="recovery-error"' in text


async def test_json_login_needs_the_otp_of_a_user_with_totp(app: Client, make_user: MakeUser) -> None:
    user, plain = make_user(), make_user()
    secret, _ = await enrol(app, user)
    body = {"username": user.username, "password": PASSWORD}
    missing = await app.post("/login", json=body)
    assert missing.status == 401 and (await missing.json())["error"] == "second_factor_required"
    wrong = await app.post("/login", json={**body, "otp": wrong_code(secret)})
    assert wrong.status == 401 and (await wrong.json())["error"] == "second_factor_required"
    right = await app.post("/login", json={**body, "otp": code_at(secret, 1)})
    assert right.status == 200
    assert set(claims_of((await right.json())["access_token"])["amr"]) == {"pwd", "otp", "mfa"}
    assert (await app.post("/login", json={"username": plain.username, "password": PASSWORD})).status == 200


async def test_the_password_grant_needs_the_otp_too(app: Client, make_user: MakeUser, make_client: MakeClient) -> None:
    user = make_user()
    secret, codes = await enrol(app, user)
    oauth_client, client_secret = make_client()
    form = {
        "grant_type": "password",
        "username": user.username,
        "password": PASSWORD,
        "client_id": oauth_client.id,
        "client_secret": client_secret or "",
    }
    missing = await app.post("/oauth/token", data=form)
    assert missing.status == 400 and (await missing.json())["error"] == "invalid_grant"
    right = await app.post("/oauth/token", data={**form, "otp": code_at(secret, 1)})
    assert right.status == 200, await right.text()
    assert set(claims_of((await right.json())["access_token"])["amr"]) == {"pwd", "otp", "mfa"}
    by_recovery = await app.post("/oauth/token", data={**form, "otp": codes[1]})
    assert by_recovery.status == 200


# --- FORWARDAUTH_SECOND_FACTOR -----------------------------------------------------------------


async def test_required_takes_a_user_with_none_through_enrolment(
    make_app: MakeApp, make_user: MakeUser, database: Database
) -> None:
    app = await make_app(FORWARDAUTH_SECOND_FACTOR="required")
    user = make_user()
    json_login = await app.post("/login", json={"username": user.username, "password": PASSWORD})
    assert json_login.status == 401 and "set one up" in (await json_login.json())["error_description"]

    response = await password_step(app, user)
    assert response.status == 303 and response.headers["Location"] == "/mfa"
    cookies = set_cookies(response)
    assert COOKIE not in cookies
    pending = value_of(cookies[PENDING])
    page = await send(app, "GET", "/mfa", {PENDING: pending})
    assert page.status == 200 and "needs a second factor" in await page.text()
    started = await send(app, "POST", "/mfa/totp/start", {PENDING: pending})
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', await started.text())
    assert found is not None
    done = await send(app, "POST", "/mfa/totp/confirm", {PENDING: pending}, data={"code": code_at(found.group(1))})
    text = await done.text()
    assert done.status == 200 and len(re.findall(r"<li><code>", text)) == 10 and f'href="{RD}"' in text
    cookies = set_cookies(done)
    assert set(claims_of(value_of(cookies[COOKIE]))["amr"]) == {"pwd", "otp", "mfa"} and REFRESH in cookies
    assert enrolled(database, user).totp
    # enrolled once: the pending sign-in is spent
    assert (await send(app, "GET", "/mfa", {PENDING: pending})).headers["Location"] == "/login?rd=%2Fmfa"


async def test_off_asks_for_nothing(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_SECOND_FACTOR="off")
    user = make_user()
    await enrol(app, user)
    access, _ = await form_sign_in(app, user)
    assert claims_of(access)["amr"] == ["pwd"]
    page = await send(app, "GET", "/mfa", {COOKIE: access})
    assert page.status == 200 and "Second factors are off on this server" in await page.text()


# --- step-up on the login page -----------------------------------------------------------------


async def test_step_up_to_a_second_factor_and_back_to_rd(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    old_access, old_refresh = await form_sign_in(app, user)  # before the user had a factor
    secret, _ = await enrol(app, user)
    refused = await auth_for(app, old_access, VAULT)
    assert refused.status == 401 and "insufficient_user_authentication" in refused.headers["WWW-Authenticate"]

    backdate_sessions(database, user)  # not a renewal loop: the browser comes later
    stepping = await send(app, "GET", f"/login?rd={quote(VAULT, safe='')}", {REFRESH: old_refresh})
    assert stepping.status == 303 and stepping.headers["Location"] == "/login/second-factor"
    pending = value_of(set_cookies(stepping)[PENDING])
    page = await send(app, "GET", "/login/second-factor", {PENDING: pending})
    assert page.status == 200 and user.username in await page.text()
    done = await second_factor(app, pending, code=code_at(secret, 1))
    assert done.status == 303 and done.headers["Location"] == VAULT
    cookies = set_cookies(done)
    access, refresh = value_of(cookies[COOKIE]), value_of(cookies[REFRESH])
    assert (await auth_for(app, access, VAULT)).status == 200  # the new token satisfies the rule
    # the old session is over, in Redis and PostgreSQL
    assert (await auth_for(app, old_access, RD)).status == 401
    assert (await app.post("/refresh", json={"refresh_token": old_refresh})).status == 401

    # renewing the new session leads straight back to rd: no loop
    backdate_sessions(database, user)
    renewed = await send(app, "GET", f"/login?rd={quote(VAULT, safe='')}", {REFRESH: refresh})
    assert renewed.status == 303 and renewed.headers["Location"] == VAULT
    assert (await auth_for(app, value_of(set_cookies(renewed)[COOKIE]), VAULT)).status == 200


async def test_a_rule_needing_a_factor_the_user_lacks_leads_to_enrolment(
    app: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    _, refresh = await form_sign_in(app, user)
    backdate_sessions(database, user)
    stepping = await send(app, "GET", f"/login?rd={quote(VAULT, safe='')}", {REFRESH: refresh})
    assert stepping.status == 303 and stepping.headers["Location"] == "/mfa"
    # and a password sign-in towards it goes the same way
    response = await password_step(app, user, VAULT)
    assert response.status == 303 and response.headers["Location"] == "/mfa"


async def test_a_sign_in_too_old_for_the_rule_gets_the_password_form(
    app: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    _, refresh = await form_sign_in(app, user)

    def age(conn: Connection) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE refresh_tokens SET auth_time = auth_time - interval '20 minutes',"
                " created_at = created_at - interval '20 minutes' WHERE user_id = %s",
                (user.id,),
            )

    database.call(age)
    form = await send(app, "GET", f"/login?rd={quote(FRESH, safe='')}", {REFRESH: refresh})
    text = await form.text()
    assert form.status == 200 and "Sign in again to continue." in text and f'value="{user.username}"' in text
    # the same session still renews for a page without the requirement
    assert (await send(app, "GET", f"/login?rd={quote(RD, safe='')}", {REFRESH: refresh})).status == 303

    access, _ = await form_sign_in(app, user, FRESH)
    assert (await auth_for(app, access, FRESH)).status == 200
