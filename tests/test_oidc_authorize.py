"""The OpenID Connect provider's authorization side on the real application (real PostgreSQL and
Redis): /oauth/authorize and its consent page, the login page coming back to it, RP-initiated
logout (/oauth/logout) and back-channel logouts delivered to a relying party's receiver.

Cookies are sent by hand (test_renewal.send), as a browser would send them; codes are read back
from Redis (what the token endpoint would redeem), so what the browser handed on is checked exactly.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jwt
import pytest
from aiohttp import web
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from forwardauth.core.authn import ACR_MULTI_FACTOR, Authentication
from forwardauth.core.idtokens import BACKCHANNEL_LOGOUT_EVENT, LOGOUT_TOKEN_TYPE, IdTokenService
from forwardauth.http.authorize import is_resume_path
from forwardauth.stores import backchannel, clients, consents, sessions, users
from forwardauth.stores.codes import AuthorizationCode
from forwardauth.stores.postgres import Connection, Database

from .support import PASSWORD, free_port
from .test_renewal import REFRESH, send, set_cookies, value_of
from .test_second_factor import PENDING, code_at, enrol
from .test_web import MakeUser, audit_events, services_of

Client = Any
COOKIE = "forwardauth"
ISSUER = "http://auth.example.test"
RD = "https://app.example.test/reports"
CALLBACK = "https://rp.example.net/oidc/callback?tenant=1"
AFTER_LOGOUT = "https://rp.example.net/signed-out"
SCOPES = ("openid", "profile", "email", "groups", "offline_access")
# Values a client may send, to come back exactly as sent: spaces, reserved and non-ASCII characters.
STATE = "st ate/+&=?é%20€"
NONCE = "n-0 ñ/+=&%"


@dataclass
class Browser:
    """The cookies a browser holds (access, refresh), as the form login set them."""

    access: str
    refresh: str

    @property
    def cookies(self) -> dict[str, str]:
        return {COOKIE: self.access, REFRESH: self.refresh}


MakeRp = Callable[..., clients.Client]


@pytest.fixture
def make_rp(database: Database) -> MakeRp:
    """An OIDC client (confidential unless ``public``), registered with CALLBACK and AFTER_LOGOUT."""

    def make(
        trusted: bool = True,
        public: bool = False,
        scopes: tuple[str, ...] = SCOPES,
        backchannel_logout_uri: str | None = None,
    ) -> clients.Client:
        created, _ = database.call(
            clients.create,
            f"rp-{secrets.token_hex(4)}",
            ["authorization_code", "refresh_token"],
            list(scopes),
            [],
            public,
            redirect_uris=[CALLBACK],
            post_logout_redirect_uris=[AFTER_LOGOUT],
            trusted=trusted,
            backchannel_logout_uri=backchannel_logout_uri,
        )
        return created

    return make


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def request_params(rp: clients.Client, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": rp.id,
        "redirect_uri": CALLBACK,
        "scope": "openid profile email",
        "state": STATE,
        "nonce": NONCE,
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v != ""}


async def authorize(client: Client, params: dict[str, str], cookies: dict[str, str] | None = None) -> Any:
    return await send(client, "GET", "/oauth/authorize?" + urlencode(params), cookies)


async def form_login(client: Client, user: users.User, rd: str = RD) -> tuple[Any, Browser]:
    """The login form posted (as for a header-protected app); its answer and the cookies it set."""
    response = await send(client, "POST", "/login", data={"username": user.username, "password": PASSWORD, "rd": rd})
    assert response.status == 303, await response.text()
    cookies = set_cookies(response)
    return response, Browser(value_of(cookies[COOKIE]), value_of(cookies[REFRESH]))


def response_of(url: str) -> dict[str, str]:
    """The parameters of an authorization response sent to CALLBACK (each once)."""
    assert url.startswith("https://rp.example.net/oidc/callback?"), url
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in query.values()), query
    assert query.pop("tenant") == ["1"]  # the registered URI's own query is kept
    return {k: v[0] for k, v in query.items()}


def redirected(response: Any) -> dict[str, str]:
    assert response.status == 303, response.status
    return response_of(response.headers["Location"])


async def onward(response: Any) -> dict[str, str]:
    """The page that moves on to the client at once (after one of our forms): its Refresh header."""
    assert response.status == 200, await response.text()
    refresh = response.headers["Refresh"]
    assert refresh.startswith("0; url="), refresh
    url = refresh.removeprefix("0; url=")
    body = await response.text()
    assert url.replace("&", "&amp;") in body  # the link for a browser that does not follow it
    return response_of(url)


async def redeem(client: Client, code: str) -> AuthorizationCode:
    found = await services_of(client).codes.redeem(code)
    assert found is not None
    return found


def resume_of(response: Any, reauth: bool = False) -> str:
    """The login page a request sent the browser to, and the request's own path it comes back to."""
    assert response.status == 303, response.status
    location = response.headers["Location"]
    match = re.fullmatch(r"/login\?rd=([^&]+)(&reauth=1)?", location)
    assert match is not None, location
    assert bool(match[2]) is reauth
    back = match[1].replace("%3F", "?").replace("%3D", "=").replace("%2F", "/")
    assert is_resume_path(back, "")
    return back


def backdate_auth(database: Database, user: users.User, seconds: int) -> None:
    """Move the user's sign-ins ``seconds`` into the past (auth_time, and when they were issued)."""

    def update(conn: Connection) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE refresh_tokens SET auth_time = auth_time - make_interval(secs => %s),"
                " created_at = created_at - make_interval(secs => %s) WHERE user_id = %s",
                (seconds, seconds, user.id),
            )

    database.call(update)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "it") -> Any:
    """Poll ``check`` on the event loop (the server runs on it too) until truthy, or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- refusals before the client and its redirect URI are known good: a page, no redirect -------------


@pytest.mark.parametrize(
    "change",
    [
        {"redirect_uri": "https://evil.example.net/oidc/callback?tenant=1"},
        {"redirect_uri": "https://rp.example.net/oidc/callback?tenant=1&x=1"},  # no prefix matching
        {"redirect_uri": "https://rp.example.net/oidc/callback?tenant=1#frag"},
        {"redirect_uri": "HTTPS://rp.example.net/oidc/callback?tenant=1"},  # no normalising either
        {"redirect_uri": ""},  # openid: required
        {"client_id": "no-such-client"},
        {"client_id": ""},
    ],
)
async def test_bad_client_or_redirect_uri_is_a_page_never_a_redirect(
    client: Client, make_rp: MakeRp, make_user: MakeUser, change: dict[str, str]
) -> None:
    rp = make_rp()
    _, browser = await form_login(client, make_user())
    for cookies in (None, browser.cookies):  # signed in or not
        response = await authorize(client, request_params(rp, **change), cookies)
        assert response.status == 400
        assert "Location" not in response.headers and "Refresh" not in response.headers
        assert response.headers["Content-Type"].startswith("text/html")
        assert "cannot be completed" in await response.text()
        assert "rp.example.net" not in response.headers.get("Location", "")


async def test_a_disabled_client_is_a_page(client: Client, make_rp: MakeRp, database: Database) -> None:
    rp = make_rp()
    database.call(clients.set_disabled, rp.id, True)
    response = await authorize(client, request_params(rp))
    assert response.status == 400 and "Location" not in response.headers


async def test_public_client_without_pkce_goes_back_with_invalid_request(client: Client, make_rp: MakeRp) -> None:
    rp = make_rp(public=True)
    answer = redirected(await authorize(client, request_params(rp, code_challenge="", code_challenge_method="")))
    assert answer["error"] == "invalid_request" and "PKCE" in answer["error_description"]
    assert answer["state"] == STATE and answer["iss"] == ISSUER
    plain = request_params(rp, code_challenge_method="plain")
    assert redirected(await authorize(client, plain))["error"] == "invalid_request"


async def test_prompt_none_without_a_session_is_login_required(client: Client, make_rp: MakeRp) -> None:
    answer = redirected(await authorize(client, request_params(make_rp(), prompt="none")))
    assert answer == {
        "error": "login_required",
        "error_description": answer["error_description"],
        "state": STATE,
        "iss": ISSUER,
    }


async def test_unknown_or_spent_resume_is_a_page(client: Client) -> None:
    response = await send(client, "GET", "/oauth/authorize?resume=" + secrets.token_urlsafe(32))
    assert response.status == 400 and "Location" not in response.headers
    assert "expired" in await response.text()


# --- signing in, and single sign-on -------------------------------------------------------------------


async def test_sign_in_then_a_code_with_state_and_nonce_exactly(
    client: Client, make_rp: MakeRp, make_user: MakeUser
) -> None:
    rp, user = make_rp(public=True), make_user()
    verifier, challenge = pkce()
    params = request_params(rp, code_challenge=challenge)
    back = resume_of(await authorize(client, params))
    login_page = await send(client, "GET", f"/login?rd={quote(back, safe='')}")
    assert login_page.status == 200
    assert f'name="rd" value="{back}"' in await login_page.text()  # the login page keeps our path
    response, browser = await form_login(client, user, rd=back)
    assert response.headers["Location"] == back
    answer = await onward(await send(client, "GET", back, browser.cookies))
    assert answer["state"] == STATE and answer["iss"] == ISSUER and set(answer) == {"code", "state", "iss"}
    code = await redeem(client, answer["code"])
    assert code.nonce == NONCE and code.code_challenge == challenge and code.client_id == rp.id
    assert code.redirect_uri == CALLBACK and code.user_id == user.id and code.scope == "openid profile email"
    info = services_of(client).db.call(sessions.refresh_info, browser.refresh)
    assert info is not None and code.sid == info.sid and code.amr == ("pwd",)
    assert create_s256_code_challenge(verifier) == code.code_challenge
    assert await services_of(client).codes.redeem(answer["code"]) is None  # once
    assert "authorize" in audit_events(services_of(client).db, user.username)


async def test_single_sign_on_from_the_header_protected_apps_session(
    client: Client, make_rp: MakeRp, make_user: MakeUser
) -> None:
    """Signed in for the header-protected apps: the code comes at once, without the form; from the
    refresh cookie alone (the access cookie expired), or the access cookie alone."""
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    for cookies in (browser.cookies, {REFRESH: browser.refresh}, {COOKIE: browser.access}):
        answer = redirected(await authorize(client, request_params(rp), cookies))
        assert answer["state"] == STATE and answer["iss"] == ISSUER
        assert (await redeem(client, answer["code"])).user_id == user.id
    posted = await send(client, "POST", "/oauth/authorize", browser.cookies, data=request_params(rp, prompt="none"))
    assert (await redeem(client, redirected(posted)["code"])).nonce == NONCE


async def test_prompt_login_asks_for_the_password_once(client: Client, make_rp: MakeRp, make_user: MakeUser) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    back = resume_of(await authorize(client, request_params(rp, prompt="login"), browser.cookies), reauth=True)
    form = await send(client, "GET", f"/login?rd={quote(back, safe='')}&reauth=1", browser.cookies)
    assert form.status == 200 and f'value="{user.username}"' in await form.text()
    # The URL edited to skip the form: the old sign-in does not answer prompt=login.
    resume_of(await send(client, "GET", back, browser.cookies), reauth=True)
    assert (await authorize(client, request_params(rp, prompt="none"), browser.cookies)).status == 303
    _, again = await form_login(client, user, rd=back)
    answer = await onward(await send(client, "GET", back, again.cookies))  # no loop back to the form
    code = await redeem(client, answer["code"])
    info = services_of(client).db.call(sessions.refresh_info, again.refresh)
    assert info is not None and code.sid == info.sid and code.auth_time == info.auth.auth_time


async def test_max_age(client: Client, make_rp: MakeRp, make_user: MakeUser, database: Database) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    backdate_auth(database, user, 600)
    cookies = {REFRESH: browser.refresh}
    assert "code" in redirected(await authorize(client, request_params(rp, max_age="3600"), cookies))
    assert redirected(await authorize(client, request_params(rp, max_age="60", prompt="none"), cookies)) == {
        "error": "login_required",
        "error_description": "the user must sign in again",
        "state": STATE,
        "iss": ISSUER,
    }
    back = resume_of(await authorize(client, request_params(rp, max_age="60"), cookies), reauth=True)
    _, again = await form_login(client, user, rd=back)
    assert "code" in await onward(await send(client, "GET", back, again.cookies))
    zero = resume_of(await authorize(client, request_params(rp, max_age="0"), again.cookies), reauth=True)
    _, third = await form_login(client, user, rd=zero)
    assert "code" in await onward(await send(client, "GET", zero, third.cookies))  # max_age=0 does not loop


async def test_acr_values_asking_for_a_second_factor_steps_up(
    client: Client, make_rp: MakeRp, make_user: MakeUser
) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)  # a password only
    secret, _ = await enrol(client, user)
    params = request_params(rp, acr_values=f"{ACR_MULTI_FACTOR} urn:other")
    silent = redirected(await authorize(client, {**params, "prompt": "none"}, browser.cookies))
    assert silent["error"] == "interaction_required"
    response = await authorize(client, params, browser.cookies)
    assert response.status == 303 and response.headers["Location"] == "/login/second-factor"
    pending = value_of(set_cookies(response)[PENDING])
    done = await send(client, "POST", "/login/second-factor", {PENDING: pending}, data={"code": code_at(secret)})
    back = done.headers["Location"]
    assert done.status == 303 and is_resume_path(back, "")
    cookies = set_cookies(done)
    stepped = Browser(value_of(cookies[COOKIE]), value_of(cookies[REFRESH]))
    code = await redeem(client, (await onward(await send(client, "GET", back, stepped.cookies)))["code"])
    assert {"otp", "mfa"} <= set(code.amr)
    assert services_of(client).db.call(sessions.refresh_info, browser.refresh) is None  # replaced
    again = redirected(await authorize(client, params, stepped.cookies))  # now enough: at once
    assert "mfa" in (await redeem(client, again["code"])).amr


async def test_acr_mfa_without_a_factor_goes_to_enrolment(client: Client, make_rp: MakeRp, make_user: MakeUser) -> None:
    _, browser = await form_login(client, make_user())
    response = await authorize(client, request_params(make_rp(), acr_values=ACR_MULTI_FACTOR), browser.cookies)
    assert response.status == 303 and response.headers["Location"] == "/mfa"
    assert PENDING in set_cookies(response)


# --- consent ------------------------------------------------------------------------------------------


async def consent_page(client: Client, params: dict[str, str], browser: Browser) -> tuple[Any, str]:
    page = await authorize(client, params, browser.cookies)
    assert page.status == 200, page.status
    body = await page.text()
    match = re.search(r'name="request" value="([^"]+)"', body)
    assert match is not None and 'action="/oauth/authorize/consent"' in body
    return page, match[1]


async def answer_consent(client: Client, browser: Browser, request_id: str, decision: str, **headers: str) -> Any:
    data = {"request": request_id, "decision": decision}
    return await send(client, "POST", "/oauth/authorize/consent", browser.cookies, data=data, headers=headers)


async def test_consent_asked_once_remembered_and_revocable(
    client: Client, make_rp: MakeRp, make_user: MakeUser, database: Database
) -> None:
    rp, user = make_rp(trusted=False), make_user()
    _, browser = await form_login(client, user)
    params = request_params(rp)
    assert redirected(await authorize(client, {**params, "prompt": "none"}, browser.cookies)) == {
        "error": "consent_required",
        "error_description": "the user has not allowed this client",
        "state": STATE,
        "iss": ISSUER,
    }
    page, request_id = await consent_page(client, params, browser)
    body = await page.text()
    assert rp.id in body and "see your email address" in body and "rp.example.net" in body
    assert "form-action 'self'" in page.headers["Content-Security-Policy"]  # the form posts to us
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # Denied: access_denied to the client, nothing remembered.
    denied = await onward(await answer_consent(client, browser, request_id, "deny"))
    assert denied["error"] == "access_denied" and denied["state"] == STATE
    assert database.call(consents.granted, user.id, rp.id) == ()
    # A page's request is answered once; another site's form is refused.
    assert (await answer_consent(client, browser, request_id, "allow")).status == 400
    _, request_id = await consent_page(client, params, browser)
    evil = await answer_consent(client, browser, request_id, "allow", Origin="https://evil.example.net")
    assert evil.status == 403
    allowed = await onward(await answer_consent(client, browser, request_id, "allow"))
    assert (await redeem(client, allowed["code"])).nonce == NONCE and allowed["state"] == STATE
    assert database.call(consents.granted, user.id, rp.id) == ("openid", "profile", "email")
    # Remembered: at once, silently too; more scopes, or prompt=consent, ask again.
    assert "code" in redirected(await authorize(client, {**params, "prompt": "none"}, browser.cookies))
    await consent_page(client, {**params, "scope": "openid groups"}, browser)
    await consent_page(client, {**params, "prompt": "consent"}, browser)
    # Revoked: asked again.
    assert database.call(consents.revoke, user.id, rp.id, None, user.username)
    assert redirected(await authorize(client, {**params, "prompt": "none"}, browser.cookies))["error"] == (
        "consent_required"
    )
    events = audit_events(database, user.username)
    assert "consent_granted" in events and "consent_revoked" in events and "authorize" in events


async def test_consent_is_bound_to_the_session_it_was_shown_to(
    client: Client, make_rp: MakeRp, make_user: MakeUser
) -> None:
    rp = make_rp(trusted=False)
    _, alice = await form_login(client, make_user())
    _, request_id = await consent_page(client, request_params(rp), alice)
    _, mallory = await form_login(client, make_user())
    response = await answer_consent(client, mallory, request_id, "allow")
    assert response.status == 400 and "Refresh" not in response.headers and "Location" not in response.headers


# --- the login page's rd: our own waiting request, nothing else of ours ---------------------------------


@pytest.mark.parametrize(
    "rd",
    [
        "/oauth/authorize?client_id=x&redirect_uri=https://evil.example.net/",
        "/oauth/authorize?resume=abc&redirect_uri=https://evil.example.net/",
        "//evil.example.net/oauth/authorize?resume=abc",
        "/\\evil.example.net/oauth/authorize?resume=abc",
        "https://evil.example.net/oauth/authorize?resume=abc",
        "/oauth/authorize?resume=abc%0d%0aSet-Cookie:x",
        "/prefix/oauth/authorize?resume=abc",
    ],
)
async def test_the_login_page_takes_no_other_path_as_rd(client: Client, rd: str) -> None:
    assert not is_resume_path(rd, "")
    page = await send(client, "GET", f"/login?rd={quote(rd, safe='')}")
    assert 'name="rd" value=""' in await page.text()


def test_resume_paths_under_a_prefix() -> None:
    assert is_resume_path("/forwardauth/oauth/authorize?resume=abc_-1", "/forwardauth")
    assert not is_resume_path("/oauth/authorize?resume=abc", "/forwardauth")
    assert not is_resume_path("/forwardauth/oauth/authorize?resume=" + "a" * 65, "/forwardauth")


# --- RP-initiated logout --------------------------------------------------------------------------------


def id_token(client: Client, user: users.User, rp: clients.Client, sid: str) -> str:
    auth = Authentication.of(("pwd",), 1)
    return IdTokenService(services_of(client).tokens).mint_id_token(
        subject=user.id, audience=rp.id, auth=auth, sid=sid, nonce=NONCE
    )


def browser_sid(client: Client, browser: Browser) -> str:
    info = services_of(client).db.call(sessions.refresh_info, browser.refresh)
    assert info is not None
    return info.sid


def child_session(database: Database, user: users.User, rp: clients.Client, parent: str) -> sessions.Session:
    """The session the token endpoint opens for ``rp`` from browser session ``parent``."""
    return database.call(sessions.start, user, 3600, rp.id, "openid", None, parent)


async def auth_cookie_status(client: Client, access: str) -> int:
    response = await client.get("/auth", headers={"Cookie": f"{COOKIE}={access}"})
    return int(response.status)


async def test_rp_initiated_logout_ends_the_session_and_its_children(
    client: Client, make_rp: MakeRp, make_user: MakeUser, database: Database
) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    sid = browser_sid(client, browser)
    child = child_session(database, user, rp, sid)
    assert await auth_cookie_status(client, browser.access) == 200
    params = {"id_token_hint": id_token(client, user, rp, sid), "post_logout_redirect_uri": AFTER_LOGOUT}
    response = await send(client, "GET", "/oauth/logout?" + urlencode({**params, "state": STATE}), browser.cookies)
    assert response.status == 303
    assert response.headers["Location"] == AFTER_LOGOUT + "?" + urlencode({"state": STATE})
    cleared = set_cookies(response)
    assert "Max-Age=0" in cleared[COOKIE] and "Max-Age=0" in cleared[REFRESH]
    assert await auth_cookie_status(client, browser.access) == 401  # at once
    assert database.call(sessions.refresh_info, browser.refresh) is None
    assert database.call(sessions.refresh_info, child.refresh_token) is None  # its child too
    assert "logout" in audit_events(database, user.username)


async def test_logout_without_a_matching_hint_asks_first(client: Client, make_rp: MakeRp, make_user: MakeUser) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    query = urlencode({"client_id": rp.id, "post_logout_redirect_uri": AFTER_LOGOUT, "state": STATE})
    page = await send(client, "GET", "/oauth/logout?" + query, browser.cookies)
    body = await page.text()
    assert page.status == 200 and "Location" not in page.headers and user.username in body
    assert await auth_cookie_status(client, browser.access) == 200  # a link alone signs nobody out
    assert 'name="confirm" value="1"' in body and f'name="state" value="{STATE}"' in body.replace("&amp;", "&")
    fields = {"client_id": rp.id, "post_logout_redirect_uri": AFTER_LOGOUT, "state": STATE, "confirm": "1"}
    evil = await send(
        client, "POST", "/oauth/logout", browser.cookies, data=fields, headers={"Origin": "https://evil.example.net"}
    )
    assert evil.status == 403 and await auth_cookie_status(client, browser.access) == 200
    done = await send(client, "POST", "/oauth/logout", browser.cookies, data=fields, headers={"Origin": ISSUER})
    assert done.status == 200 and done.headers["Refresh"] == "0; url=" + AFTER_LOGOUT + "?" + urlencode(
        {"state": STATE}
    )
    assert await auth_cookie_status(client, browser.access) == 401


async def test_logout_never_redirects_to_an_unregistered_uri(
    client: Client, make_rp: MakeRp, make_user: MakeUser
) -> None:
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    hint = id_token(client, user, rp, browser_sid(client, browser))
    for uri in ("https://evil.example.net/", AFTER_LOGOUT + "/x", CALLBACK):
        query = urlencode({"id_token_hint": hint, "post_logout_redirect_uri": uri})
        response = await send(client, "GET", "/oauth/logout?" + query, browser.cookies)
        assert response.status == 200 and "Location" not in response.headers and "Refresh" not in response.headers
        assert "You are signed out" in await response.text()
    assert await auth_cookie_status(client, browser.access) == 401
    forged = urlencode({"id_token_hint": "e30.e30.e30", "post_logout_redirect_uri": AFTER_LOGOUT})
    refused = await send(client, "GET", "/oauth/logout?" + forged)
    assert refused.status == 400 and "Location" not in refused.headers


async def test_logout_by_hint_alone_ends_its_session(
    client: Client, make_rp: MakeRp, make_user: MakeUser, database: Database
) -> None:
    """No cookies (another browser, or the relying party itself): the hint's sid is ended."""
    rp, user = make_rp(), make_user()
    _, browser = await form_login(client, user)
    query = urlencode({"id_token_hint": id_token(client, user, rp, browser_sid(client, browser))})
    response = await send(client, "GET", "/oauth/logout?" + query)
    assert response.status == 200 and "You are signed out" in await response.text()
    assert database.call(sessions.refresh_info, browser.refresh) is None
    assert await auth_cookie_status(client, browser.access) == 401


# --- back-channel logout --------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A relying party's back-channel logout endpoint: fails the first ``failures`` posts."""

    uri: str
    tokens: list[str]
    statuses: list[int]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    tokens: list[str] = []
    statuses: list[int] = []
    found = Receiver("", tokens, statuses)

    async def logout(request: web.Request) -> web.Response:
        form = await request.post()
        tokens.append(str(form["logout_token"]))
        status = 500 if len(tokens) == 1 else 200  # fails once
        statuses.append(status)
        return web.Response(status=status, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_post("/backchannel", logout)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    found.uri = f"http://127.0.0.1:{port}/backchannel"
    yield found
    await runner.cleanup()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(backchannel, "FIRST_RETRY", 1)
    yield


async def test_backchannel_logout_delivered_and_retried(
    client: Client,
    make_rp: MakeRp,
    make_user: MakeUser,
    database: Database,
    receiver: Receiver,
    quick_retries: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rp, user = make_rp(backchannel_logout_uri=receiver.uri), make_user()
    _, browser = await form_login(client, user)
    sid = browser_sid(client, browser)
    child_session(database, user, rp, sid)
    query = urlencode({"id_token_hint": id_token(client, user, rp, sid)})
    assert (await send(client, "GET", "/oauth/logout?" + query, browser.cookies)).status == 200

    async def delivered() -> bool:
        return receiver.statuses[-2:] == [500, 200]

    await eventually(delivered, what="the back-channel logout, retried once")
    jwks = jwt.PyJWKSet.from_dict(await (await client.get("/.well-known/jwks.json")).json())  # as the RP does
    first, second = receiver.tokens
    assert first != second  # each attempt has a fresh token
    for token in (first, second):
        header = jwt.get_unverified_header(token)
        assert header["typ"] == LOGOUT_TOKEN_TYPE
        key = jwks[header["kid"]]
        claims = jwt.decode(token, key, algorithms=[header["alg"]], audience=rp.id, issuer=ISSUER)
        assert claims["sub"] == user.id and claims["sid"] == sid and "nonce" not in claims
        assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}} and claims["jti"]
        assert all(token not in record.getMessage() for record in caplog.records)  # never logged
    assert any("retrying" in record.getMessage() for record in caplog.records)
