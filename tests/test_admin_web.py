"""The admin console on the real application (real PostgreSQL and Redis), in process: who may
use it (every URL, GET and POST), its pages and forms (CSRF tokens, one-time secrets, notices,
errors), and the optional step-up. Browsers and a real proxy: tests/test_admin_browser.py.
"""

from __future__ import annotations

import re
import secrets
import time
from html import unescape
from typing import Any
from urllib.parse import quote, unquote

import pytest

from forwardauth.accounts import links
from forwardauth.core.authn import Authentication
from forwardauth.http import admin_system, admin_tokens, admin_users
from forwardauth.stores import secondfactors, users
from forwardauth.stores.postgres import Database

from .mailbox import token_in
from .support import PASSWORD, MakeApp, csrf_of
from .test_renewal import RD, send, set_cookies, value_of
from .test_second_factor import code_at, enrol, password_step, second_factor
from .test_web import MakeUser, auth_status, services_of

Client = Any
COOKIE = "forwardauth"
ADMIN = ("admin",)


async def sign_in(client: Client, user: users.User) -> str:
    """A password sign-in with the form: the access cookie's value."""
    data = {"username": user.username, "password": PASSWORD, "rd": RD}
    response = await send(client, "POST", "/login", data=data)
    assert response.status == 303, await response.text()
    return value_of(set_cookies(response)[COOKIE])


async def get(client: Client, token: str | None, path: str) -> Any:
    return await send(client, "GET", path, {COOKIE: token} if token else None)


async def post(client: Client, token: str, path: str, data: dict[str, str] | None = None, page: str = "") -> Any:
    """A form of the console posted as a browser would: with the CSRF token of ``page``."""
    shown = await get(client, token, page or "/admin/users")
    assert shown.status == 200, await shown.text()
    fields = {"csrf_token": csrf_of(await shown.text()), **(data or {})}
    return await send(client, "POST", path, {COOKIE: token}, data=fields)


def stored(database: Database, username: str) -> users.User:
    user = database.call(users.find, username)
    assert user is not None
    return user


def secret_in(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]+)<', html)
    assert found, f"no #{element_id} on the page"
    return unescape(found.group(1))


def every_url(username: str, client_id: str) -> list[tuple[str, str]]:
    """(method, path) of every console route, its values filled in."""
    routes = [
        ("GET", "/admin"),
        *[(m, p) for m, p, _h, _b in (*admin_users.ROUTES, *admin_system.ROUTES, *admin_tokens.ROUTES)],
    ]
    values = {"username": quote(username, safe=""), "client_id": client_id, "token_id": "some-token"}
    return [(method, re.sub(r"\{(\w+):[^}]*\}", lambda m: values[m.group(1)], path)) for method, path in routes]


# --- who may use it ------------------------------------------------------------------------------


async def test_not_signed_in_goes_to_the_login_page_everywhere(app: Client, make_user: MakeUser) -> None:
    someone = make_user()
    for method, path in every_url(someone.username, "app-x"):
        response = await send(app, method, path, data={"csrf_token": "x"} if method == "POST" else None)
        assert response.status == 303, (method, path)
        assert response.headers["Location"].startswith("/login?rd=%2Fadmin"), (method, path)


@pytest.mark.parametrize("username", ["nobody-here", "someone"])
async def test_a_non_admin_gets_403_on_every_url_before_any_form_is_read(
    app: Client, make_user: MakeUser, make_client: Any, username: str
) -> None:
    user = make_user(roles=("user",))
    target = make_user().username if username == "someone" else username
    client, _secret = make_client()
    token = await sign_in(app, user)
    for method, path in [*every_url(target, client.id), *every_url(target, "no-such-client")]:
        # No CSRF token, a body that is not even a form: the role is what is refused first.
        kwargs = {"data": b"\x00not a form", "headers": {"Content-Type": "text/plain"}} if method == "POST" else {}
        response = await send(app, method, path, {COOKIE: token}, **kwargs)
        assert response.status == 403, (method, path, await response.text())
        assert "Administrators only" in await response.text()


async def test_the_role_is_read_fresh(app: Client, make_user: MakeUser, database: Database) -> None:
    user = make_user(roles=ADMIN)
    token = await sign_in(app, user)
    assert (await get(app, token, "/admin/users")).status == 200
    database.call(users.modify, user.username, lambda _roles: ["user"], None, False)
    assert (await get(app, token, "/admin/users")).status == 403  # the same token, the role gone


async def test_a_form_without_its_csrf_token_is_refused(app: Client, make_user: MakeUser, database: Database) -> None:
    admin, target = make_user(roles=ADMIN), make_user()
    token = await sign_in(app, admin)
    path = f"/admin/users/{target.username}/disable"
    response = await send(app, "POST", path, {COOKIE: token}, data={"csrf_token": "forged"})
    assert response.status == 403
    other = await sign_in(app, admin)  # a token made for another session does not pass either
    stolen = csrf_of(await (await get(app, other, "/admin/users")).text())
    response = await send(app, "POST", path, {COOKIE: token}, data={"csrf_token": stolen})
    assert response.status == 403
    assert not stored(database, target.username).disabled


# --- users ---------------------------------------------------------------------------------------


async def test_users_page_lists_and_searches(app: Client, make_user: MakeUser) -> None:
    admin, alice = make_user(roles=ADMIN), make_user(email="alice-unique@example.test")
    token = await sign_in(app, admin)
    response = await get(app, token, "/admin/users?q=alice-unique")
    html = await response.text()
    assert response.status == 200
    assert f'data-user="{alice.username}"' in html and f'data-user="{admin.username}"' not in html
    assert 'id="users"' in html and '<div class="scroll"' in html and 'id="q"' in html
    assert (await get(app, token, "/admin/users?q=%00")).status == 400
    assert (await get(app, token, "/admin")).headers["Location"] == "/admin/users"


async def test_create_user_shows_a_one_time_link_once(app: Client, make_user: MakeUser) -> None:
    admin = make_user(roles=ADMIN)
    token = await sign_in(app, admin)
    name = f"new-{secrets.token_hex(3)}"
    data = {"username": name, "email": "", "roles": "ops, dev", "delivery": "link"}
    response = await post(app, token, "/admin/users/new", data)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    link = secret_in(await response.text(), "one-time-link")
    assert link.startswith("http://") and "/account/reset?token=" in link
    created = await links.link_user(services_of(app), link.split("token=", 1)[1], "set_password")
    assert created is not None and created.username == name and created.roles == ("ops", "dev")
    again = await post(app, token, "/admin/users/new", data)  # the name is taken: the store says so
    assert again.status == 400 and "already exists" in await again.text()
    assert f'value="{name}"' in await again.text()  # the form keeps what was typed


async def test_create_by_email_needs_smtp(app: Client, make_user: MakeUser) -> None:
    token = await sign_in(app, make_user(roles=ADMIN))
    data = {"username": f"mail-{secrets.token_hex(3)}", "email": "x@example.test", "delivery": "email"}
    response = await post(app, token, "/admin/users/new", data)
    assert response.status == 409 and "FORWARDAUTH_SMTP_URL" in await response.text()


async def test_create_by_email_mails_the_link(make_app: MakeApp, make_user: MakeUser, mailbox: Any) -> None:
    app = await make_app(FORWARDAUTH_SMTP_URL=mailbox.url())
    token = await sign_in(app, make_user(roles=ADMIN))
    page = await (await get(app, token, "/admin/users")).text()
    assert 'value="email"' in page  # offered only with SMTP
    name, address = f"mailed-{secrets.token_hex(3)}", f"mailed-{secrets.token_hex(3)}@example.test"
    data = {"username": name, "email": address, "delivery": "email"}
    response = await post(app, token, "/admin/users/new", data)
    assert response.status == 303 and response.headers["Location"] == f"/admin/users/{name}?saved=created"
    message = await mailbox.arrival(address)
    assert token_in(message) not in await (await get(app, token, response.headers["Location"])).text()
    created = await links.link_user(services_of(app), token_in(message), "set_password")
    assert created is not None and created.username == name


@pytest.mark.parametrize("odd", ["a/b", "100%?#x", "ünï{c}", "x/disable"])
async def test_any_username_has_its_page(app: Client, make_user: MakeUser, odd: str) -> None:
    user = make_user(name=f"{secrets.token_hex(2)}-{odd}")
    token = await sign_in(app, make_user(roles=ADMIN))
    listed = await (await get(app, token, "/admin/users?q=" + quote(user.username))).text()
    href = f"/admin/users/{quote(user.username, safe='')}"
    assert f'href="{href}"' in listed
    page = await get(app, token, href)
    assert page.status == 200 and f"<h1>{user.username}</h1>" in unescape(await page.text())
    response = await post(app, token, href + "/disable", page=href)
    assert response.status == 303 and response.headers["Location"] == href + "?saved=disabled"


async def test_disabling_a_user_refuses_their_browser_at_once(
    app: Client, make_user: MakeUser, database: Database
) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token, theirs = await sign_in(app, admin), await sign_in(app, user)
    assert await auth_status(app, theirs) == 200
    page = f"/admin/users/{user.username}"
    shown = await (await get(app, token, page)).text()
    assert 'data-sid="' in shown and 'id="disable"' in shown and 'id="sessions"' in shown
    response = await post(app, token, page + "/disable", page=page)
    assert response.status == 303
    assert await auth_status(app, theirs) == 401
    after = await (await get(app, token, response.headers["Location"])).text()
    assert "The account is disabled and its sessions ended." in after and 'id="enable"' in after
    response = await post(app, token, page + "/enable", page=page)
    assert response.status == 303 and not stored(database, user.username).disabled


async def test_an_admin_cannot_lock_themself_out(app: Client, make_user: MakeUser) -> None:
    admin = make_user(roles=ADMIN)
    token = await sign_in(app, admin)
    page = f"/admin/users/{admin.username}"
    assert 'id="disable"' not in await (await get(app, token, page)).text()
    response = await post(app, token, page + "/disable", page=page)
    assert response.status == 409
    response = await post(app, token, page + "/roles", {"roles": "user"}, page=page)
    assert response.status == 409
    assert (await get(app, token, "/admin/users")).status == 200  # still an administrator


async def test_roles_and_bad_roles(app: Client, make_user: MakeUser, database: Database) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token = await sign_in(app, admin)
    page = f"/admin/users/{user.username}"
    response = await post(app, token, page + "/roles", {"roles": "ops,  dev"}, page=page)
    assert response.status == 303 and response.headers["Location"] == page + "?saved=roles"
    assert stored(database, user.username).roles == ("ops", "dev")
    response = await post(app, token, page + "/roles", {"roles": "no<good>"}, page=page)
    assert response.status == 400 and "role" in await response.text()


async def test_unknown_user_is_a_404_and_nothing_done(app: Client, make_user: MakeUser) -> None:
    token = await sign_in(app, make_user(roles=ADMIN))
    assert (await get(app, token, "/admin/users/nobody-at-all")).status == 404
    assert (await get(app, token, "/admin/users/nul%00name")).status == 404
    for action in ("disable", "enable", "mfa-reset", "end-sessions", "password-link"):
        response = await post(app, token, f"/admin/users/nobody-at-all/{action}")
        assert response.status == 404, action


async def test_password_link_and_end_sessions(app: Client, make_user: MakeUser) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token, theirs = await sign_in(app, admin), await sign_in(app, user)
    page = f"/admin/users/{user.username}"
    response = await post(app, token, page + "/password-link", page=page)
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    assert "/account/reset?token=" in secret_in(await response.text(), "one-time-link")
    response = await post(app, token, page + "/end-sessions", page=page)
    assert response.status == 303 and await auth_status(app, theirs) == 401


async def test_mfa_reset_removes_the_factors(app: Client, make_user: MakeUser, database: Database) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    await enrol(app, user)
    token = await sign_in(app, admin)
    page = f"/admin/users/{user.username}"
    assert "authenticator app" in await (await get(app, token, page)).text()
    response = await post(app, token, page + "/mfa-reset", page=page)
    assert response.status == 303 and response.headers["Location"] == page + "?saved=mfa_reset"
    assert not database.call(secondfactors.enrolled, user.id).any
    assert "The second factors were removed." in await (await get(app, token, response.headers["Location"])).text()


# --- sessions, clients, keys, audit --------------------------------------------------------------


async def test_sessions_page_ends_a_session(app: Client, make_user: MakeUser) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token, theirs = await sign_in(app, admin), await sign_in(app, user)
    html = await (await get(app, token, f"/admin/sessions?q={user.username}")).text()
    sids = re.findall(r'data-sid="([^"]+)"', html)
    assert len(sids) == 1 and user.username in html
    response = await post(app, token, "/admin/sessions/end", {"sid": sids[0]}, page="/admin/sessions")
    assert response.status == 303 and await auth_status(app, theirs) == 401
    again = await post(app, token, "/admin/sessions/end", {"sid": sids[0]}, page="/admin/sessions")
    assert again.status == 404
    assert (await get(app, token, "/admin/sessions?page=x")).status == 400


async def test_a_session_ended_from_the_users_page_returns_there(app: Client, make_user: MakeUser) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token, theirs = await sign_in(app, admin), await sign_in(app, user)
    page = f"/admin/users/{user.username}"
    sid = re.findall(r'data-sid="([^"]+)"', await (await get(app, token, page)).text())[0]
    response = await post(app, token, "/admin/sessions/end", {"sid": sid, "user": user.username}, page=page)
    assert response.status == 303 and response.headers["Location"] == page + "?saved=session_ended"
    assert await auth_status(app, theirs) == 401


async def test_clients_add_secret_once_disable(app: Client, make_user: MakeUser) -> None:
    token = await sign_in(app, make_user(roles=ADMIN))
    client_id = f"app-{secrets.token_hex(3)}"
    data = {"client_id": client_id, "scopes": "read write", "redirect_uris": "", "grant_types": "client_credentials"}
    response = await post(app, token, "/admin/clients/new", data, page="/admin/clients")
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    secret = secret_in(await response.text(), "client-secret")
    assert len(secret) > 30 and secret not in (await (await get(app, token, "/admin/clients")).text())
    bad = await post(app, token, "/admin/clients/new", {"client_id": "bad id!"}, page="/admin/clients")
    assert bad.status == 400 and "client id" in await bad.text()
    path = f"/admin/clients/{client_id}"
    response = await post(app, token, path + "/disable", page="/admin/clients")
    assert response.status == 303 and response.headers["Location"] == "/admin/clients?saved=client_disabled"
    response = await post(app, token, path + "/rotate", page="/admin/clients")
    assert response.status == 200 and secret_in(await response.text(), "client-secret") != secret
    assert (await post(app, token, "/admin/clients/no-such/rotate", page="/admin/clients")).status == 400


async def test_keys_rotate(app: Client, make_user: MakeUser) -> None:
    token = await sign_in(app, make_user(roles=ADMIN))
    before = re.findall(r'data-kid="([^"]+)"', await (await get(app, token, "/admin/keys")).text())
    assert before
    response = await post(app, token, "/admin/keys/rotate", page="/admin/keys")
    assert response.status == 303 and response.headers["Location"] == "/admin/keys?saved=key_rotated"
    after = re.findall(r'data-kid="([^"]+)"', await (await get(app, token, "/admin/keys")).text())
    assert len(after) == len(before) + 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("since=yesterday", "since"), ("until=2026-13-01", "until"), ("event=nope", "event"), ("before=-1", "before")],
)
async def test_audit_filters_refuse_bad_values(app: Client, make_user: MakeUser, query: str, field: str) -> None:
    token = await sign_in(app, make_user(roles=ADMIN))
    response = await get(app, token, "/admin/audit?" + query)
    assert response.status == 400 and f"{field}:" in await response.text()


async def test_audit_shows_admin_actions_and_pages(app: Client, make_user: MakeUser) -> None:
    admin, user = make_user(roles=ADMIN), make_user()
    token = await sign_in(app, admin)
    for _ in range(26):  # 26 logins + 26 logouts of this user: more than one page
        theirs = await sign_in(app, user)
        await send(app, "POST", "/logout", {COOKIE: theirs})
    page = f"/admin/users/{user.username}"
    await post(app, token, page + "/end-sessions", page=page)
    html = await (await get(app, token, f"/admin/audit?user={user.username}&event=admin&since=2000-01-01")).text()
    assert 'id="audit"' in html and admin.username in html
    first = await (await get(app, token, f"/admin/audit?user={user.username}")).text()
    older = re.search(r'href="([^"]+)" id="older"', first)
    assert older and len(re.findall("data-event-id", first)) == 50
    rest = await (await get(app, token, unescape(older.group(1)))).text()
    assert len(re.findall("data-event-id", rest)) > 0 and not set(re.findall(r'data-event-id="(\d+)"', rest)) & set(
        re.findall(r'data-event-id="(\d+)"', first)
    )


HOSTILE = ["%00", "x" * 5000, "%FF%FE", "-1", "9" * 30, "2026-02-30", "%E2%80%AE", "admin%0D%0AX: y"]


async def test_hostile_values_are_4xx_never_500(app: Client, make_user: MakeUser) -> None:
    """What schemathesis cannot reach without a session: an administrator's odd queries, paths, fields."""
    token = await sign_in(app, make_user(roles=ADMIN))
    csrf = csrf_of(await (await get(app, token, "/admin/users")).text())
    names = ("q", "page", "user", "event", "since", "until", "before")
    for value in HOSTILE:
        query = "&".join(f"{name}={value}" for name in names)
        for method, path in every_url(unquote(value), value):
            if method == "GET":
                response = await send(app, "GET", f"{path}?{query}", {COOKIE: token})
            else:
                fields = dict.fromkeys(("sid", "username", "roles", "client_id", "scopes", "redirect_uris"), value)
                fields.update(csrf_token=csrf, username=f"{unquote(value)}-{secrets.token_hex(2)}")
                response = await send(app, "POST", path, {COOKIE: token}, data=fields)
            assert response.status < 500, (method, path, value, await response.text())


# --- step-up -------------------------------------------------------------------------------------


async def test_admin_second_factor_steps_up(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_ADMIN_SECOND_FACTOR="true")
    token = await sign_in(app, make_user(roles=ADMIN))
    response = await get(app, token, "/admin/users")
    assert response.status == 303 and response.headers["Location"] == "/mfa"  # nothing enrolled: enrol first
    assert "forwardauth_2fa" in set_cookies(response)
    user_token = await sign_in(app, make_user())
    assert (await get(app, user_token, "/admin/users")).status == 403  # the role first


async def test_admin_second_factor_asks_for_the_enrolled_one(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_ADMIN_SECOND_FACTOR="true")
    admin = make_user(roles=ADMIN)
    secret, _codes = await enrol(app, admin)
    response = await password_step(app, admin)  # the password, then the code: a multi-factor session
    pending = value_of(set_cookies(response)["forwardauth_2fa"])
    done = await second_factor(app, pending, code=code_at(secret))
    token = value_of(set_cookies(done)[COOKIE])
    assert (await get(app, token, "/admin/users")).status == 200
    password_only = Authentication.of(("pwd",), int(time.time()))
    minted = services_of(app).tokens.mint(admin.identity, "sid-" + secrets.token_hex(4), auth=password_only)
    await services_of(app).revocations.register(minted.claims.sid, minted.claims.jti, 60)
    response = await get(app, minted.token, "/admin/audit")
    assert response.status == 303 and response.headers["Location"] == "/login/second-factor"


async def test_admin_max_auth_age_asks_the_password_again(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_ADMIN_MAX_AUTH_AGE="600")
    admin = make_user(roles=ADMIN)
    assert (await get(app, await sign_in(app, admin), "/admin/users")).status == 200
    services = services_of(app)
    old = Authentication.of(("pwd",), int(time.time()) - 1200)  # a renewal of a 20-minute-old sign-in
    minted = services.tokens.mint(admin.identity, "sid-" + secrets.token_hex(4), auth=old)
    await services.revocations.register(minted.claims.sid, minted.claims.jti, 60)
    response = await get(app, minted.token, "/admin/users?q=x")
    assert response.status == 303 and response.headers["Location"] == "/login?rd=%2Fadmin%2Fusers%3Fq%3Dx&reauth=1"
    # a form posted then leads back to its page, not to the POST's URL
    response = await send(app, "POST", "/admin/keys/rotate", {COOKIE: minted.token})
    assert response.status == 303 and response.headers["Location"] == "/login?rd=%2Fadmin%2Fkeys&reauth=1"
