"""Passkeys on the real application (real PostgreSQL and Redis) with a software authenticator
(tests/softkey.py): registration on /mfa, passwordless sign-in, the second factor after the
password, and what must be refused (a sign counter gone back, no user verification, another
origin or relying party, a challenge answered twice, expired or altered, a disabled user, another
user's passkey), and that issuing a challenge stores nothing.

The page is reached as https://auth.example.test through a trusted proxy (X-Forwarded-*);
the relying party is the cookie domain, example.test. Cookies are sent by hand
(tests/test_renewal.send).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import pytest
import redis

from forwardauth import config
from forwardauth.accounts import challenges
from forwardauth.accounts.passkeys import PASSWORDLESS, SECOND_FACTOR
from forwardauth.http.app import create_app
from forwardauth.sealing import load_sealer
from forwardauth.stores import passkeys, users
from forwardauth.stores.postgres import Database

from .softkey import SoftAuthenticator, b64url, unb64url
from .support import PASSWORD, REDIS_URL, AppServer
from .test_renewal import REFRESH, send, set_cookies, value_of
from .test_web import MakeUser, audit_events

Client = Any
COOKIE, PENDING, CHALLENGE = "forwardauth", "forwardauth_2fa", "forwardauth_webauthn"
ORIGIN = "https://auth.example.test"
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.test", "Accept": "application/json"}
RD = "https://app.example.test/reports"


async def post(client: Client, path: str, body: dict[str, Any], cookies: dict[str, str], **headers: str) -> Any:
    return await send(client, "POST", path, cookies, json=body, headers={**PROXIED, **headers})


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def own_address() -> dict[str, str]:
    """A client address of its own: failures of other tests (from 127.0.0.1) never throttle it."""
    return {"X-Forwarded-For": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"}


async def password_sign_in(client: Client, user: users.User) -> Any:
    data = {"username": user.username, "password": PASSWORD, "rd": RD}
    return await send(client, "POST", "/login", data=data, headers=own_address())


async def signed_in(client: Client, user: users.User) -> str:
    """The access cookie of a password sign-in (a user with no second factor yet)."""
    response = await password_sign_in(client, user)
    assert response.status == 303 and response.headers["Location"] == RD, await response.text()
    return value_of(set_cookies(response)[COOKIE])


async def register(client: Client, access: str, key: SoftAuthenticator, name: str = "Laptop", **misbehave: Any) -> Any:
    """Options, the authenticator's new credential, then its verification."""
    options = await post(client, "/mfa/passkeys/options", {}, {COOKIE: access})
    assert options.status == 200, await options.text()
    challenge = value_of(set_cookies(options)[CHALLENGE])
    credential = key.create((await options.json())["publicKey"], **misbehave)
    return await post(
        client, "/mfa/passkeys", {"credential": credential, "name": name}, {COOKIE: access, CHALLENGE: challenge}
    )


async def enrolled_user(
    client: Client, make_user: MakeUser, backup: bool = False
) -> tuple[users.User, SoftAuthenticator]:
    user = make_user()
    key = SoftAuthenticator(ORIGIN, backup=backup)
    response = await register(client, await signed_in(client, user), key)
    assert response.status == 200, await response.text()
    return user, key


async def options_for(client: Client, path: str, cookies: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    response = await post(client, path, {}, cookies or {})
    assert response.status == 200, await response.text()
    return (await response.json())["publicKey"], value_of(set_cookies(response)[CHALLENGE])


async def passwordless(client: Client, key: SoftAuthenticator, rd: str = RD, **misbehave: Any) -> Any:
    options, challenge = await options_for(client, "/login/passkey/options")
    assert "allowCredentials" not in options or options["allowCredentials"] == []  # discoverable
    credential = key.get(options, **misbehave)
    return await post(client, "/login/passkey", {"credential": credential, "rd": rd}, {CHALLENGE: challenge})


async def wrong_password(client: Client) -> Any:
    """A failed password sign-in, from an address of its own (its failure throttles no other test)."""
    data = {"username": f"nobody-{secrets.token_hex(4)}", "password": "wrong", "rd": RD}
    return await send(client, "POST", "/login", data=data, headers=own_address())


def stored(database: Database, user: users.User) -> list[passkeys.Passkey]:
    return database.call(passkeys.of_user, user.id)


# --- registration ---------------------------------------------------------------------------------


async def test_register_a_passkey(client: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    access = await signed_in(client, user)
    options = await post(client, "/mfa/passkeys/options", {}, {COOKIE: access})
    public_key = (await options.json())["publicKey"]
    assert public_key["rp"]["id"] == "example.test"
    assert unb64url(public_key["user"]["id"]) == passkeys.user_handle(user.id)
    assert public_key["authenticatorSelection"]["userVerification"] == "required"
    assert public_key["authenticatorSelection"]["residentKey"] == "required"
    cookie = set_cookies(options)[CHALLENGE]
    assert "HttpOnly" in cookie and "Max-Age=300" in cookie and "Domain" not in cookie

    key = SoftAuthenticator(ORIGIN, backup=True)
    response = await register(client, access, key, name="  My   phone ")
    body = await response.json()
    assert response.status == 200 and body["redirect"] == "/mfa?saved=passkey"
    assert len(body["recovery_codes"]) == 10  # the first factor: codes, shown once
    [found] = stored(database, user)
    assert (found.name, found.credential_id, found.backup_eligible, found.backed_up) == (
        "My phone",
        key.credentials[0].credential_id,
        True,
        True,
    )
    assert "internal" in found.transports
    assert "mfa_enrol" in audit_events(database, user.username)

    # now that the user has a factor, a password-only session steps up first (JSON: where to go)
    step_up = await post(client, "/mfa/passkeys/options", {}, {COOKIE: access})
    assert step_up.status == 401 and (await step_up.json())["redirect"] == "/login/second-factor"
    assert PENDING in set_cookies(step_up)
    # a multi-factor one may add another; the authenticator already registered is excluded
    mfa_access = value_of(set_cookies(await passwordless(client, key))[COOKIE])
    again = await post(client, "/mfa/passkeys/options", {}, {COOKIE: mfa_access})
    assert [c["id"] for c in (await again.json())["publicKey"]["excludeCredentials"]] == [b64url(found.credential_id)]


async def test_registration_needs_user_verification_and_a_session(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    access = await signed_in(client, user)
    response = await register(client, access, SoftAuthenticator(ORIGIN), uv=False)
    assert response.status == 400 and stored(database, user) == []
    assert "mfa_failure" in audit_events(database, user.username)

    no_session = await post(client, "/mfa/passkeys/options", {}, {})
    assert no_session.status == 401 and (await no_session.json())["redirect"] == "/login?rd=%2Fmfa"


async def test_registration_challenge_is_single_use_and_for_its_user(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    alice, mallory = make_user(), make_user()
    alice_access, mallory_access = await signed_in(client, alice), await signed_in(client, mallory)
    options = await post(client, "/mfa/passkeys/options", {}, {COOKIE: mallory_access})
    challenge = value_of(set_cookies(options)[CHALLENGE])
    key = SoftAuthenticator(ORIGIN)
    body = {"credential": key.create((await options.json())["publicKey"]), "name": "x"}
    # Mallory's challenge does not register a passkey for Alice
    other = await post(client, "/mfa/passkeys", body, {COOKIE: alice_access, CHALLENGE: challenge})
    assert other.status == 400 and stored(database, alice) == []
    # for Mallory it does, once: the same answer again (from a session allowed to add passkeys) is refused
    assert (await post(client, "/mfa/passkeys", body, {COOKIE: mallory_access, CHALLENGE: challenge})).status == 200
    mfa_access = value_of(set_cookies(await passwordless(client, key))[COOKIE])
    spent = await post(client, "/mfa/passkeys", body, {COOKIE: mfa_access, CHALLENGE: challenge})
    assert spent.status == 400 and "expired or was already used" in (await spent.json())["error_description"]
    assert len(stored(database, mallory)) == 1


# --- passwordless ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("backup", "kind"), [(False, "hwk"), (True, "swk")])
async def test_passwordless_sign_in(
    client: Client, make_user: MakeUser, database: Database, backup: bool, kind: str
) -> None:
    user, key = await enrolled_user(client, make_user, backup)
    response = await passwordless(client, key)
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"redirect": RD}
    cookies = set_cookies(response)
    claims = claims_of(value_of(cookies[COOKIE]))
    assert claims["sub"] == user.id and sorted(claims["amr"]) == sorted([kind, "user", "mfa"])
    assert REFRESH in cookies and "Max-Age=0" in cookies[CHALLENGE]  # the challenge is forgotten
    [found] = stored(database, user)
    assert found.sign_count == 1 and found.last_used_at is not None
    assert audit_events(database, user.username)[-1] == "login_success"  # a sign-in of its own
    auth = await client.get("/auth", headers={"Authorization": f"Bearer {value_of(cookies[COOKIE])}"})
    assert auth.status == 200


async def test_passwordless_refuses_a_sign_counter_gone_back(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    user, key = await enrolled_user(client, make_user)
    assert (await passwordless(client, key, counter=5)).status == 200
    cloned = await passwordless(client, key, counter=5)
    assert cloned.status == 401 and COOKIE not in set_cookies(cloned)
    assert (await passwordless(client, key, counter=3)).status == 401
    assert stored(database, user)[0].sign_count == 5
    assert audit_events(database, user.username).count("mfa_failure") == 2
    assert (await passwordless(client, key, counter=6)).status == 200


async def test_an_authenticator_without_a_counter_stays_at_zero(client: Client, make_user: MakeUser) -> None:
    user = make_user()
    key = SoftAuthenticator(ORIGIN, count=False)
    assert (await register(client, await signed_in(client, user), key)).status == 200
    assert (await passwordless(client, key)).status == 200
    assert (await passwordless(client, key)).status == 200  # 0 and 0: no counter, no clone check


async def test_passwordless_needs_user_verification(client: Client, make_user: MakeUser) -> None:
    _, key = await enrolled_user(client, make_user)
    response = await passwordless(client, key, uv=False)
    assert response.status == 401 and COOKIE not in set_cookies(response)


@pytest.mark.parametrize("where", ["origin", "rp"])
async def test_passwordless_refuses_another_origin_or_relying_party(
    client: Client, make_user: MakeUser, where: str
) -> None:
    _, key = await enrolled_user(client, make_user)
    origin = "https://evil.example.com" if where == "origin" else None  # the page the browser was on
    if where == "rp":
        key.credentials[0].rp_id = "evil.example.com"  # signs for another relying party
    options, challenge = await options_for(client, "/login/passkey/options")
    options["rpId"] = key.credentials[0].rp_id
    credential = key.get(options, origin=origin)
    response = await post(client, "/login/passkey", {"credential": credential, "rd": RD}, {CHALLENGE: challenge})
    assert response.status == 401 and COOKIE not in set_cookies(response)


async def test_a_page_outside_the_relying_party_gets_no_options(client: Client) -> None:
    elsewhere = {"X-Forwarded-Host": "auth.other.test"}
    response = await post(client, "/login/passkey/options", {}, {}, **elsewhere)
    assert response.status == 400 and "FORWARDAUTH_WEBAUTHN_RP_ID" in (await response.json())["error_description"]
    plain = await post(client, "/login/passkey/options", {}, {}, **{"X-Forwarded-Proto": "http"})
    assert plain.status == 400  # plain HTTP on a host that is not loopback


async def test_a_challenge_is_answered_once(client: Client, make_user: MakeUser) -> None:
    _, key = await enrolled_user(client, make_user)
    options, challenge = await options_for(client, "/login/passkey/options")
    first = await post(client, "/login/passkey", {"credential": key.get(options), "rd": RD}, {CHALLENGE: challenge})
    assert first.status == 200
    again = await post(client, "/login/passkey", {"credential": key.get(options), "rd": RD}, {CHALLENGE: challenge})
    assert again.status == 400 and COOKIE not in set_cookies(again)
    none = await post(client, "/login/passkey", {"credential": key.get(options), "rd": RD}, {})
    assert none.status == 400


async def test_a_replayed_answer_is_refused(client: Client, make_user: MakeUser) -> None:
    """An authenticator without a sign counter (as synced passkeys often are): only the challenge's
    single use stops the very same answer from signing in twice."""
    user = make_user()
    key = SoftAuthenticator(ORIGIN, count=False)
    assert (await register(client, await signed_in(client, user), key)).status == 200
    options, challenge = await options_for(client, "/login/passkey/options")
    body = {"credential": key.get(options), "rd": RD}
    assert (await post(client, "/login/passkey", body, {CHALLENGE: challenge})).status == 200
    replayed = await post(client, "/login/passkey", body, {CHALLENGE: challenge})
    assert replayed.status == 400 and COOKIE not in set_cookies(replayed)
    assert "already used" in (await replayed.json())["error_description"]


async def test_an_expired_challenge_is_refused(client: Client, make_user: MakeUser, settings: config.Settings) -> None:
    _, key = await enrolled_user(client, make_user)
    options, challenge = await options_for(client, "/login/passkey/options")
    sealer = load_sealer(settings, create=False)
    found = challenges.opened(sealer, challenge, PASSWORDLESS, "", ORIGIN)
    assert found is not None and found.expires - time.time() <= challenges.TTL
    assert challenges.opened(sealer, challenge, PASSWORDLESS, "", ORIGIN, now=found.expires) is None
    issued_long_ago = time.time() - challenges.TTL - 1
    expired = challenges.seal(sealer, found.challenge, PASSWORDLESS, "", ORIGIN, now=issued_long_ago)
    body = {"credential": key.get(options), "rd": RD}
    refused = await post(client, "/login/passkey", body, {CHALLENGE: expired})
    assert refused.status == 400 and COOKIE not in set_cookies(refused)
    # the same answer with the challenge sealed just now: only the expiry differed
    fresh = challenges.seal(sealer, found.challenge, PASSWORDLESS, "", ORIGIN)
    assert (await post(client, "/login/passkey", body, {CHALLENGE: fresh})).status == 200


async def test_a_tampered_challenge_cookie_is_refused(
    client: Client, make_user: MakeUser, settings: config.Settings
) -> None:
    user, key = await enrolled_user(client, make_user)
    options, challenge = await options_for(client, "/login/passkey/options")
    body = {"credential": key.get(options), "rd": RD}
    middle = len(challenge) // 2
    flipped = challenge[:middle] + ("A" if challenge[middle] != "A" else "B") + challenge[middle + 1 :]
    sealer = load_sealer(settings, create=False)
    found = challenges.opened(sealer, challenge, PASSWORDLESS, "", ORIGIN)
    assert found is not None
    plain = sealer.open(unb64url(challenge), challenges.AAD)
    other_aad = b64url(sealer.seal(plain, user.id))  # sealed by us, but not as a challenge (a TOTP secret's aad)
    second_factor = challenges.seal(sealer, found.challenge, SECOND_FACTOR, "", ORIGIN)  # another purpose
    for forged in (flipped, challenge[:-4], "!!not-base64!!", "A" * 3000, other_aad, second_factor):
        response = await post(client, "/login/passkey", body, {CHALLENGE: forged})
        assert response.status == 400 and COOKIE not in set_cookies(response), forged
    assert (await post(client, "/login/passkey", body, {CHALLENGE: challenge})).status == 200


async def test_issuing_options_stores_nothing(client: Client, settings: config.Settings) -> None:
    """Options need no sign-in: were each call to store its challenge, anyone could fill Redis."""
    store = redis.Redis.from_url(REDIS_URL)
    try:
        before = set(store.scan_iter(match=settings.redis_prefix + "*", count=1000))
        for _ in range(5):
            await options_for(client, "/login/passkey/options")
        after = set(store.scan_iter(match=settings.redis_prefix + "*", count=1000))
    finally:
        store.close()
    assert after - before == set()


async def test_a_disabled_user_cannot_sign_in_with_a_passkey(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    user, key = await enrolled_user(client, make_user)
    database.call(users.set_disabled, user.username, True)
    response = await passwordless(client, key)
    assert response.status == 403 and COOKIE not in set_cookies(response)


async def test_the_user_handle_must_be_the_passkeys_owner(client: Client, make_user: MakeUser) -> None:
    _, key = await enrolled_user(client, make_user)
    other = make_user()
    response = await passwordless(client, key, user_handle=passkeys.user_handle(other.id))
    assert response.status == 401 and COOKIE not in set_cookies(response)


async def test_malformed_answers_are_a_400(client: Client) -> None:
    _, challenge = await options_for(client, "/login/passkey/options")
    for body in ({"credential": "x"}, {"credential": {"id": "a"}}, {"credential": {}, "rd": 5}):
        response = await post(client, "/login/passkey", body, {CHALLENGE: challenge})
        assert response.status == 400, body
    form = await send(client, "POST", "/login/passkey", data={"credential": "x"}, headers=PROXIED)
    assert form.status == 415


# --- as the second factor -------------------------------------------------------------------------


async def pending_after_password(client: Client, user: users.User) -> str:
    response = await password_sign_in(client, user)
    assert response.status == 303 and response.headers["Location"] == "/login/second-factor"
    return value_of(set_cookies(response)[PENDING])


async def test_a_passkey_as_the_second_factor(client: Client, make_user: MakeUser, database: Database) -> None:
    user, key = await enrolled_user(client, make_user)
    pending = await pending_after_password(client, user)
    page = await send(client, "GET", "/login/second-factor", {PENDING: pending})
    text = await page.text()
    assert 'data-passkey="second-factor"' in text and 'src="/static/passkeys.js"' in text

    options, challenge = await options_for(client, "/login/second-factor/passkey/options", {PENDING: pending})
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(key.credentials[0].credential_id)]
    response = await post(
        client,
        "/login/second-factor/passkey",
        {"credential": key.get(options)},
        {PENDING: pending, CHALLENGE: challenge},
    )
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"redirect": RD}
    cookies = set_cookies(response)
    assert sorted(claims_of(value_of(cookies[COOKIE]))["amr"]) == ["hwk", "mfa", "pwd", "user"]
    assert "Max-Age=0" in cookies[PENDING]  # the pending sign-in is spent
    again = await post(client, "/login/second-factor/passkey/options", {}, {PENDING: pending})
    assert again.status == 400


async def test_the_second_factor_takes_only_the_users_own_passkey(
    client: Client, make_user: MakeUser, database: Database
) -> None:
    alice, _ = await enrolled_user(client, make_user)
    _, mallory_key = await enrolled_user(client, make_user)
    pending = await pending_after_password(client, alice)
    options, challenge = await options_for(client, "/login/second-factor/passkey/options", {PENDING: pending})
    forged = mallory_key.get({**options, "allowCredentials": []})
    response = await post(
        client, "/login/second-factor/passkey", {"credential": forged}, {PENDING: pending, CHALLENGE: challenge}
    )
    assert response.status == 401 and COOKIE not in set_cookies(response)
    assert "mfa_failure" in audit_events(database, alice.username)
    # a passwordless challenge does not answer for a pending sign-in either
    _, login_challenge = await options_for(client, "/login/passkey/options")
    options, _ = await options_for(client, "/login/second-factor/passkey/options", {PENDING: pending})
    crossed = await post(
        client,
        "/login/second-factor/passkey",
        {"credential": mallory_key.get({**options, "allowCredentials": []})},
        {PENDING: pending, CHALLENGE: login_challenge},
    )
    assert crossed.status == 400


# --- managing -------------------------------------------------------------------------------------


async def test_list_rename_and_remove(client: Client, make_user: MakeUser, database: Database) -> None:
    user, key = await enrolled_user(client, make_user)
    signed = await passwordless(client, key)
    access = value_of(set_cookies(signed)[COOKIE])  # multi-factor: it may change the user's factors
    page = await send(client, "GET", "/mfa", {COOKIE: access})
    text = await page.text()
    credential = b64url(key.credentials[0].credential_id)
    assert page.status == 200 and "<strong>Laptop</strong>" in text and f'value="{credential}"' in text
    assert 'data-passkey="register"' in text

    path, fields = "/mfa/passkeys/rename", {"credential": credential, "name": "Desk key"}
    renamed = await send(client, "POST", path, {COOKIE: access}, data=fields)
    assert renamed.status == 303 and renamed.headers["Location"] == "/mfa?saved=passkey_renamed"
    assert [p.name for p in stored(database, user)] == ["Desk key"]
    bad = await send(client, "POST", path, {COOKIE: access}, data={**fields, "name": "\x07"})
    assert bad.status == 400 and [p.name for p in stored(database, user)] == ["Desk key"]

    other = make_user()  # someone else's session cannot touch it
    other_access = await signed_in(client, other)
    theirs = await send(client, "POST", "/mfa/passkeys/remove", {COOKIE: other_access}, data={"credential": credential})
    assert theirs.status == 303 and theirs.headers["Location"] == "/mfa" and len(stored(database, user)) == 1

    removed = await send(client, "POST", "/mfa/passkeys/remove", {COOKIE: access}, data={"credential": credential})
    assert removed.status == 303 and removed.headers["Location"] == "/mfa?saved=passkey_removed"
    assert stored(database, user) == []
    assert "mfa_remove" in audit_events(database, user.username)


async def test_passkeys_are_off_with_second_factors(aiohttp_client: Any, env: dict[str, str]) -> None:
    settings = config.load({**env, "FORWARDAUTH_SECOND_FACTOR": "off"})
    client = await aiohttp_client(AppServer(create_app(settings)))
    response = await post(client, "/login/passkey/options", {}, {})
    assert response.status == 403
    for path in ("/login", f"/login?rd={RD}"):  # no button that could only fail
        page = await send(client, "GET", path)
        text = await page.text()
        assert page.status == 200 and 'type="password"' in text, path
        assert "Sign in with a passkey" not in text and "passkeys.js" not in text, path
    wrong = await wrong_password(client)
    assert wrong.status == 401 and "Sign in with a passkey" not in await wrong.text()


async def test_the_script_is_ours(client: Client) -> None:
    response = await send(client, "GET", "/static/passkeys.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    assert "navigator.credentials" in await response.text()
    page = await send(client, "GET", "/login")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    text = await page.text()
    assert "Sign in with a passkey" in text and 'src="/static/passkeys.js"' in text
    assert 'type="password"' in text  # the password form is still there, without script
    wrong = await wrong_password(client)
    assert wrong.status == 401 and "Sign in with a passkey" in await wrong.text()  # and after a failure


async def test_a_user_who_must_enrol_may_do_it_with_a_passkey(
    aiohttp_client: Any, env: dict[str, str], make_user: MakeUser, database: Database
) -> None:
    """FORWARDAUTH_SECOND_FACTOR=required: the pending sign-in of a user with no factor registers a
    passkey on /mfa, which completes the sign-in (then on to rd, the recovery codes shown first)."""
    client = await aiohttp_client(AppServer(create_app(config.load({**env, "FORWARDAUTH_SECOND_FACTOR": "required"}))))
    user = make_user()
    response = await password_sign_in(client, user)
    assert response.status == 303 and response.headers["Location"] == "/mfa"
    pending = value_of(set_cookies(response)[PENDING])
    page = await send(client, "GET", "/mfa", {PENDING: pending})
    assert 'data-passkey="register"' in await page.text()

    options, challenge = await options_for(client, "/mfa/passkeys/options", {PENDING: pending})
    credential = SoftAuthenticator(ORIGIN).create(options)
    done = await post(
        client, "/mfa/passkeys", {"credential": credential, "name": "Key"}, {PENDING: pending, CHALLENGE: challenge}
    )
    body = await done.json()
    assert done.status == 200 and body["redirect"] == RD and len(body["recovery_codes"]) == 10
    cookies = set_cookies(done)
    assert sorted(claims_of(value_of(cookies[COOKIE]))["amr"]) == ["hwk", "mfa", "pwd", "user"]
    assert "Max-Age=0" in cookies[PENDING] and len(stored(database, user)) == 1


async def test_failures_are_throttled(aiohttp_client: Any, env: dict[str, str], make_user: MakeUser) -> None:
    """Counted as second-factor codes are (2fa:<user> and the address): a client of its own here."""
    client = await aiohttp_client(AppServer(create_app(config.load({**env, "FORWARDAUTH_LOGIN_MAX_FAILURES": "2"}))))
    user, key = await enrolled_user(client, make_user)
    pending = await pending_after_password(client, user)
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"

    async def attempt(uv: bool) -> Any:
        options, challenge = await options_for(client, "/login/second-factor/passkey/options", {PENDING: pending})
        body = {"credential": key.get(options, uv=uv)}
        cookies = {PENDING: pending, CHALLENGE: challenge}
        return await post(client, "/login/second-factor/passkey", body, cookies, **{"X-Forwarded-For": address})

    statuses = [(await attempt(uv=False)).status for _ in range(2)]
    throttled = await attempt(uv=False)
    assert statuses == [401, 401] and throttled.status == 429 and int(throttled.headers["Retry-After"]) > 0
    assert (await attempt(uv=True)).status == 429  # even the right passkey waits
