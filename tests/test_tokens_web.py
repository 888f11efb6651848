"""The personal access token pages on the real application (real PostgreSQL and Redis), in
process: /account/tokens (create, shown once, listed without the secret, revoke, a sign-in recent
enough to create) and the console's section on a user's page; tokens made there pass /auth as
Bearer and Basic until revoked."""

from __future__ import annotations

import base64
import re
import secrets
import time
from html import unescape
from typing import Any
from urllib.parse import quote

from forwardauth.accounts import pats
from forwardauth.core.authn import Authentication
from forwardauth.stores import users

from .support import MakeApp, csrf_of
from .test_admin_web import sign_in
from .test_renewal import send
from .test_web import MakeUser, services_of

Client = Any
COOKIE = "forwardauth"
DAY = 86400


async def old_session(client: Client, user: users.User, age: int = 1200) -> str:
    """An access token of a session whose sign-in was ``age`` seconds ago (a renewed one)."""
    services = services_of(client)
    auth = Authentication.of(("pwd",), int(time.time()) - age)
    minted = services.tokens.mint(user.identity, "sid-" + secrets.token_hex(4), auth=auth)
    await services.revocations.register(minted.claims.sid, minted.claims.jti, 300)
    return str(minted.token)


async def get(client: Client, token: str, path: str) -> tuple[int, str]:
    response = await send(client, "GET", path, {COOKIE: token})
    return response.status, await response.text()


async def post(client: Client, token: str, path: str, page: str, **fields: str) -> Any:
    """A form posted as a browser would: with the CSRF token of ``page`` (unless one is given)."""
    if "csrf_token" not in fields:
        status, html = await get(client, token, page)
        assert status == 200, html
        fields["csrf_token"] = csrf_of(html)
    return await send(client, "POST", path, {COOKIE: token}, data=fields)


def new_token_in(html: str) -> str:
    found = re.search(r'<p class="secret" id="new-token">([^<]+)</p>', html)
    assert found, "no #new-token on the page"
    return unescape(found.group(1))


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


async def auth_status(client: Client, headers: dict[str, str]) -> int:
    client.session.cookie_jar.clear()
    return int((await client.get("/auth", headers=headers)).status)


async def ids_of(client: Client, username: str) -> list[str]:
    return [info.id for info in await pats.list_for(services_of(client), username)]


# --- the portal -----------------------------------------------------------------------------------


async def test_not_signed_in_goes_to_the_login_page(app: Client) -> None:
    response = await send(app, "GET", "/account/tokens")
    assert response.status == 303
    assert response.headers["Location"] == f"/login?rd={quote('/account/tokens', safe='')}"
    for path in ("/account/tokens/new", "/account/tokens/abc/revoke"):
        response = await send(app, "POST", path, data={"csrf_token": "x", "name": "n", "expires": "7d"})
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/login?rd="), path


async def test_a_token_is_made_shown_once_listed_used_and_revoked(app: Client, make_user: MakeUser) -> None:
    user = make_user(roles=("user", "dev"))
    session = await sign_in(app, user)
    status, html = await get(app, session, "/account")
    assert status == 200 and 'href="/account/tokens"' in html and "Access tokens" in html
    status, html = await get(app, session, "/account/tokens")
    assert status == 200 and 'id="no-tokens"' in html and 'action="/account/tokens/new"' in html
    assert re.search(r'<option value="90d" selected>', html) and '<option value="365d"' in html

    fields = {"name": "<b>ci</b>", "expires": "30d", "scopes": "repo:read, repo:write"}
    response = await post(app, session, "/account/tokens/new", "/account/tokens", **fields)
    html = await response.text()
    assert response.status == 200, html
    assert response.headers["Cache-Control"] == "no-store"
    token = new_token_in(html)
    assert token.startswith("fa_pat_") and html.count(token) == 1
    assert "&lt;b&gt;ci&lt;/b&gt;" in html and "<b>ci</b>" not in html  # escaped
    assert f"curl -u {user.username}:TOKEN" in html and token not in response.headers.get("Location", "")

    [token_id] = await ids_of(app, user.username)
    status, html = await get(app, session, "/account/tokens")
    assert f'<tr data-token="{token_id}">' in html and "repo:read repo:write" in html
    assert token not in html and "fa_pat_" not in html  # never shown again
    assert f'action="/account/tokens/{token_id}/revoke"' in html
    [info] = await pats.list_for(services_of(app), user.username)
    assert info.created_by == user.username and info.scopes == ("repo:read", "repo:write")

    for headers in ({"Authorization": f"Bearer {token}"}, basic(user.username, token)):
        response = await app.get("/auth", headers=headers)
        assert response.status == 200, headers
        assert response.headers["X-Auth-User"] == user.username
        assert response.headers["X-Auth-Scopes"] == "repo:read repo:write"
        assert response.headers["X-Auth-AMR"] == "pat"

    response = await post(app, session, f"/account/tokens/{token_id}/revoke", "/account/tokens")
    assert response.status == 303 and response.headers["Location"] == "/account/tokens?saved=revoked"
    assert await auth_status(app, {"Authorization": f"Bearer {token}"}) == 401
    assert await auth_status(app, basic(user.username, token)) == 401
    status, html = await get(app, session, "/account/tokens?saved=revoked")
    assert "The token is revoked" in html and "Revoked" in html
    assert f'action="/account/tokens/{token_id}/revoke"' not in html  # nothing left to revoke


async def test_forms_without_this_sessions_csrf_token_are_refused(app: Client, make_user: MakeUser) -> None:
    user, other = make_user(), make_user()
    session, elsewhere = await sign_in(app, user), await sign_in(app, other)
    _, foreign = await get(app, elsewhere, "/account/tokens")
    fields = {"name": "ci", "expires": "7d"}
    for csrf in ("", "garbage", csrf_of(foreign)):
        response = await send(
            app, "POST", "/account/tokens/new", {COOKIE: session}, data={**fields, "csrf_token": csrf}
        )
        assert response.status == 403, csrf
    assert await ids_of(app, user.username) == []
    info, token = await pats.create(services_of(app), user.username, "ci", [], DAY, "test")
    response = await send(
        app, "POST", f"/account/tokens/{info.id}/revoke", {COOKIE: session}, data={"csrf_token": csrf_of(foreign)}
    )
    assert response.status == 403
    assert await auth_status(app, {"Authorization": f"Bearer {token}"}) == 200


async def test_someone_elses_token_cannot_be_revoked(app: Client, make_user: MakeUser) -> None:
    user, owner = make_user(), make_user()
    info, token = await pats.create(services_of(app), owner.username, "deploy", [], DAY, "test")
    session = await sign_in(app, user)
    for token_id in (info.id, "no-such-token", "a%20b", "%00", "a%0Ab", "a%2Fb"):
        response = await post(app, session, f"/account/tokens/{token_id}/revoke", "/account/tokens")
        assert response.status == 404, token_id
        assert "You have no such token." in await response.text()
    assert await auth_status(app, {"Authorization": f"Bearer {token}"}) == 200


async def test_creating_needs_a_recent_sign_in_revoking_does_not(app: Client, make_user: MakeUser) -> None:
    user = make_user()
    session = await old_session(app, user)
    status, html = await get(app, session, "/account/tokens")
    assert status == 200 and 'id="sign-in-again"' in html and 'id="new-token-form"' not in html
    assert 'href="/login?rd=%2Faccount%2Ftokens&amp;reauth=1"' in html
    response = await post(app, session, "/account/tokens/new", "/account/tokens", name="ci", expires="7d")
    assert response.status == 403
    assert "Sign in again to create a token" in await response.text()
    assert await ids_of(app, user.username) == []
    info, token = await pats.create(services_of(app), user.username, "ci", [], DAY, "test")
    response = await post(app, session, f"/account/tokens/{info.id}/revoke", "/account/tokens")
    assert response.status == 303
    assert await auth_status(app, {"Authorization": f"Bearer {token}"}) == 401


async def test_bad_fields_show_the_form_again(make_app: MakeApp, make_user: MakeUser) -> None:
    app = await make_app(FORWARDAUTH_PAT_MAX_TTL="30d")
    user = make_user()
    session = await sign_in(app, user)
    status, html = await get(app, session, "/account/tokens")
    assert status == 200 and '<option value="30d" selected>' in html and '"90d"' not in html  # within the maximum
    cases = [
        ({"name": "", "expires": "7d"}, "name"),
        ({"name": "ci", "expires": "forever"}, "Choose how long the token lives"),
        ({"name": "ci", "expires": "90d"}, "at most 30d"),
        ({"name": "ci", "expires": "7d", "scopes": "repo read!"}, "scope"),
    ]
    for fields, said in cases:
        response = await post(app, session, "/account/tokens/new", "/account/tokens", **fields)
        html = await response.text()
        assert response.status == 400, fields
        assert said in html and 'id="new-token"' not in html, fields
        assert f'value="{fields["name"]}"' in html  # the form keeps what was typed
    assert (await post(app, session, "/account/tokens/new", "/account/tokens", name="ci", expires="7d")).status == 200
    response = await post(app, session, "/account/tokens/new", "/account/tokens", name="ci", expires="7d")
    assert response.status == 400 and "already has a token named" in await response.text()


async def test_a_refusal_is_shown_in_the_readers_language(make_app: MakeApp, make_user: MakeUser) -> None:
    """Refusals made below the HTTP layer (core.problems.Problem) reach the page translated, with
    their values filled in: the maximum lifetime and the user's name here."""
    app = await make_app(FORWARDAUTH_PAT_MAX_TTL="30d")
    user = make_user()
    session = await sign_in(app, user)
    for fields, german in (
        ({"name": "ci", "expires": "90d"}, "Ein Token darf höchstens 30d gültig sein"),
        ({"name": "x" * 101, "expires": "7d"}, "Der Name eines Tokens muss 1 bis 100 Zeichen lang sein."),
    ):
        status, html = await get(app, session, "/account/tokens")
        assert status == 200
        fields["csrf_token"] = csrf_of(html)
        german_page = {"Accept-Language": "de"}
        response = await send(app, "POST", "/account/tokens/new", {COOKIE: session}, headers=german_page, data=fields)
        html = await response.text()
        assert response.status == 400 and german in html and "at most" not in html, fields
    await post(app, session, "/account/tokens/new", "/account/tokens", name="ci", expires="7d")
    status, html = await get(app, session, "/account/tokens")
    assert status == 200
    data = {"csrf_token": csrf_of(html), "name": "ci", "expires": "7d"}
    french = {"Accept-Language": "fr"}
    response = await send(app, "POST", "/account/tokens/new", {COOKIE: session}, headers=french, data=data)
    assert response.status == 400 and f"{user.username} a déjà un jeton nommé 'ci'." in unescape(await response.text())


# --- the console ----------------------------------------------------------------------------------


async def test_non_admins_get_403_and_strangers_the_login_page(app: Client, make_user: MakeUser) -> None:
    target, someone = make_user(), make_user()
    info, token = await pats.create(services_of(app), target.username, "ci", [], DAY, "test")
    paths = [f"/admin/users/{target.username}/tokens/new", f"/admin/users/{target.username}/tokens/{info.id}/revoke"]
    session = await sign_in(app, someone)
    for odd in ("/admin/users/a%0Ab/tokens/new", "/admin/users/a/tokens/%0A/revoke"):  # any character: the 403
        response = await send(app, "POST", odd, {COOKIE: session}, data={"csrf_token": "x"})
        assert response.status == 403, odd
    for path in paths:
        response = await send(app, "POST", path, {COOKIE: session}, data={"csrf_token": "x", "name": "n"})
        assert response.status == 403, path
        response = await send(app, "POST", path, data={"csrf_token": "x"})
        assert response.status == 303, path
        assert response.headers["Location"] == f"/login?rd={quote('/admin/users/' + target.username, safe='')}"
    assert await ids_of(app, target.username) == [info.id]
    assert await auth_status(app, {"Authorization": f"Bearer {token}"}) == 200


async def test_an_admin_makes_lists_and_revokes_a_users_tokens(app: Client, make_user: MakeUser) -> None:
    admin, service = make_user(roles=("admin",)), make_user(roles=("ci",))
    session = await sign_in(app, admin)
    href = f"/admin/users/{service.username}"
    status, html = await get(app, session, href)
    assert status == 200 and "Personal access tokens" in html and f'action="{href}/tokens/new"' in html

    fields = {"name": "deploy", "expires": "90d", "scopes": "repo:read"}
    response = await post(app, session, f"{href}/tokens/new", href, **fields)
    html = await response.text()
    assert response.status == 200, html
    assert response.headers["Cache-Control"] == "no-store"
    token = new_token_in(html)
    assert html.count(token) == 1 and f'href="{href}" id="done"' in html
    [info] = await pats.list_for(services_of(app), service.username)
    assert info.created_by == admin.username and info.name == "deploy"
    response = await app.get("/auth", headers=basic(service.username, token))
    assert response.status == 200 and response.headers["X-Auth-User"] == service.username

    status, html = await get(app, session, href)
    assert f'<tr data-token="{info.id}">' in html and token not in html
    response = await post(app, session, f"{href}/tokens/{info.id}/revoke", href)
    assert response.status == 303 and response.headers["Location"] == f"{href}?saved=token_revoked"
    assert await auth_status(app, basic(service.username, token)) == 401

    response = await post(app, session, f"{href}/tokens/no-such-token/revoke", href)
    assert response.status == 404 and "The user has no such token." in await response.text()
    response = await post(app, session, "/admin/users/nobody-here/tokens/new", href, **fields)
    assert response.status == 404
    response = await post(app, session, f"{href}/tokens/new", href, name="x", expires="1000d")
    assert response.status == 400 and 'id="new-token"' not in await response.text()
    response = await send(app, "POST", f"{href}/tokens/new", {COOKIE: session}, data={**fields, "csrf_token": "x"})
    assert response.status == 403
    assert len(await ids_of(app, service.username)) == 1
