"""The admin console in Chromium through real nginx (deploy/), real PostgreSQL and Redis.

An administrator is a user with FORWARDAUTH_ADMIN_ROLE (default "admin"). Disabling a user must
make ``/auth`` refuse that user's browser at once; everyone else gets 403 on every admin URL,
GET or POST, even with a valid CSRF token of their own. Every page is checked with axe-core and
photographed at desktop and phone width (see test_portal_browser).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from forwardauth.stores import audit, clients, users
from forwardauth.stores.postgres import Database

from . import accessibility
from .support import PASSWORD, MakeClient, Stack
from .test_browser import chromium_browser as chromium_browser
from .test_browser import expect_protected_page, on_login_page, open_protected, sign_in
from .test_browser import host_only_cookies as host_only_cookies
from .test_browser import nginx_stack as nginx_stack
from .test_portal_browser import (
    ACCOUNT,
    FIREFOX,
    NEW_PASSWORD,
    PREFIX,
    MakeUser,
    People,
    Show,
    check_page,
    expect_accepted,
    expect_refused,
    fill_new_password,
    goto_ok,
    goto_status,
    people_on,
    visit,
)
from .test_stepup_browser import set_up_totp
from .test_web import audit_events

ADMIN = PREFIX + "/admin"


@pytest.fixture
def people(browser: Browser, stack: Stack) -> Iterator[People]:
    yield from people_on(browser, stack)


def make_admin(make_user: MakeUser) -> users.User:
    return make_user(roles=("admin",))


def user_page(stack: Stack, username: str) -> str:
    return f"{stack.url}{ADMIN}/users/{username}"


# --- disabling a user -------------------------------------------------------------------------------


def test_a_disabled_users_browser_is_refused_at_once(
    people: People, stack: Stack, make_user: MakeUser, database: Database
) -> None:
    admin, victim = make_admin(make_user), make_user()
    victims_browser = people.signed_in(victim.username)
    token = expect_accepted(victims_browser, stack)
    console = people.signed_in(admin.username, java_script_enabled=False)  # the console needs none

    goto_ok(console, user_page(stack, victim.username))
    expect(console.locator("#sessions tr[data-sid]")).to_have_count(1)
    console.locator("#disable").click()

    expect(console).to_have_url(re.compile(re.escape(user_page(stack, victim.username)) + r"(\?.*)?$"))
    expect(console.locator("#enable")).to_be_visible()
    expect(console.locator("#sessions tr[data-sid]")).to_have_count(0)
    expect_refused(victims_browser, stack, token)
    sign_in(victims_browser, victim.username, PASSWORD)  # nor can they sign in again
    expect(victims_browser).to_have_url(on_login_page(stack))
    expect(victims_browser.get_by_role("alert")).to_be_visible()
    disabled = database.call(users.get, victim.id)
    assert disabled is not None and disabled.disabled

    console.locator("#enable").click()
    expect(console.locator("#disable")).to_be_visible()
    open_protected(victims_browser, stack)
    sign_in(victims_browser, victim.username, PASSWORD)
    expect_protected_page(victims_browser, stack, victim.username)
    assert "admin" in audit_events(database, admin.username) + audit_events(database, victim.username)


def test_an_admin_ends_one_session_then_all(people: People, stack: Stack, make_user: MakeUser) -> None:
    admin, someone = make_admin(make_user), make_user()
    chrome = people.signed_in(someone.username)
    firefox = people.signed_in(someone.username, user_agent=FIREFOX)
    chrome_token, firefox_token = expect_accepted(chrome, stack), expect_accepted(firefox, stack)
    console = people.signed_in(admin.username)

    goto_ok(console, f"{stack.url}{ADMIN}/sessions?q={someone.username}")
    rows = console.locator("#sessions tr[data-sid]")
    expect(rows).to_have_count(2)
    ended = rows.filter(has_text="Firefox on Linux")
    sid = ended.get_attribute("data-sid")
    ended.get_by_role("button").click()
    expect(console.get_by_role("status")).to_be_visible()
    expect(console.locator(f'#sessions tr[data-sid="{sid}"]')).to_have_count(0)
    expect_refused(firefox, stack, firefox_token)
    expect_accepted(chrome, stack)

    goto_ok(console, user_page(stack, someone.username))
    console.locator("#end-sessions").click()
    expect(console.locator("#sessions tr[data-sid]")).to_have_count(0)
    expect_refused(chrome, stack, chrome_token)
    expect_accepted(console, stack)  # the admin's own session is not among them


def test_roles_take_effect_at_once(people: People, stack: Stack, make_user: MakeUser) -> None:
    """A role given counts on the next page (read fresh); a role taken away ends the sessions."""
    admin, promoted = make_admin(make_user), make_user()
    theirs = people.signed_in(promoted.username)
    goto_status(theirs, stack.url + ADMIN + "/users", 403)
    console = people.signed_in(admin.username)

    goto_ok(console, user_page(stack, promoted.username))
    console.locator("#roles").fill("user, admin")
    console.locator("#save-roles").click()
    expect(console.get_by_role("status")).to_be_visible()
    goto_ok(theirs, stack.url + ADMIN + "/users")  # the same session, an administrator now
    token = expect_accepted(theirs, stack)

    console.locator("#roles").fill("user")
    console.locator("#save-roles").click()
    expect(console.get_by_role("status")).to_be_visible()
    expect_refused(theirs, stack, token)


def test_an_admin_cannot_disable_themself(people: People, stack: Stack, make_user: MakeUser) -> None:
    """No lock-out: the page offers no button, and the action itself refuses (409)."""
    admin = make_admin(make_user)
    console = people.signed_in(admin.username)
    goto_ok(console, user_page(stack, admin.username))
    expect(console.locator("#disable")).to_have_count(0)
    for path, fields in (("/disable", {}), ("/roles", {"roles": "user"})):
        answer = console.context.request.post(
            user_page(stack, admin.username) + path,
            form={**fields, "csrf_token": csrf_token_of(console)},
            headers={"Origin": stack.url},
            max_redirects=0,
        )
        assert answer.status == 409, (path, answer.status)
    expect_accepted(console, stack)
    goto_ok(console, stack.url + ADMIN + "/users")  # still an administrator


def test_an_admin_creates_a_user_who_chooses_a_password(people: People, stack: Stack, make_user: MakeUser) -> None:
    admin = make_admin(make_user)
    console = people.signed_in(admin.username)
    goto_ok(console, stack.url + ADMIN + "/users")
    newcomer = f"new-{secrets.token_hex(4)}"
    form = console.locator(f'form[action$="{ADMIN}/users/new"]')
    form.locator("[name=username]").fill(newcomer)
    form.locator("[name=email]").fill(f"{newcomer}@example.test")
    form.locator("[name=roles]").fill("user")
    form.locator("[type=submit]").click()

    shown = console.locator("#one-time-link").inner_text()
    link = re.search(r"https?://\S+", shown)
    assert link is not None, shown
    assert link.group(0).startswith(stack.url + ACCOUNT + "/reset?token="), shown  # built from the issuer
    page = people.context().new_page()
    goto_ok(page, link.group(0))
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
    fill_new_password(page, NEW_PASSWORD)
    expect(page.locator("#sign-in")).to_be_visible()
    open_protected(page, stack)
    sign_in(page, newcomer, NEW_PASSWORD)
    expect_protected_page(page, stack, newcomer)


def test_the_console_can_require_a_second_factor(
    browser: Browser, proxy_stack: Callable[..., Stack], make_user: MakeUser
) -> None:
    """FORWARDAUTH_ADMIN_SECOND_FACTOR: a password-only administrator enrols first, then gets in."""
    stack = proxy_stack("nginx", {"FORWARDAUTH_ADMIN_SECOND_FACTOR": "true"})
    people = People(browser, stack)
    try:
        page = people.signed_in(make_admin(make_user).username)
        page.goto(stack.url + ADMIN + "/users")
        expect(page).to_have_url(stack.url + PREFIX + "/mfa")
        set_up_totp(page, stack)
        page.locator("ol.codes ~ p a").click()
        expect(page).to_have_url(stack.url + ADMIN + "/users")
        expect(page.locator("#users")).to_be_visible()
    finally:
        people.close()


def test_the_audit_trail_filters_and_pages(
    people: People, stack: Stack, make_user: MakeUser, database: Database
) -> None:
    someone = make_user()
    for n in range(55):
        database.call(audit.record, "login_failure", someone.id, someone.username, "192.0.2.7", {"n": n})
    database.call(audit.record, "logout", someone.id, someone.username, "192.0.2.7")
    console = people.signed_in(make_admin(make_user).username)

    goto_ok(console, stack.url + ADMIN + "/audit")
    console.locator("#user").fill(someone.username.upper())  # any case
    console.locator("#event").select_option("login_failure")
    console.get_by_role("button", name="Filter").click()
    rows = console.locator("#audit tr[data-event-id]")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("n: 54")  # newest first
    expect(rows.filter(has_text="logout")).to_have_count(0)
    console.locator("#older").click()
    expect(rows).to_have_count(5)
    expect(rows.last).to_contain_text("n: 0")
    expect(console.locator("#older")).to_have_count(0)


# --- everyone else: 403 ------------------------------------------------------------------------------


def admin_urls(username: str, client_id: str, sid: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every admin URL of PORTAL.md: (method, path, form fields for a POST)."""
    user = f"{ADMIN}/users/{username}"
    client = f"{ADMIN}/clients/{client_id}"
    gets = [
        ADMIN,
        ADMIN + "/users",
        ADMIN + "/users?q=a",
        user,
        ADMIN + "/sessions",
        ADMIN + "/sessions?q=a&page=2",
        ADMIN + "/clients",
        ADMIN + "/keys",
        ADMIN + "/audit",
        ADMIN + "/audit?event=admin&since=2020-01-01",
    ]
    posts: dict[str, dict[str, str]] = {
        ADMIN + "/users/new": {"username": "intruder", "email": "", "roles": "admin", "delivery": "link"},
        user + "/disable": {},
        user + "/enable": {},
        user + "/roles": {"roles": "admin user"},
        user + "/mfa-reset": {},
        user + "/end-sessions": {},
        user + "/password-link": {},
        ADMIN + "/sessions/end": {"sid": sid},
        ADMIN + "/clients/new": {
            "client_id": "intruder",
            "redirect_uris": "https://evil.example/cb",
            "scopes": "openid",
        },
        client + "/disable": {},
        client + "/enable": {},
        client + "/rotate": {},
        ADMIN + "/keys/rotate": {},
    }
    return [("GET", path, {}) for path in gets] + [("POST", path, fields) for path, fields in posts.items()]


def csrf_token_of(page: Page) -> str:
    """The CSRF token of the signed-in user's forms (one per session, on every portal page)."""
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    return token


def test_a_non_admin_gets_403_on_every_admin_url(
    people: People, stack: Stack, make_user: MakeUser, make_client: MakeClient, database: Database
) -> None:
    target, (client, _) = make_user(), make_client()
    target_page = people.signed_in(target.username)
    expect_accepted(target_page, stack)
    goto_ok(target_page, stack.url + ACCOUNT)
    target_sid = target_page.locator("#sessions tr[data-sid]").first.get_attribute("data-sid") or ""
    outsider = make_user(roles=("user", "administrator"))  # a role *like* admin is not admin
    page = people.signed_in(outsider.username)
    goto_ok(page, stack.url + ACCOUNT)
    expect(page.locator(f'a[href$="{ADMIN}/users"]')).to_have_count(0)  # no link to the console
    csrf = csrf_token_of(page)

    answers = {}
    request = page.context.request
    for method, path, fields in admin_urls(target.username, client.id, target_sid):
        if method == "GET":
            answer = request.get(stack.url + path, max_redirects=0)
        else:
            answer = request.post(
                stack.url + path,
                form={**fields, "csrf_token": csrf},
                headers={"Origin": stack.url},
                max_redirects=0,
            )
        answers[f"{method} {path}"] = answer.status
    assert {what: status for what, status in answers.items() if status != 403} == {}

    # and nothing happened
    unchanged = database.call(users.get, target.id)
    assert unchanged is not None and not unchanged.disabled and unchanged.roles == target.roles
    assert database.call(users.find, "intruder") is None
    still = database.call(clients.find, client.id)
    assert still is not None and still == client
    expect_accepted(target_page, stack)  # its sessions were not ended either


# --- accessibility and screenshots ------------------------------------------------------------------


def user_created(page: Page, stack: Stack, someone: users.User, database: Database) -> None:
    goto_ok(page, stack.url + ADMIN + "/users")
    page.locator("#username").fill(f"new-{secrets.token_hex(4)}")
    page.locator("#create-user").click()
    expect(page.locator("#one-time-link")).to_be_visible()


def password_link_made(page: Page, stack: Stack, someone: users.User, database: Database) -> None:
    goto_ok(page, user_page(stack, someone.username))
    page.locator("#password-link").click()
    expect(page.locator("#one-time-link")).to_be_visible()


def client_added(page: Page, stack: Stack, someone: users.User, database: Database) -> None:
    goto_ok(page, stack.url + ADMIN + "/clients")
    page.locator("#client_id").fill(f"app-{secrets.token_hex(4)}")
    page.locator("#redirect_uris").fill("https://app.example.test/callback")
    page.locator("#scopes").fill("openid profile")
    page.locator("#add-client").click()
    expect(page.locator("#client-secret")).to_be_visible()


# name -> how the page is shown to an administrator (someone: another user, signed in elsewhere)
ADMIN_PAGES: dict[str, Show] = {
    "admin-users": visit(ADMIN + "/users"),
    "admin-users-search": visit(ADMIN + "/users?q={username}"),
    "admin-user-created": user_created,
    "admin-user": visit(ADMIN + "/users/{username}"),
    "admin-user-link": password_link_made,
    "admin-sessions": visit(ADMIN + "/sessions"),
    "admin-clients": visit(ADMIN + "/clients"),
    "admin-client-secret": client_added,
    "admin-keys": visit(ADMIN + "/keys"),
    "admin-audit": visit(ADMIN + "/audit"),
    "admin-audit-error": visit(ADMIN + "/audit?since=yesterday", 400),
}


@pytest.mark.parametrize("name", list(ADMIN_PAGES))
def test_admin_page_is_accessible(
    name: str, people: People, stack: Stack, make_user: MakeUser, make_client: MakeClient, database: Database
) -> None:
    admin, someone = make_admin(make_user), make_user()
    make_client()  # a row in the clients table
    people.signed_in(someone.username)  # a session of somebody else in the tables
    page = people.signed_in(admin.username, **accessibility.CONTEXT)
    ADMIN_PAGES[name](page, stack, someone, database)
    check_page(page, name)


def test_admin_forbidden_page_is_accessible(people: People, stack: Stack, make_user: MakeUser) -> None:
    page = people.signed_in(make_user().username, **accessibility.CONTEXT)
    goto_status(page, stack.url + ADMIN + "/users", 403)
    check_page(page, "admin-forbidden")
