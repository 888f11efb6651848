"""Passkeys in Chromium through real nginx, with Chromium's own virtual authenticator (DevTools
WebAuthn domain: a platform authenticator with resident keys and user verification).

WebAuthn needs a secure context: the site is http://app.localhost:PORT, which Chromium treats
as secure over plain HTTP (a loopback name). Chromium takes an rp id that is the page's host or
a registrable suffix of it, and ``localhost`` is no such suffix of ``app.localhost``: the rp id
is the host itself, which forwardauth derives from the issuer (no cookie domain: host-only
cookies). The passkey is registered on /mfa, then signs in alone (passwordless) and as the
second factor after the password, each time through static/passkeys.js and the JSON endpoints.
The script's messages are the page's (German for a German browser).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from forwardauth.dev import demo
from forwardauth.stores import passkeys, users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, Service, free_port, require_program, stop_process
from .test_browser import chromium, sign_in
from .test_web import audit_events

PROTECTED = "/private/page?x=1"
MakeUser = Callable[..., users.User]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium("--host-resolver-rules=MAP *.localhost 127.0.0.1") as launched:
        yield launched


@dataclass
class Site:
    port: int
    service: Service

    def url(self, path: str = PROTECTED) -> str:
        return f"http://app.localhost:{self.port}{path}"


@pytest.fixture
def site(service: Callable[..., Service], tmp_path: Path) -> Iterator[Site]:
    """nginx (deploy/nginx) in front of the echo upstream and forwardauth, at app.localhost."""
    require_program("nginx")
    port, app_port = free_port(), free_port()
    processes = [demo.start_upstream(app_port, tmp_path / "upstream")]
    try:
        svc = service(
            extra={
                **demo.stack_environment(port),
                "FORWARDAUTH_ISSUER": f"http://app.localhost:{port}/forwardauth",
                "FORWARDAUTH_ALLOWED_DOMAINS": "app.localhost",
                "FORWARDAUTH_COOKIE_DOMAIN": "",  # unset: host-only cookies
            }
        )
        proxy = demo.Proxy("nginx", tmp_path / "nginx", port, f"127.0.0.1:{svc.port}", f"127.0.0.1:{app_port}")
        processes.append(proxy.start())
        demo.wait_for_http(f"http://127.0.0.1:{app_port}/", 20, processes[0])
        demo.wait_for_http(f"http://127.0.0.1:{port}/forwardauth/healthz", 30, processes[-1])
        yield Site(port, svc)
    finally:
        for process in reversed(processes):
            stop_process(process)


def virtual_authenticator(context: BrowserContext, page: Page) -> tuple[Any, str]:
    """Chromium's virtual platform authenticator for ``page``'s context: (session, its id)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def expect_app(page: Page, site: Site, username: str) -> None:
    expect(page).to_have_url(site.url())
    expect(page.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()


def sign_out(page: Page, site: Site) -> None:
    page.goto(site.url("/forwardauth/logout"))
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You have been signed out.")


def test_register_then_sign_in_with_the_passkey(
    context: BrowserContext, site: Site, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    cdp, authenticator = virtual_authenticator(context, page)

    # signed in with the password (no factor yet), then a passkey on /mfa
    page.goto(site.url())
    sign_in(page, user.username, PASSWORD)
    expect_app(page, site, user.username)
    page.goto(site.url("/forwardauth/mfa"))
    page.get_by_label("Name of the new passkey").fill("Virtual key")
    page.get_by_role("button", name="Add a passkey").click()
    codes = page.get_by_role("list", name="Recovery codes").get_by_role("listitem")
    expect(codes).to_have_count(10)  # the first factor: recovery codes, shown once
    [stored] = database.call(passkeys.of_user, user.id)
    assert stored.name == "Virtual key" and stored.user_id == user.id
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"]

    # the session was password-only: /mfa now asks for the second factor, and the passkey gives it
    page.get_by_role("link", name="Continue").click()
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(site.url("/forwardauth/mfa"))
    expect(page.locator("strong", has_text="Virtual key")).to_be_visible()

    # passwordless: signed out, back to the app, "Sign in with a passkey"
    sign_out(page, site)
    page.goto(site.url())
    expect(page).to_have_url(re.compile(re.escape(site.url("/forwardauth/login?rd=")) + ".+"))
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect_app(page, site, user.username)
    amr = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="X-Auth-AMR", exact=True))
    expect(amr).to_contain_text(re.compile(r"hwk,.*mfa"))  # what the app was told: the passkey, multi-factor

    # the second factor after the password
    sign_out(page, site)
    page.goto(site.url())
    sign_in(page, user.username, PASSWORD)
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    page.get_by_role("button", name="Use a passkey").click()
    expect_app(page, site, user.username)

    events = audit_events(database, user.username)
    assert events.count("mfa_success") == 2 and events.count("login_success") == 3  # password twice, passkey once
    assert database.call(passkeys.of_user, user.id)[0].last_used_at is not None
    assert not [text for text in errors if "Content Security Policy" in text], errors


def test_the_script_speaks_the_page_language(browser: Browser, site: Site) -> None:
    """passkeys.js shows the page's own texts (its data-* attributes): German for a German browser,
    with no inline script and so no CSP violation."""
    context = browser.new_context(locale="de-DE")  # Accept-Language: de-DE
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        cdp, authenticator = virtual_authenticator(context, page)
        cdp.send("WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False})
        page.goto(site.url())
        page.get_by_role("button", name="Mit einem Passkey anmelden").click()
        alert = page.locator("[data-passkey-error]")
        expect(alert).to_have_text("Die Passkey-Anfrage wurde abgebrochen oder ist abgelaufen.")
        expect(alert).to_be_visible()
        # an answer that says nothing itself (a proxy's error page): its status in the page's words
        page.route("**/passkey/options", lambda route: route.fulfill(status=502, body="Bad Gateway"))
        page.get_by_role("button", name="Mit einem Passkey anmelden").click()
        expect(alert).to_have_text("Der Server antwortete mit Status 502.")
        assert not [text for text in errors if "Content Security Policy" in text], errors
    finally:
        context.close()
