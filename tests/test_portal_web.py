"""The account portal on the real application (real PostgreSQL and Redis), in process: the
account page and its sessions, signing sessions out, changing the password and the e-mail
address, the forgotten-password form, and the pages e-mailed links open.

Cookies are sent by hand (see test_renewal.send), as a browser would send them. Links are made
with the stores directly (test_links sends them through a real SMTP server).
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from forwardauth.accounts import links as account_links
from forwardauth.http.portal import in_words
from forwardauth.stores import links, users
from forwardauth.stores.postgres import Database

from .mailbox import link_in
from .support import PASSWORD, MakeApp, csrf_of, free_port
from .test_renewal import send, set_cookies, sid, value_of
from .test_web import MakeUser, auth_status, login, services_of

Client = Any
COOKIE = "forwardauth"
FORM_COOKIE = "forwardauth_form"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
NEW_PASSWORD = "purple elephant under the quiet bridge"


@pytest.fixture
async def mail_app(make_app: MakeApp) -> Client:
    """With a mail server configured (nothing listens there: mail goes out in the background,
    and no answer waits for it)."""
    return await make_app(FORWARDAUTH_SMTP_URL=f"smtp://127.0.0.1:{free_port()}")


async def browser_login(client: Client, user: users.User, agent: str = FIREFOX) -> str:
    """Sign in with the form: the access cookie's value."""
    response = await send(
        client,
        "POST",
        "/login",
        data={"username": user.username, "password": PASSWORD, "rd": ""},
        headers={"User-Agent": agent},
    )
    assert response.status == 303, await response.text()
    return value_of(set_cookies(response)[COOKIE])


def token_in_link(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def page(client: Client, path: str, token: str) -> tuple[int, str]:
    response = await send(client, "GET", path, {COOKIE: token})
    return response.status, await response.text()


async def post(client: Client, path: str, token: str, **fields: str) -> Any:
    """A form of the account page, posted with that page's CSRF token (unless one is given)."""
    if "csrf_token" not in fields:
        status, body = await page(client, "/account", token)
        assert status == 200
        fields["csrf_token"] = csrf_of(body)
    return await send(client, "POST", path, {COOKIE: token}, data=fields)


# --- the account page ---------------------------------------------------------------------------


async def test_not_signed_in_goes_to_the_login_page_and_back(app: Client) -> None:
    for path in ("/account", "/account/password", "/account/email"):
        response = await send(app, "GET", path)
        assert response.status == 303
        assert response.headers["Location"] == f"/login?rd={quote(path, safe='')}"
    response = await send(app, "POST", "/account/sessions/end-others", data={"csrf_token": "x"})
    assert response.status == 303


async def test_the_account_page_lists_the_sessions(app: Client, make_user: MakeUser) -> None:
    user = make_user(roles=("user", "ops"), email="ada@example.test")
    token = await browser_login(app, user)
    api = (await login(app, user))["access_token"]  # a second session, no browser
    status, body = await page(app, "/account", token)
    assert status == 200
    assert '<dl id="identity">' in body and user.username in body and "ada@example.test" in body
    assert "user, ops" in body
    assert re.search(r'<p id="this-session">\s*This session signed in with password on \d{4}-', body)
    assert f'<tr data-sid="{sid(token)}">' in body and f'<tr data-sid="{sid(api)}">' in body
    assert body.count('<strong class="current">') == 1
    assert "Firefox on Linux" in body
    assert "Sign out this session" in body and 'id="end-others"' in body
    assert 'href="/account/password"' in body and 'href="/mfa"' in body
    assert "/admin/users" not in body  # not an admin


@pytest.mark.parametrize(
    ("amr", "words"),
    [
        (("mfa", "otp", "pwd"), "password, authenticator app"),
        (("hwk", "swk", "user"), "passkey"),
        (("kba", "mfa", "pwd"), "password, recovery code"),
    ],
)
def test_how_a_session_signed_in_in_words(amr: tuple[str, ...], words: str) -> None:
    assert in_words(amr) == words


async def test_an_admin_gets_a_link_to_the_console(app: Client, make_user: MakeUser) -> None:
    token = await browser_login(app, make_user(roles=("admin",)))
    status, body = await page(app, "/account", token)
    assert status == 200 and 'href="/admin/users"' in body


async def test_saved_notices_are_fixed_sentences(app: Client, make_user: MakeUser) -> None:
    token = await browser_login(app, make_user())
    status, body = await page(app, "/account?saved=password", token)
    assert status == 200 and "Your password is changed." in body
    status, body = await page(app, "/account?saved=%3Cscript%3Ealert(1)%3C/script%3E", token)
    assert status == 200 and "alert(1)" not in body and 'class="notice"' not in body


# --- signing sessions out -----------------------------------------------------------------------


async def test_sign_out_another_session(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    token = await browser_login(app, user)
    other = await browser_login(app, user, "curl/8.5.0")
    response = await post(app, "/account/sessions/end", token, sid=sid(other))
    assert response.status == 303
    assert response.headers["Location"] == "/account?saved=session_ended"
    assert await auth_status(app, other) == 401  # at once
    assert await auth_status(app, token) == 200
    _, body = await page(app, "/account?saved=session_ended", token)
    assert "That session is signed out." in body and sid(other) not in body


async def test_sign_out_this_session(app: Client, make_user: MakeUser) -> None:
    token = await browser_login(app, make_user())
    response = await post(app, "/account/sessions/end", token, sid=sid(token))
    assert response.status == 303
    assert response.headers["Location"] == "/login?signed_out=1"
    cleared = set_cookies(response)
    assert value_of(cleared[COOKIE]) in ("", '""')
    assert await auth_status(app, token) == 401


async def test_a_session_not_ones_own_is_a_404(app: Client, make_user: MakeUser) -> None:
    token = await browser_login(app, make_user())
    stranger = await browser_login(app, make_user())
    for target in (sid(stranger), "no-such-session", ""):
        response = await post(app, "/account/sessions/end", token, sid=target)
        assert response.status == 404
        assert "not one of yours" in await response.text()
    assert await auth_status(app, stranger) == 200


async def test_sign_out_everywhere_else(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    token = await browser_login(app, user)
    others = [await browser_login(app, user), (await login(app, user))["access_token"]]
    response = await post(app, "/account/sessions/end-others", token)
    assert response.status == 303
    assert response.headers["Location"] == "/account?saved=others_ended"
    assert [await auth_status(app, other) for other in others] == [401, 401]
    assert await auth_status(app, token) == 200


async def test_forms_need_this_sessions_csrf_token(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    token = await browser_login(app, user)
    other = await browser_login(app, user)
    _, other_page = await page(app, "/account", other)
    for csrf in ("", "garbage", csrf_of(other_page)):  # none, not ours, another session's
        response = await post(app, "/account/sessions/end-others", token, csrf_token=csrf)
        assert response.status == 403
    assert await auth_status(app, other) == 200
    response = await send(
        app, "POST", "/account/sessions/end-others", {COOKIE: token}, headers={"Origin": "https://evil.test"}
    )
    assert response.status == 403


# --- the password -------------------------------------------------------------------------------


async def test_change_password(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    token = await browser_login(app, user)
    other = await browser_login(app, user)
    status, body = await page(app, "/account/password", token)
    assert status == 200
    for name, complete in (
        ("current_password", "current-password"),
        ("new_password", "new-password"),
        ("new_password_again", "new-password"),
    ):
        assert f'<label for="{name}">' in body
        assert re.search(f'<input id="{name}" name="{name}" type="password" autocomplete="{complete}"', body)
    fields = {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}
    response = await post(app, "/account/password", token, **fields)
    assert response.status == 303
    assert response.headers["Location"] == "/account?saved=password"
    assert await auth_status(app, other) == 401
    assert await auth_status(app, token) == 200
    assert (await app.post("/login", json={"username": user.username, "password": PASSWORD})).status == 401
    assert (await app.post("/login", json={"username": user.username, "password": NEW_PASSWORD})).status == 200


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"current_password": "wrong", "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}, "not right"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": "other"}, "not the same"),
        ({"current_password": PASSWORD, "new_password": "", "new_password_again": ""}, "Enter a new password"),
        (
            {"current_password": "", "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD},
            "current password",
        ),
        ({"current_password": PASSWORD, "new_password": "short", "new_password_again": "short"}, "at least"),
    ],
)
async def test_refused_password_changes(app: Client, make_user: MakeUser, fields: dict[str, str], says: str) -> None:
    user = make_user()
    token = await browser_login(app, user)
    response = await post(app, "/account/password", token, **fields)
    assert response.status == 400
    body = await response.text()
    assert says in body and 'role="alert"' in body and 'aria-invalid="true"' in body
    assert (await app.post("/login", json={"username": user.username, "password": PASSWORD})).status == 200


async def test_wrong_current_passwords_are_throttled(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_LOGIN_MAX_FAILURES="2")
    token = await browser_login(app, make_user())
    fields = {"current_password": "wrong", "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}
    statuses = [(await post(app, "/account/password", token, **fields)).status for _ in range(3)]
    assert statuses[:2] == [400, 400]
    response = await post(app, "/account/password", token, **fields)
    assert response.status == 429 and int(response.headers["Retry-After"]) > 0


# --- the e-mail address -------------------------------------------------------------------------


async def test_without_a_mail_server_an_administrator_changes_addresses(app: Client, make_user: MakeUser) -> None:
    token = await browser_login(app, make_user())
    status, body = await page(app, "/account/email", token)
    assert status == 200 and 'id="email-by-admin"' in body and 'name="email"' not in body
    response = await post(app, "/account/email", token, email="new@example.test", current_password=PASSWORD)
    assert response.status == 409


async def test_request_an_email_change(mail_app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user(email="old@example.test")
    token = await browser_login(mail_app, user)
    status, body = await page(mail_app, "/account/email", token)
    assert status == 200 and '<input id="email" name="email" type="email" autocomplete="email"' in body
    response = await post(mail_app, "/account/email", token, email="new@example.test", current_password="wrong")
    assert response.status == 400 and "not right" in await response.text()
    response = await post(mail_app, "/account/email", token, email="not an address", current_password=PASSWORD)
    assert response.status == 400
    response = await post(mail_app, "/account/email", token, email="new@example.test", current_password=PASSWORD)
    assert response.status == 303
    assert response.headers["Location"] == "/account?saved=email_sent"
    assert database.call(users.get, user.id).email == "old@example.test"  # until the link is opened


# --- pages of links from e-mails ----------------------------------------------------------------


async def anonymous_csrf(client: Client, path: str) -> tuple[str, str, str]:
    """(status-checked page body, its csrf_token, the form cookie it set)."""
    response = await send(client, "GET", path)
    body = await response.text()
    assert response.status == 200, body
    return body, csrf_of(body), value_of(set_cookies(response)[FORM_COOKIE])


async def test_verify_an_email_address(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user(email="old@example.test")
    token = database.call(links.create, user.id, "verify_email", 900, "new@example.test")
    path = f"/account/email/verify?token={token}"
    body, csrf, cookie = await anonymous_csrf(app, path)
    assert 'id="confirm-email"' in body and user.username in body
    assert database.call(users.get, user.id).email == "old@example.test"  # a GET changes nothing
    data = {"token": token, "csrf_token": csrf}
    response = await send(app, "POST", "/account/email/verify", data=data)
    assert response.status == 403  # without its form cookie
    response = await send(app, "POST", "/account/email/verify", {FORM_COOKIE: cookie}, data=data)
    assert response.status == 200
    assert "Your e-mail address is now new@example.test." in await response.text()
    assert database.call(users.get, user.id).email == "new@example.test"
    response = await send(app, "POST", "/account/email/verify", {FORM_COOKIE: cookie}, data=data)
    assert response.status == 400 and "invalid or has expired" in await response.text()


@pytest.mark.parametrize("token", ["", "garbage", "x" * 5000, "%00", "%F0%9F%98%80"])
@pytest.mark.parametrize("path", ["/account/reset", "/account/email/verify"])
async def test_bad_links_are_a_400_page(app: Client, path: str, token: str) -> None:
    response = await send(app, "GET", f"{path}?token={token}")
    assert response.status == 400
    assert "This link is invalid or has expired" in await response.text()


async def test_reset_a_password_with_a_link(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    signed_in = await browser_login(app, user)
    token = database.call(links.create, user.id, "reset_password", 900)
    path = f"/account/reset?token={token}"
    await anonymous_csrf(app, path)
    body, csrf, cookie = await anonymous_csrf(app, path)  # twice: a GET never uses the link up
    assert "Choose a new password" in body and 'autocomplete="new-password"' in body
    fields = {"token": token, "csrf_token": csrf, "new_password": NEW_PASSWORD}
    response = await send(app, "POST", "/account/reset", {FORM_COOKIE: cookie}, data=fields)
    assert response.status == 400 and "not the same" in await response.text()
    fields["new_password_again"] = NEW_PASSWORD
    response = await send(app, "POST", "/account/reset", {FORM_COOKIE: cookie}, data=fields)
    body = await response.text()
    assert response.status == 200, body
    assert 'id="sign-in" href="/login"' in body
    assert await auth_status(app, signed_in) == 401  # every session ended
    assert (await app.post("/login", json={"username": user.username, "password": NEW_PASSWORD})).status == 200
    response = await send(app, "POST", "/account/reset", {FORM_COOKIE: cookie}, data=fields)
    assert response.status == 400  # used


async def test_a_set_password_link_asks_to_choose_one(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    token = await account_links.set_password_link(services_of(app), user.id)
    body, _, _ = await anonymous_csrf(app, f"/account/reset?token={token}")
    assert "Choose your password" in body and user.username in body


async def test_a_weak_password_leaves_the_link_usable(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user()
    token = database.call(links.create, user.id, "reset_password", 900)
    _, csrf, cookie = await anonymous_csrf(app, f"/account/reset?token={token}")
    fields = {"token": token, "csrf_token": csrf, "new_password": "short", "new_password_again": "short"}
    response = await send(app, "POST", "/account/reset", {FORM_COOKIE: cookie}, data=fields)
    assert response.status == 400 and "at least" in await response.text()
    assert database.call(links.peek, token, "reset_password") is not None


# --- a forgotten password -----------------------------------------------------------------------


async def test_without_a_mail_server_there_is_no_forgotten_password(app: Client) -> None:
    response = await send(app, "GET", "/login")
    assert "forgot-password" not in await response.text()
    assert (await send(app, "GET", "/account/forgot")).status == 404
    assert (await send(app, "POST", "/account/forgot", data={"login": "someone"})).status == 404


async def test_forgot_password_says_the_same_either_way(mail_app: Client, make_user: MakeUser) -> None:
    response = await send(mail_app, "GET", "/login")
    assert '<a id="forgot-password" href="/account/forgot">' in await response.text()
    body, csrf, cookie = await anonymous_csrf(mail_app, "/account/forgot")
    assert '<label for="login">' in body and 'autocomplete="username"' in body
    response = await send(mail_app, "POST", "/account/forgot", data={"login": "x", "csrf_token": csrf})
    assert response.status == 403  # no form cookie
    answers = []
    for login_name in (make_user().username, "nobody-by-that-name", "someone@example.test"):
        data = {"login": login_name, "csrf_token": csrf}
        response = await send(mail_app, "POST", "/account/forgot", {FORM_COOKIE: cookie}, data=data)
        assert response.status == 200
        answers.append(re.sub(r'name="csrf_token" value="[^"]+"', "", await response.text()))
    assert len(set(answers)) == 1 and "If an account matches" in answers[0]


# --- through a real SMTP server (aiosmtpd) ------------------------------------------------------


@pytest.fixture
async def mailed_app(make_app: MakeApp, mailbox: Any) -> Client:
    return await make_app(FORWARDAUTH_SMTP_URL=mailbox.url())


async def test_forgot_password_end_to_end(mailed_app: Client, mailbox: Any, make_user: MakeUser) -> None:
    user = make_user(email=f"{secrets.token_hex(4)}@example.test")
    _, csrf, cookie = await anonymous_csrf(mailed_app, "/account/forgot")
    data = {"login": user.email or "", "csrf_token": csrf}
    # a Host header of the attacker's: the link still leads to the issuer (FORWARDAUTH_LOGIN_URL's folder)
    headers = {"Host": "attacker.test"}
    response = await send(mailed_app, "POST", "/account/forgot", {FORM_COOKIE: cookie}, data=data, headers=headers)
    assert response.status == 200
    link = link_in(await mailbox.arrival(user.email))
    assert link.startswith("http://auth.example.test/account/reset?token=")
    path = link.removeprefix("http://auth.example.test")
    _, csrf, cookie = await anonymous_csrf(mailed_app, path)
    fields = {"token": token_in_link(link), "csrf_token": csrf, "new_password": NEW_PASSWORD}
    fields["new_password_again"] = NEW_PASSWORD
    response = await send(mailed_app, "POST", "/account/reset", {FORM_COOKIE: cookie}, data=fields)
    assert response.status == 200
    new_login = {"username": user.username, "password": NEW_PASSWORD}
    assert (await mailed_app.post("/login", json=new_login)).status == 200


async def test_email_change_end_to_end(
    mailed_app: Client, mailbox: Any, make_user: MakeUser, database: Database
) -> None:
    user = make_user(email="before@example.test")
    new = f"{secrets.token_hex(4)}@example.test"
    token = await browser_login(mailed_app, user)
    response = await post(mailed_app, "/account/email", token, email=new, current_password=PASSWORD)
    assert response.status == 303
    link = link_in(await mailbox.arrival(new))
    assert link.startswith("http://auth.example.test/account/email/verify?token=")
    _, csrf, cookie = await anonymous_csrf(mailed_app, link.removeprefix("http://auth.example.test"))
    data = {"token": token_in_link(link), "csrf_token": csrf}
    response = await send(mailed_app, "POST", "/account/email/verify", {FORM_COOKIE: cookie}, data=data)
    assert response.status == 200
    assert database.call(users.get, user.id).email == new


async def test_forgot_password_is_throttled(mail_app: Client) -> None:
    _, csrf, cookie = await anonymous_csrf(mail_app, "/account/forgot")
    data = {"login": "someone-asked-too-often", "csrf_token": csrf}
    statuses = []
    for _ in range(4):  # three an hour per login (stores.links.LinkRequests)
        response = await send(mail_app, "POST", "/account/forgot", {FORM_COOKIE: cookie}, data=data)
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 429]
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many attempts" in await response.text()


async def test_pages_follow_the_proxy_prefix(mail_app: Client, make_user: MakeUser) -> None:
    prefix = {"X-Forwarded-Prefix": "/forwardauth"}
    response = await send(mail_app, "GET", "/login", headers=prefix)
    assert '<a id="forgot-password" href="/forwardauth/account/forgot">' in await response.text()
    response = await send(mail_app, "GET", "/account/forgot", headers=prefix)
    assert 'action="/forwardauth/account/forgot"' in await response.text()
    assert "Path=/forwardauth/" in set_cookies(response)[FORM_COOKIE]
    token = await browser_login(mail_app, make_user())
    response = await send(mail_app, "GET", "/account", {COOKIE: token}, headers=prefix)
    body = await response.text()
    assert 'action="/forwardauth/account/sessions/end-others"' in body and 'href="/forwardauth/mfa"' in body
