"""The account portal in Chromium through real nginx (deploy/), real PostgreSQL, Redis and SMTP.

Several browsers of one user are several browser contexts. Ending a session on /account must
make ``/auth`` refuse that browser's access cookie at once: checked on forwardauth directly, on
a request through nginx, and by the browser itself being sent to sign in. The forgotten-password
link travels through a real SMTP server (tests/mailbox.py, aiosmtpd). Every page is checked with
axe-core (tests/accessibility.py) and photographed at desktop and phone width (tests/screenshots.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from forwardauth.stores import links, users
from forwardauth.stores.postgres import Database

from . import accessibility, http, screenshots
from .mailbox import Mailbox, link_in
from .support import PASSWORD, Stack, wait_until
from .test_browser import COOKIE, PROTECTED, expect_protected_page, open_protected, sign_in
from .test_browser import chromium_browser as chromium_browser
from .test_browser import nginx_stack as nginx_stack

PREFIX = "/forwardauth"
ACCOUNT = PREFIX + "/account"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
NEW_PASSWORD = "a brand new passphrase for the test"
MakeUser = Callable[..., users.User]
REFUSAL_SECONDS = 5.0  # "at once": only the time a request takes, with room for a slow machine


@pytest.fixture
def env(env: dict[str, str], mailbox: Mailbox) -> dict[str, str]:
    """Host-only cookies (the stack is http://127.0.0.1:PORT, see test_browser) and mail to the mailbox."""
    return {**env, "FORWARDAUTH_COOKIE_DOMAIN": "", "FORWARDAUTH_SMTP_URL": mailbox.url()}


class People:
    """The browsers (contexts) of a test, opened on one stack; all closed at its end."""

    def __init__(self, browser: Browser, stack: Stack) -> None:
        self.browser, self.stack = browser, stack
        self.opened: list[BrowserContext] = []

    def context(self, **options: Any) -> BrowserContext:
        ctx = self.browser.new_context(**options)
        ctx.set_default_timeout(15_000)
        self.opened.append(ctx)
        return ctx

    def signed_in(self, username: str, password: str = PASSWORD, **options: Any) -> Page:
        """A new browser, signed in with the form and showing the protected page."""
        page = self.context(**options).new_page()
        open_protected(page, self.stack)
        sign_in(page, username, password)
        expect_protected_page(page, self.stack, username)
        return page

    def close(self) -> None:
        for ctx in self.opened:
            ctx.close()


def people_on(browser: Browser, stack: Stack) -> Iterator[People]:
    """The body of a ``people`` fixture (this module's and test_admin_browser's)."""
    found = People(browser, stack)
    yield found
    found.close()


@pytest.fixture
def people(browser: Browser, stack: Stack) -> Iterator[People]:
    yield from people_on(browser, stack)


def access_cookie(page: Page, stack: Stack) -> str:
    return next(c["value"] for c in page.context.cookies(stack.url) if c["name"] == COOKIE)


def auth_status(stack: Stack, token: str) -> int:
    """What forwardauth's /auth answers the access cookie, asked directly (no proxy)."""
    return http.get(stack.service.base + "/auth", http.cookie_header(**{COOKIE: token})).status


def upstream_reached(stack: Stack, token: str) -> bool:
    """Whether nginx lets a request with the access cookie through to the protected app."""
    answer = http.get(stack.url + PROTECTED, http.cookie_header(**{COOKIE: token}))
    return answer.status == 200


def expect_accepted(page: Page, stack: Stack) -> str:
    """The browser's access cookie works (directly and through nginx); the cookie."""
    token = access_cookie(page, stack)
    assert auth_status(stack, token) == 200
    assert upstream_reached(stack, token)
    return token


def expect_refused(page: Page, stack: Stack, token: str) -> None:
    """``token`` (the browser's access cookie) is refused by /auth and nginx within moments, and
    the browser is sent to the login form (a refresh cookie it may still hold is dead too)."""
    wait_until(lambda: auth_status(stack, token) == 401, REFUSAL_SECONDS, "/auth refusing the ended session")
    assert not upstream_reached(stack, token)
    open_protected(page, stack)
    expect(page.get_by_label("Username")).to_be_visible()


def session_rows(page: Page) -> Locator:
    return page.locator("#sessions tr[data-sid]")


def goto_ok(page: Page, url: str) -> None:
    goto_status(page, url, 200)


def check_page(page: Page, name: str) -> None:
    """axe-core finds nothing serious on the page; screenshots at both widths."""
    accessibility.assert_accessible(page, name)
    screenshots.save(page, name)


# --- sessions ------------------------------------------------------------------------------------


def test_a_user_ends_their_other_browsers_session(people: People, stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    laptop = people.signed_in(user.username)
    other = people.signed_in(user.username, user_agent=FIREFOX)
    other_token = expect_accepted(other, stack)

    goto_ok(laptop, stack.url + ACCOUNT)
    expect(laptop.get_by_role("heading", name="Your account")).to_be_visible()
    expect(laptop.locator("#identity")).to_contain_text(user.username)
    rows = session_rows(laptop)
    expect(rows).to_have_count(2)
    current = rows.filter(has=laptop.locator("strong.current"))
    expect(current).to_have_count(1)
    foreign = rows.filter(has_not=laptop.locator("strong.current"))
    expect(foreign).to_contain_text("Firefox on Linux")
    expect(current.get_by_role("button")).to_have_text("Sign out this session")
    ended = foreign.get_attribute("data-sid")

    foreign.get_by_role("button", name="Sign out").click()

    expect(laptop).to_have_url(re.compile(re.escape(stack.url + ACCOUNT) + r"(\?.*)?$"))
    expect(session_rows(laptop)).to_have_count(1)
    expect(laptop.locator(f'#sessions tr[data-sid="{ended}"]')).to_have_count(0)
    expect_refused(other, stack, other_token)
    laptop_token = expect_accepted(laptop, stack)  # ending the other one left this one alone

    # the current row's button signs this browser out
    goto_ok(laptop, stack.url + ACCOUNT)
    session_rows(laptop).get_by_role("button", name="Sign out this session").click()
    expect(laptop).to_have_url(stack.url + PREFIX + "/login?signed_out=1")
    expect_refused(laptop, stack, laptop_token)


def test_sign_out_everywhere_else(people: People, stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    here = people.signed_in(user.username, java_script_enabled=False)  # the pages need none
    elsewhere = [people.signed_in(user.username) for _ in range(2)]
    tokens = [expect_accepted(page, stack) for page in elsewhere]
    stranger = people.signed_in(make_user().username)  # somebody else's session is not touched

    goto_ok(here, stack.url + ACCOUNT)
    expect(session_rows(here)).to_have_count(3)
    here.locator("#end-others").click()

    expect(here).to_have_url(stack.url + ACCOUNT + "?saved=others_ended")
    expect(here.get_by_role("status")).to_be_visible()
    expect(session_rows(here)).to_have_count(1)
    expect(session_rows(here).locator("strong.current")).to_have_count(1)
    for page, token in zip(elsewhere, tokens, strict=True):
        expect_refused(page, stack, token)
    expect_accepted(here, stack)
    expect_accepted(stranger, stack)


def test_changing_the_password_ends_the_other_sessions(people: People, stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    here, other = people.signed_in(user.username), people.signed_in(user.username)
    other_token = expect_accepted(other, stack)

    goto_ok(here, stack.url + ACCOUNT + "/password")
    here.locator("#current_password").fill(PASSWORD)
    fill_new_password(here, NEW_PASSWORD)

    expect(here).to_have_url(stack.url + ACCOUNT + "?saved=password")
    expect(here.get_by_role("status")).to_be_visible()
    expect_refused(other, stack, other_token)
    expect_accepted(here, stack)  # this one stays
    sign_in(other, user.username, PASSWORD)
    expect(other.get_by_role("alert")).to_have_text("Wrong username or password.")
    sign_in(other, user.username, NEW_PASSWORD)
    expect_protected_page(other, stack, user.username)


def test_changing_the_email_address_by_a_mailed_link(
    people: People, stack: Stack, make_user: MakeUser, mailbox: Mailbox
) -> None:
    user, moved = make_user(), f"moved-{secrets.token_hex(4)}@example.test"
    page = people.signed_in(user.username)
    goto_ok(page, stack.url + ACCOUNT + "/email")
    page.locator("#email").fill(moved)
    page.locator("#current_password").fill(PASSWORD)
    page.locator("form:has(#email) [type=submit]").click()
    expect(page).to_have_url(stack.url + ACCOUNT + "?saved=email_sent")
    expect(page.locator("#identity")).not_to_contain_text(moved)  # not before it is confirmed

    mailed = link_in(mailbox.wait_for(moved, 20))
    assert mailed.startswith(stack.url + ACCOUNT + "/email/verify?token="), mailed
    elsewhere = people.context().new_page()  # the link is the proof: no session needed
    goto_ok(elsewhere, mailed)
    elsewhere.locator("#confirm-email").click()
    expect(elsewhere.get_by_text(f"Your e-mail address is now {moved}")).to_be_visible()

    goto_ok(page, stack.url + ACCOUNT)
    expect(page.locator("#identity")).to_contain_text(moved)
    goto_status(elsewhere, mailed, 400)  # used


# --- forgotten password ----------------------------------------------------------------------------


def fill_new_password(page: Page, password: str) -> None:
    page.locator("#new_password").fill(password)
    page.locator("#new_password_again").fill(password)
    page.locator("form:has(#new_password) [type=submit]").click()


def test_forgot_password_by_email(people: People, stack: Stack, make_user: MakeUser, mailbox: Mailbox) -> None:
    address = f"forgetful-{secrets.token_hex(4)}@example.test"
    user = make_user(email=address)
    signed_in = people.signed_in(user.username)  # a session from before the reset
    old_token = expect_accepted(signed_in, stack)

    page = people.context().new_page()
    open_protected(page, stack)
    page.locator("#forgot-password").click()
    expect(page).to_have_url(stack.url + ACCOUNT + "/forgot")
    page.locator("[name=login]").fill(address.upper())  # the e-mail address, in any case
    page.locator("form:has([name=login]) [type=submit]").click()
    expect(page.locator("#link-sent")).to_contain_text("If an account matches, we sent a link to its e-mail address")

    link = link_in(mailbox.wait_for(address, 20))
    assert link.startswith(stack.url + ACCOUNT + "/reset?token="), link  # built from the issuer

    goto_ok(page, link)
    fill_new_password(page, NEW_PASSWORD)
    expect(page.get_by_text("Your password is changed")).to_be_visible()
    expect_refused(signed_in, stack, old_token)  # every session ended with the reset

    goto_status(page, link, 400)  # one use only
    expect(page.get_by_text("This link is invalid or has expired")).to_be_visible()

    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    sign_in(page, user.username, NEW_PASSWORD)
    expect_protected_page(page, stack, user.username)


def ask_for_link(page: Page, stack: Stack, login: str) -> str:
    """Post the forgotten-password form for ``login``; the sentence the page answers."""
    goto_ok(page, stack.url + ACCOUNT + "/forgot")
    page.locator("[name=login]").fill(login)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.locator("form:has([name=login]) [type=submit]").click()
    assert posted.value.status == 200
    return page.locator("#link-sent").inner_text()


def test_forgot_password_answers_the_same_for_nobody(
    stack: Stack, people: People, make_user: MakeUser, mailbox: Mailbox
) -> None:
    page = people.context().new_page()
    somebody = make_user(email=f"somebody-{secrets.token_hex(4)}@example.test")
    nobody = f"nobody-{secrets.token_hex(4)}@example.test"
    assert ask_for_link(page, stack, nobody) == ask_for_link(page, stack, somebody.username)
    mailbox.wait_for(str(somebody.email), 20)  # sent after the first answer, in the background
    assert mailbox.to(nobody) == []


def test_the_password_form_in_keyboard_order(people: People, stack: Stack, make_user: MakeUser) -> None:
    page = people.signed_in(make_user().username)
    goto_ok(page, stack.url + ACCOUNT + "/password")
    expect(page.locator("#current_password")).to_be_focused()  # autofocus
    assert accessibility.tab_order(page, 3) == ["new_password", "new_password_again", "button:Change password"]


def test_the_account_page_in_the_browsers_language(people: People, stack: Stack, make_user: MakeUser) -> None:
    page = people.signed_in(make_user().username, **accessibility.CONTEXT)
    for lang in ("de", "fr"):
        page.context.set_extra_http_headers({"Accept-Language": lang})
        goto_ok(page, stack.url + ACCOUNT)
        expect(page.locator("html")).to_have_attribute("lang", lang)
        expect(page.locator("h1")).not_to_have_text("Your account")
        accessibility.assert_accessible(page, f"account ({lang})")


# --- accessibility and screenshots ------------------------------------------------------------------

Show = Callable[[Page, Stack, users.User, Database], None]  # brings the page to the state photographed


def goto_status(page: Page, url: str, status: int) -> None:
    answer = page.goto(url)
    assert answer is not None and answer.status == status, (url, answer and answer.status)


def visit(where: str, status: int = 200) -> Show:
    """Open ``where`` (``{username}`` filled in), expecting ``status``."""
    return lambda page, stack, user, database: goto_status(
        page, stack.url + where.format(username=user.username), status
    )


def link(purpose: str, where: str, email: str | None = None) -> Show:
    """Open ``where`` with a fresh link of ``purpose`` for the user as its token."""

    def show(page: Page, stack: Stack, user: users.User, database: Database) -> None:
        token = database.call(links.create, user.id, purpose, 15 * 60, email)
        goto_ok(page, f"{stack.url}{where}?token={token}")

    return show


def login_refused(page: Page, stack: Stack, user: users.User, database: Database) -> None:
    open_protected(page, stack)
    expect(page.locator("#forgot-password")).to_be_visible()  # with SMTP
    sign_in(page, user.username, "not the password")
    expect(page.get_by_role("alert")).to_be_visible()


def link_sent(page: Page, stack: Stack, user: users.User, database: Database) -> None:
    ask_for_link(page, stack, user.username)


def password_reset(page: Page, stack: Stack, user: users.User, database: Database) -> None:
    link("reset_password", ACCOUNT + "/reset")(page, stack, user, database)
    fill_new_password(page, NEW_PASSWORD)
    expect(page.locator("#sign-in")).to_be_visible()


def wrong_current_password(page: Page, stack: Stack, user: users.User, database: Database) -> None:
    goto_ok(page, stack.url + ACCOUNT + "/password")
    page.locator("#current_password").fill("not the password")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        fill_new_password(page, NEW_PASSWORD)
    assert posted.value.status == 400
    expect(page.get_by_role("alert")).to_be_visible()


# name -> (signed in first, how the page is shown)
PORTAL_PAGES: dict[str, tuple[bool, Show]] = {
    "login": (False, visit(PREFIX + "/login")),
    "login-error": (False, login_refused),
    "account-forgot": (False, visit(ACCOUNT + "/forgot")),
    "account-forgot-sent": (False, link_sent),
    "account-reset": (False, link("reset_password", ACCOUNT + "/reset")),
    "account-reset-done": (False, password_reset),
    "account-link-invalid": (False, visit(ACCOUNT + "/reset?token=no-such-link", 400)),
    "account-email-verify": (False, link("verify_email", ACCOUNT + "/email/verify", "moved@example.test")),
    "account": (True, visit(ACCOUNT)),
    "account-password": (True, visit(ACCOUNT + "/password")),
    "account-password-error": (True, wrong_current_password),
    "account-email": (True, visit(ACCOUNT + "/email")),
    "mfa": (True, visit(PREFIX + "/mfa")),
}


@pytest.mark.parametrize("name", list(PORTAL_PAGES))
def test_portal_page_is_accessible(
    name: str, people: People, stack: Stack, make_user: MakeUser, database: Database
) -> None:
    signed_in, show = PORTAL_PAGES[name]
    user = make_user()
    if signed_in:
        page = people.signed_in(user.username, **accessibility.CONTEXT)
    else:
        page = people.context(**accessibility.CONTEXT).new_page()
    show(page, stack, user, database)
    check_page(page, name)


def test_branded_portal_is_accessible(browser: Browser, proxy_stack: Callable[..., Stack], make_user: MakeUser) -> None:
    """The login page's branding (name, accent colour) on the portal too, readable in the light
    and the dark colour scheme (a dark accent must not become dark text on a dark page)."""
    brand = {"FORWARDAUTH_SITE_NAME": "Acme Ops", "FORWARDAUTH_ACCENT_COLOR": "#0a5c36"}
    stack = proxy_stack("nginx", brand)
    people = People(browser, stack)
    try:
        page = people.context(**accessibility.CONTEXT).new_page()
        user = make_user()
        open_protected(page, stack)
        check_page(page, "login-branded")
        sign_in(page, user.username, PASSWORD)
        expect_protected_page(page, stack, user.username)
        goto_ok(page, stack.url + ACCOUNT)
        expect(page.locator(".brand")).to_have_text("Acme Ops")
        expect(page.locator("#end-others")).to_have_css("background-color", "rgb(10, 92, 54)")
        check_page(page, "account-branded")
    finally:
        people.close()
