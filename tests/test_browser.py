"""The login page in a real browser (Debian's Chromium via Playwright) behind real nginx.

The chain is the one from ``deploy/``: nginx with ``auth_request`` in front of the echo
upstream, forwardauth behind it, real PostgreSQL and Redis. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, Stack, backdate_sessions, require_program
from .test_web import audit_events

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROTECTED = "/private/page?x=1"
LOGIN_PATH = "/forwardauth/login"
COOKIE = "forwardauth"  # the default FORWARDAUTH_COOKIE_NAME
REFRESH = "forwardauth_refresh"


def require_chromium() -> str:
    """Like support.require_program: skip without Chromium, except in CI where that is a failure."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@contextlib.contextmanager
def chromium(*args: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, with the tests' arguments (and ``args``), closed afterwards."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *args])
        try:
            yield launched
        finally:
            launched.close()


# The browser modules' fixtures, under names of their own so that another module can import them
# (``from .test_browser import nginx_stack as nginx_stack``) and still name its parameters
# ``browser``, ``env`` and ``stack``; a module needing another one defines its own.


@pytest.fixture(scope="module", name="browser")
def chromium_browser() -> Iterator[Browser]:
    """One Chromium for the module's tests."""
    with chromium() as launched:
        yield launched


@pytest.fixture(name="env")
def host_only_cookies(env: dict[str, str]) -> dict[str, str]:
    """The stack is reached as http://127.0.0.1:PORT: a cookie for example.test would be refused.

    An empty value is "unset" for config.load, so the cookie is host-only.
    """
    return {**env, "FORWARDAUTH_COOKIE_DOMAIN": ""}


@pytest.fixture(name="stack")
def nginx_stack(proxy_stack: Callable[..., Stack]) -> Stack:
    """nginx in front of the service and the echo upstream (see conftest.proxy_stack)."""
    require_program("nginx")
    return proxy_stack("nginx")


@pytest.fixture
def user(make_user: Callable[..., users.User]) -> users.User:
    return make_user()


def on_login_page(stack: Stack) -> re.Pattern[str]:
    return re.compile(re.escape(stack.url + LOGIN_PATH) + r"(\?.*)?$")


def open_protected(page: Page, stack: Stack) -> None:
    """Open the protected URL signed out: nginx sends the browser to the login page with ``rd``."""
    page.goto(stack.url + PROTECTED)
    expect(page).to_have_url(on_login_page(stack))
    assert parse_qs(urlsplit(page.url).query)["rd"] == [stack.url + PROTECTED]
    expect(page).to_have_title("Sign in")


def sign_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()  # not "Sign in with a passkey"


def expect_protected_page(page: Page, stack: Stack, username: str) -> None:
    expect(page).to_have_url(stack.url + PROTECTED)
    expect(page.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()
    row = page.locator("tr").filter(has=page.locator("th", has_text="X-Auth-User"))
    expect(row.locator("td")).to_have_text(username)


def test_login_redirects_back_to_the_protected_page(
    context: BrowserContext, stack: Stack, user: users.User, tmp_path: Path
) -> None:
    page = context.new_page()
    open_protected(page, stack)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_focused()  # autofocus
    expect(page.get_by_label("Password")).to_have_attribute("type", "password")
    page.screenshot(path=tmp_path / "login.png", full_page=True)
    assert (tmp_path / "login.png").stat().st_size > 0

    sign_in(page, user.username, PASSWORD)

    expect_protected_page(page, stack, user.username)
    cookie = next(c for c in context.cookies(stack.url) if c["name"] == COOKIE)
    assert cookie["domain"] == "127.0.0.1"  # host-only: no leading dot
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    page.screenshot(path=tmp_path / "protected.png", full_page=True)
    assert (tmp_path / "protected.png").stat().st_size > 0


def test_an_expired_session_is_renewed_without_the_form(
    context: BrowserContext, stack: Stack, user: users.User, database: Database
) -> None:
    page = context.new_page()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect_protected_page(page, stack, user.username)
    refresh = next(c for c in context.cookies(stack.url + "/forwardauth/") if c["name"] == REFRESH)
    assert (refresh["path"], refresh["domain"], refresh["httpOnly"]) == ("/forwardauth/", "127.0.0.1", True)
    with page.expect_request(stack.url + PROTECTED) as sent:
        page.reload()
    assert REFRESH not in (sent.value.all_headers().get("cookie") or "")  # the app never receives it

    context.clear_cookies(name=COOKIE)  # the access cookie expired...
    backdate_sessions(database, user)  # ...some time after the login
    logins: list[int] = []
    page.on("response", lambda r: logins.append(r.status) if urlsplit(r.url).path == LOGIN_PATH else None)
    page.goto(stack.url + PROTECTED)
    expect_protected_page(page, stack, user.username)
    assert logins == [303]  # through the login page, without its form
    assert [c for c in context.cookies(stack.url) if c["name"] == COOKIE]


def test_a_cookie_that_cannot_reach_the_app_is_explained_not_looped(
    context: BrowserContext, proxy_stack: Callable[..., Stack], user: users.User, database: Database
) -> None:
    """The classic misconfiguration: a cookie domain that does not cover the protected host (here
    the browser refuses Domain=example.test from 127.0.0.1). Instead of bouncing between the app
    and the login page until the browser gives up, the login page says what is wrong, before any
    session is opened (see test_sso.py for the other cases)."""
    require_program("nginx")
    stack = proxy_stack(
        "nginx", {"FORWARDAUTH_COOKIE_DOMAIN": "example.test", "FORWARDAUTH_ALLOWED_DOMAINS": "127.0.0.1"}
    )
    page = context.new_page()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect(page).to_have_url(on_login_page(stack))
    expect(page.get_by_role("alert")).to_contain_text("FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover 127.0.0.1")
    assert (
        "sign-in refused: FORWARDAUTH_COOKIE_DOMAIN=example.test does not cover 127.0.0.1"
        in stack.service.log.read_text()
    )
    assert audit_events(database, user.username) == []  # no "login_success" for a sign-in that cannot hold


def test_wrong_password_shows_the_error_and_keeps_the_username(
    context: BrowserContext, stack: Stack, user: users.User
) -> None:
    page = context.new_page()
    open_protected(page, stack)

    with page.expect_response(lambda r: r.request.method == "POST" and urlsplit(r.url).path == LOGIN_PATH) as info:
        sign_in(page, user.username, "not the password")
    assert info.value.status == 401

    expect(page).to_have_url(on_login_page(stack))
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value(user.username)
    expect(page.get_by_label("Password")).to_have_value("")  # never echoed back
    assert not [c for c in context.cookies(stack.url) if c["name"] == COOKIE]

    # rd survived the failed attempt: the right password still leads back to the page.
    sign_in(page, user.username, PASSWORD)
    expect_protected_page(page, stack, user.username)


def test_login_works_without_javascript(browser: Browser, stack: Stack, user: users.User) -> None:
    ctx = browser.new_context(java_script_enabled=False)
    try:
        page = ctx.new_page()
        open_protected(page, stack)
        sign_in(page, user.username, PASSWORD)
        expect_protected_page(page, stack, user.username)
    finally:
        ctx.close()


PHONE = {"width": 375, "height": 667}


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    """A phone-sized context (JavaScript on, so the page's layout can be measured)."""
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def test_login_form_fits_a_phone(phone: BrowserContext, stack: Stack, user: users.User) -> None:
    page = phone.new_page()
    open_protected(page, stack)
    for control in (
        page.get_by_label("Username"),
        page.get_by_label("Password"),
        page.get_by_role("button", name="Sign in", exact=True),
    ):
        expect(control).to_be_in_viewport()
        box = control.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    sign_in(page, user.username, PASSWORD)
    expect_protected_page(page, stack, user.username)


def test_login_page_has_no_horizontal_scroll_on_a_phone(phone: BrowserContext, stack: Stack) -> None:
    page = phone.new_page()
    open_protected(page, stack)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    card = page.get_by_role("main").bounding_box()
    assert card is not None
    assert card["x"] >= 0 and card["x"] + card["width"] <= PHONE["width"], card


def test_sign_out_revokes_the_session(context: BrowserContext, stack: Stack, user: users.User) -> None:
    page = context.new_page()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect_protected_page(page, stack, user.username)
    token = next(c["value"] for c in context.cookies(stack.url) if c["name"] == COOKIE)

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(stack.url + LOGIN_PATH + "?signed_out=1")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("You have been signed out.")
    assert not [c for c in context.cookies(stack.url) if c["name"] == COOKIE]
    assert not [c for c in context.cookies(stack.url + "/forwardauth/") if c["name"] == REFRESH]

    open_protected(page, stack)  # signed out: the login page again, not a renewal

    # The cookie is gone, but the token itself must be dead too (revoked in Redis), not only forgotten.
    context.add_cookies([{"name": COOKIE, "value": token, "url": stack.url}])
    open_protected(page, stack)
