"""Second factors in Chromium through real nginx (deploy/), real PostgreSQL and Redis.

A user signed in with their password sets up TOTP on /forwardauth/mfa, reading the key from the
page as a person would type it into their app; a rule with ``second_factor: required`` and
``max_auth_age`` then sends that password-only session to the second-factor page and back to
``rd``; after signing out, signing in takes the password and then a code. Codes come from pyotp.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, Stack, require_program, wait_until
from .test_browser import chromium_browser as chromium_browser
from .test_browser import expect_protected_page, open_protected
from .test_browser import host_only_cookies as host_only_cookies
from .test_web import audit_events

VAULT = "/vault/page"
POLICY = """\
default: authenticated
rules:
  - path: /vault
    policy: authenticated
    second_factor: required
    max_auth_age: 10m
"""


@pytest.fixture
def stack(proxy_stack: Callable[..., Stack], tmp_path: Path) -> Stack:
    require_program("nginx")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return proxy_stack("nginx", {"FORWARDAUTH_POLICY_FILE": str(policy)})


class Authenticator:
    """The user's app: a code of a time step no code was used for yet (each is accepted once)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.used: set[int] = set()

    def code(self) -> str:
        def unused_step() -> int | None:
            now = self.totp.timecode(time.time())
            # now or the next step: still within the server's window when it checks
            return next((step for step in (now, now + 1) if step not in self.used), None)

        step = wait_until(unused_step, 65, "a time step with an unused code")
        self.used.add(step)
        return self.totp.generate_otp(step)

    def wrong(self) -> str:
        """A code no step near now has."""
        now = self.totp.timecode(time.time())
        near = {self.totp.generate_otp(step) for step in range(now - 2, now + 3)}
        return next(code for code in ("000000", "111111", "222222", "333333", "444444", "555555") if code not in near)


def sign_in(page: Page, username: str, password: str) -> None:
    """The password form (exact names: the page also offers a passkey)."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def set_up_totp(page: Page, stack: Stack) -> Authenticator:
    page.goto(stack.url + "/forwardauth/mfa")
    expect(page.get_by_role("heading", name="Second factors")).to_be_visible()
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.get_by_role("img", name="QR code of the key")).to_be_visible()  # inline SVG
    app = Authenticator(page.locator("#totp-secret").inner_text().strip())
    field = page.get_by_label("Code from your app")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("autocomplete", "one-time-code")
    field.fill(app.code())
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("ol.codes li")).to_have_count(10)
    return app


def give_code(page: Page, app: Authenticator) -> None:
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    field = page.get_by_label("Code from your authenticator app")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("inputmode", "numeric")
    field.fill(app.code())
    page.get_by_role("button", name="Verify").click()


def test_enrol_step_up_and_sign_in_with_totp(
    context: BrowserContext, stack: Stack, make_user: Callable[..., users.User], database: Database
) -> None:
    user = make_user()
    page = context.new_page()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)  # no factor yet: the password alone
    expect_protected_page(page, stack, user.username)

    app = set_up_totp(page, stack)

    # the session was opened with the password alone: the vault's rule wants a second factor
    page.goto(stack.url + VAULT)
    expect(page).to_have_url(stack.url + "/forwardauth/login/second-factor")
    page.set_viewport_size({"width": 360, "height": 740})  # phone width: the field fits
    box = page.get_by_label("Code from your authenticator app").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    give_code(page, app)
    expect(page).to_have_url(stack.url + VAULT)
    expect(page.get_by_role("heading", name=f"Hello, {user.username}")).to_be_visible()
    row = page.locator("tr").filter(has=page.locator("th", has_text="X-Auth-AMR"))
    expect(row.locator("td")).to_have_text("otp,pwd,mfa")  # sorted, mfa last (core.authn)

    # a wrong code says so, tied to the field
    page.goto(stack.url + "/forwardauth/logout")
    page.get_by_role("button", name="Sign out").click()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(app.wrong())
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_have_text("That code is wrong or was already used.")
    expect(page.get_by_label("Code from your authenticator app")).to_have_attribute("aria-describedby", "code-error")

    give_code(page, app)
    expect_protected_page(page, stack, user.username)
    page.goto(stack.url + VAULT)  # multi-factor and recent: straight in
    expect(page).to_have_url(stack.url + VAULT)
    events = audit_events(database, user.username)
    assert events.count("mfa_enrol") == 1 and events.count("mfa_success") == 2 and "mfa_failure" in events
