"""Browser sessions renewed with the refresh cookie: the login page signs a browser back in
without the form, once per refresh token, with a grace for two tabs renewing at the same time,
and says so when the browser is back at once (the access cookie does not reach the app).

Cookies are sent by hand (the test client's own jar is emptied first), as a browser would send
them for the path asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal
from urllib.parse import quote

import jwt
import pytest

from forwardauth import config
from forwardauth.constants import BROWSER_REFRESH_GRACE
from forwardauth.http.app import create_app
from forwardauth.stores import users
from forwardauth.stores.postgres import Connection, Database

from .support import PASSWORD, AppServer
from .test_web import MakeUser, auth_status

Client = Any
RD = "https://app.example.test/reports?page=2"
REFRESH = "forwardauth_refresh"


async def send(client: Client, method: str, path: str, cookies: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """A request carrying exactly ``cookies``, answered without following redirects."""
    client.session.cookie_jar.clear()
    headers = {"Accept": "text/html", **kwargs.pop("headers", {})}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    response = await client.request(method, path, headers=headers, allow_redirects=False, **kwargs)
    client.session.cookie_jar.clear()  # nothing it set is sent along by later requests
    return response


def set_cookies(response: Any) -> dict[str, str]:
    """name -> the whole Set-Cookie line (the last one of each name)."""
    return {line.split("=", 1)[0]: line for line in response.headers.getall("Set-Cookie", [])}


def value_of(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


async def form_login(client: Client, user: users.User) -> tuple[str, str]:
    """Sign in with the form: (access token, refresh cookie value)."""
    response = await send(client, "POST", "/login", data={"username": user.username, "password": PASSWORD, "rd": RD})
    assert response.status == 303
    cookies = set_cookies(response)
    return value_of(cookies["forwardauth"]), value_of(cookies[REFRESH])


async def back_at_once(client: Client, refresh: str, rd: str = RD) -> Any:
    """The login page with ``rd``, for a browser that has only its refresh cookie."""
    return await send(client, "GET", f"/login?rd={quote(rd, safe='')}", {REFRESH: refresh})


Renewal = Any  # async (client, refresh) -> response


def backdate(database: Database, refresh: str, column: Literal["created_at", "revoked_at"], seconds: int) -> None:
    """Move the time ``refresh`` was issued (``created_at``) or rotated (``revoked_at``) into the past."""

    def update(conn: Connection) -> None:
        with conn.cursor() as cur:
            cur.execute(
                f"UPDATE refresh_tokens SET {column} = {column} - make_interval(secs => %s)"  # noqa: S608
                " WHERE token_hash = %s",
                (seconds, hashlib.sha256(refresh.encode()).digest()),
            )

    database.call(update)


@pytest.fixture
def renewal(database: Database) -> Renewal:
    """The login page for a browser back after its access cookie expired (its token backdated)."""

    async def renew(client: Client, refresh: str, rd: str = RD) -> Any:
        backdate(database, refresh, "created_at", 60)
        return await back_at_once(client, refresh, rd)

    return renew


def sid(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def test_an_expired_access_cookie_is_renewed_without_the_form(
    client: Client, renewal: Renewal, make_user: MakeUser
) -> None:
    user = make_user()
    access, refresh = await form_login(client, user)
    renewed = await renewal(client, refresh)  # the browser no longer has the access cookie
    assert renewed.status == 303 and renewed.headers["Location"] == RD
    cookies = set_cookies(renewed)
    new_access, new_refresh = value_of(cookies["forwardauth"]), value_of(cookies[REFRESH])
    assert await auth_status(client, new_access) == 200
    assert sid(new_access) == sid(access)  # the same login session, not a new one
    assert new_refresh != refresh
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in cookies[REFRESH]
    assert "Domain" not in cookies[REFRESH] and "Domain=example.test" in cookies["forwardauth"]
    # And again with the successor: a session lasts as long as the browser keeps coming back.
    assert (await renewal(client, new_refresh)).status == 303


async def test_a_refresh_cookie_presented_again_later_ends_the_session(
    client: Client, renewal: Renewal, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    _, refresh = await form_login(client, user)
    renewed = set_cookies(await renewal(client, refresh))
    backdate(database, refresh, "revoked_at", BROWSER_REFRESH_GRACE + 5)
    replayed = await renewal(client, refresh)  # a copy of the old cookie, used elsewhere
    assert replayed.status == 200 and "forwardauth" not in set_cookies(replayed)
    assert "<form" in await replayed.text()
    # The whole session is over: the renewed access token and the successor refresh token too.
    assert await auth_status(client, value_of(renewed["forwardauth"])) == 401
    assert (await renewal(client, value_of(renewed[REFRESH]))).status == 200


async def test_two_tabs_renewing_at_once_keep_the_session(
    client: Client, renewal: Renewal, make_user: MakeUser
) -> None:
    """Two tabs renew with the same cookie at once (or the answer to a renewal was lost): the
    second, from the same address within REFRESH_RETRY_GRACE, gets fresh cookies of the same
    session, once. The first tab's cookies (superseded) and a third try get the form, and the
    session lives on."""
    user = make_user()
    access, refresh = await form_login(client, user)
    first = await renewal(client, refresh)
    second = await renewal(client, refresh)  # the other tab, a moment later, with the same cookie
    assert first.status == 303 and second.status == 303
    kept = set_cookies(second)  # the browser keeps the cookies it was given last
    assert sid(value_of(kept["forwardauth"])) == sid(access)
    assert await auth_status(client, value_of(kept["forwardauth"])) == 200
    for late in (value_of(set_cookies(first)[REFRESH]), refresh):  # within BROWSER_REFRESH_GRACE
        response = await renewal(client, late)
        assert response.status == 200 and set_cookies(response) == {}
    assert await auth_status(client, value_of(kept["forwardauth"])) == 200
    assert (await renewal(client, value_of(kept[REFRESH]))).status == 303


async def test_a_superseded_cookie_presented_later_ends_the_session(
    client: Client, renewal: Renewal, make_user: MakeUser, database: Database
) -> None:
    """The retry superseded the first renewal's cookie; if that cookie shows up later, someone did
    receive it, so the retry came from a copy: the whole session ends, as for any replay."""
    _, refresh = await form_login(client, make_user())
    superseded = value_of(set_cookies(await renewal(client, refresh))[REFRESH])
    retried = set_cookies(await renewal(client, refresh))
    backdate(database, superseded, "revoked_at", BROWSER_REFRESH_GRACE + 5)
    assert (await renewal(client, superseded)).status == 200
    assert await auth_status(client, value_of(retried["forwardauth"])) == 401
    assert (await renewal(client, value_of(retried[REFRESH]))).status == 200


async def test_a_browser_back_at_once_is_told_the_cookie_does_not_reach_the_app(
    client: Client, renewal: Renewal, make_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed in a moment ago and back on the login page: the access cookie did not reach rd (a
    cookie domain that does not cover it, Secure over http...). Renewing again would loop until
    the browser gives up, so the page says what is wrong."""
    _, refresh = await form_login(client, make_user())
    response = await back_at_once(client, refresh)
    assert response.status == 200 and set_cookies(response) == {}
    text = await response.text()
    assert "did not send the sign-in cookie to app.example.test" in text and "FORWARDAUTH_COOKIE_DOMAIN" in text
    assert "redirect loop" in caplog.text and refresh not in caplog.text
    # Not spent: a browser back later (its access cookie expired) is renewed with the same cookie.
    assert (await renewal(client, refresh)).status == 303


async def test_the_form_without_a_safe_rd(client: Client, renewal: Renewal, make_user: MakeUser) -> None:
    """Opened by hand, or with an rd we would not follow, the page is the form, and the cookie is
    not spent."""
    _, refresh = await form_login(client, make_user())
    for path in ("/login", "/login?rd=https%3A%2F%2Fevil.test%2F"):
        response = await send(client, "GET", path, {REFRESH: refresh})
        assert response.status == 200 and set_cookies(response) == {}
    assert (await renewal(client, refresh)).status == 303


async def test_a_disabled_user_is_not_renewed(
    client: Client, renewal: Renewal, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    _, refresh = await form_login(client, user)
    database.call(users.set_disabled, user.username, True)
    assert (await renewal(client, refresh)).status == 200


async def test_logout_ends_the_refresh_cookies_session(client: Client, renewal: Renewal, make_user: MakeUser) -> None:
    user = make_user()
    access, refresh = await form_login(client, user)
    # Signing out after the access cookie expired: the refresh cookie alone names the session.
    response = await send(client, "POST", "/logout", {REFRESH: refresh})
    assert response.status == 303
    cleared = set_cookies(response)
    assert "Max-Age=0" in cleared[REFRESH] and "Path=/" in cleared[REFRESH]
    assert "Max-Age=0" in cleared["forwardauth"]
    assert (await renewal(client, refresh)).status == 200
    assert await auth_status(client, access) == 401


async def test_logout_with_both_cookies_ends_both_sessions(
    client: Client, renewal: Renewal, make_user: MakeUser
) -> None:
    """The refresh cookie may name a later session than the access cookie (signed in again here)."""
    user = make_user()
    first_access, _ = await form_login(client, user)
    second_access, second_refresh = await form_login(client, user)
    response = await send(client, "POST", "/logout", {"forwardauth": first_access, REFRESH: second_refresh})
    assert response.status == 303
    assert await auth_status(client, first_access) == 401
    assert await auth_status(client, second_access) == 401
    assert (await renewal(client, second_refresh)).status == 200


async def test_remember_browser_off(aiohttp_client: Any, settings: config.Settings, make_user: MakeUser) -> None:
    client = await aiohttp_client(AppServer(create_app(dataclasses.replace(settings, remember_browser=False))))
    user = make_user()
    response = await send(client, "POST", "/login", data={"username": user.username, "password": PASSWORD, "rd": RD})
    assert response.status == 303 and REFRESH not in set_cookies(response)
    assert "forwardauth" in set_cookies(response)
