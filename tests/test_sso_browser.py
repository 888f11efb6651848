"""One sign-in for every host, in Chromium through real nginx and Traefik.

Hostnames under example.test are mapped to 127.0.0.1 by Chromium's ``--host-resolver-rules``, so
the browser applies its real cookie rules (Domain, Secure, Path) and CSP across hosts. The access
lifetime is 3 seconds: the tests wait for the browser to drop the access cookie (polling for it)
and check that every host signs the browser back in without the form.

- Per-host layout (``deploy/nginx/example-site.conf``, ``deploy/traefik/dynamic.yml``): sign in on
  app, use wiki, and both past the access lifetime; a refused host's page says who you are and lets
  you switch user; sign-out by link asks first.
- Login host (``deploy/nginx/example-login-host.conf``, a Traefik router for the host): the form
  leads on to the app (CSP form-action), and renewals hold on every host.
- A Secure cookie over plain HTTP: refused with the reason, and a warning at start.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from forwardauth.dev import demo
from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, Service, free_port, require_program, stop_process, wait_until
from .test_browser import COOKIE, REFRESH, chromium, sign_in
from .test_web import audit_events

ACCESS_TTL = 3
PROTECTED = "/private/page?x=1"
POLICY = "default: authenticated\nrules:\n  - host: admin.example.test\n    roles: [admin]\n"
PROXIES = ("nginx", "traefik")
MakeUser = Callable[..., users.User]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium("--host-resolver-rules=MAP *.example.test 127.0.0.1") as launched:
        yield launched


@dataclass
class Sites:
    """One proxy on one port serving every ``*.example.test`` host, forwardauth behind it."""

    kind: str
    port: int
    service: Service

    def url(self, host: str, path: str = PROTECTED) -> str:
        return f"http://{host}.example.test:{self.port}{path}"

    def log(self) -> list[str]:
        """forwardauth's log messages so far (JSON lines)."""
        lines = self.service.log.read_text().splitlines()
        return [json.loads(line)["message"] for line in lines if line.startswith("{")]


def add_login_host(proxy: demo.Proxy, host: str) -> None:
    """The shipped login-host example beside the example site (nginx); a router for it (Traefik)."""
    if proxy.kind == "nginx":
        text = (demo.DEPLOY / "nginx" / "example-login-host.conf").read_text()
        (proxy.workdir / "login-host.conf").write_text(demo.render(text, {**proxy.values, "LOGIN_HOST": host}))
        main = proxy.workdir / "nginx.conf"
        both = "include site.conf;\n    include login-host.conf;"
        main.write_text(main.read_text().replace("include site.conf;", both))
    else:
        dynamic = proxy.workdir / "dynamic.yml"
        config = yaml.safe_load(dynamic.read_text())
        config["http"]["routers"]["login-host"] = {
            "rule": f"Host(`{host}`)",
            "entryPoints": ["web"],
            "service": "forwardauth",
            "priority": 1000,
        }
        dynamic.write_text(yaml.safe_dump(config))


@pytest.fixture
def sites(service: Callable[..., Service], tmp_path: Path) -> Iterator[Callable[..., Sites]]:
    """``sites(kind, env_for_port, login_host=None)``: the chain of conftest.proxy_stack, with
    forwardauth's settings made from the public port, and optionally a login host."""
    processes = []

    def start(kind: str, env: Callable[[int], dict[str, str]], login_host: str | None = None) -> Sites:
        require_program(kind)
        port, app_port = free_port(), free_port()
        upstream = demo.start_upstream(app_port, tmp_path / f"upstream-{kind}")
        processes.append(upstream)
        svc = service(
            extra={
                **demo.stack_environment(port),
                "FORWARDAUTH_LOG_LEVEL": "INFO",
                "FORWARDAUTH_ACCESS_TTL": str(ACCESS_TTL),
                **env(port),
            }
        )
        proxy = demo.Proxy(kind, tmp_path / kind, port, f"127.0.0.1:{svc.port}", f"127.0.0.1:{app_port}")
        proxy.configure()
        if login_host:
            add_login_host(proxy, login_host)
        processes.append(proxy.launch())
        demo.wait_for_http(f"http://127.0.0.1:{app_port}/", 20, upstream)
        demo.wait_for_http(f"http://127.0.0.1:{port}/forwardauth/healthz", 30, processes[-1])
        return Sites(kind, port, svc)

    yield start
    for process in reversed(processes):
        stop_process(process)


def expect_app(page: Page, url: str, username: str) -> None:
    expect(page).to_have_url(url)
    expect(page.get_by_role("heading", name=f"Hello, {username}")).to_be_visible()


def login_pages(page: Page) -> list[tuple[str, str, int]]:
    """(host, method, status) of every answer from a login page, as they come."""
    seen: list[tuple[str, str, int]] = []

    def record(response: Response) -> None:
        parts = urlsplit(response.url)
        if parts.path.endswith("/login"):
            seen.append((parts.hostname or "", response.request.method, response.status))

    page.on("response", record)
    return seen


def wait_for_expiry(context: BrowserContext, url: str) -> None:
    """Until the browser has dropped the access cookie (Max-Age=ACCESS_TTL): polled, not slept."""

    def gone() -> bool:
        now = time.time()
        return not [
            c for c in context.cookies(url) if c["name"] == COOKIE and (c["expires"] == -1 or c["expires"] > now)
        ]

    wait_until(gone, ACCESS_TTL + 10, "the access cookie to expire")


def per_host(tmp_path: Path) -> Callable[[int], dict[str, str]]:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return lambda port: {
        "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
        "FORWARDAUTH_ALLOWED_DOMAINS": "example.test",
        "FORWARDAUTH_ISSUER": f"http://app.example.test:{port}/forwardauth",
        "FORWARDAUTH_POLICY_FILE": str(policy),
    }


@pytest.mark.parametrize("kind", PROXIES)
def test_one_sign_in_holds_on_every_host(
    context: BrowserContext, sites: Callable[..., Sites], make_user: MakeUser, tmp_path: Path, kind: str
) -> None:
    """The per-host layout (login page under /forwardauth/ on each host): signed in on app, wiki
    passes at once and both stay signed in past the access lifetime, each renewing through its own
    login page with the one refresh cookie of the cookie domain, without the form."""
    site = sites(kind, per_host(tmp_path))
    user = make_user()
    page = context.new_page()
    logins = login_pages(page)
    page.goto(site.url("app"))
    expect(page).to_have_url(re.compile(re.escape(site.url("app", "/forwardauth/login?rd=")) + ".+"))
    sign_in(page, user.username, PASSWORD)
    expect_app(page, site.url("app"), user.username)

    page.goto(site.url("wiki"))
    expect_app(page, site.url("wiki"), user.username)  # the access cookie is the domain's
    assert [host for host, _, _ in logins] == ["app.example.test", "app.example.test"]  # the form, posted

    refresh = next(c for c in context.cookies(site.url("wiki", "/forwardauth/")) if c["name"] == REFRESH)
    assert (refresh["domain"], refresh["path"], refresh["httpOnly"]) == (".example.test", "/forwardauth/", True)

    for host in ("wiki", "app", "wiki"):  # each one past an access lifetime
        wait_for_expiry(context, site.url(host))
        del logins[:]
        page.goto(site.url(host))
        expect_app(page, site.url(host), user.username)
        assert logins == [(f"{host}.example.test", "GET", 303)]  # renewed on that host's page, no form

    with page.expect_request(site.url("wiki")) as sent:
        page.reload()
    assert REFRESH not in (sent.value.all_headers().get("cookie") or "")  # the app never receives it


@pytest.mark.parametrize("kind", PROXIES)
def test_a_refused_user_is_told_who_and_can_switch_or_sign_out(
    context: BrowserContext, sites: Callable[..., Sites], make_user: MakeUser, tmp_path: Path, kind: str
) -> None:
    """admin.example.test needs role admin: instead of a bare 403, the page names the user and
    offers another account; sign-out by link asks first, then the login page says so."""
    site = sites(kind, per_host(tmp_path))
    plain, admin = make_user(), make_user(roles=("admin",))
    page = context.new_page()
    page.goto(site.url("admin"))
    with page.expect_response(site.url("admin")) as refused:
        sign_in(page, plain.username, PASSWORD)
    assert refused.value.status == 403
    expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
    expect(page.get_by_text(f"You are signed in as {plain.username} (roles: user).")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("admin.example.test needs another role")
    denied = f'access denied: address=127.0.0.1 host=admin.example.test user="{plain.username}" method=GET'
    wait_until(lambda: any(line.startswith(denied) for line in site.log()), 10, "the access-denied line")

    page.get_by_role("button", name="Sign in as someone else").click()
    expect(page.get_by_role("status")).to_have_text("You have been signed out.")
    sign_in(page, admin.username, PASSWORD)
    expect_app(page, site.url("admin"), admin.username)

    page.goto(site.url("wiki", "/forwardauth/logout"))  # a plain link
    expect(page.get_by_text(f"You are signed in as {admin.username}.")).to_be_visible()
    page.goto(site.url("admin"))
    expect_app(page, site.url("admin"), admin.username)  # the link alone signed no one out
    page.goto(site.url("wiki", "/forwardauth/logout"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(site.url("wiki", "/forwardauth/login?signed_out=1"))
    expect(page.get_by_role("status")).to_have_text("You have been signed out.")
    assert not [c for c in context.cookies(site.url("admin", "/forwardauth/")) if c["name"] in (COOKIE, REFRESH)]
    page.goto(site.url("admin"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # on every host


@pytest.mark.parametrize("kind", PROXIES)
def test_a_login_host_of_its_own(
    context: BrowserContext, sites: Callable[..., Sites], make_user: MakeUser, database: Database, kind: str
) -> None:
    """FORWARDAUTH_LOGIN_URL on auth.example.test: after the form, Chromium follows the 303 to the
    app (the page's CSP form-action allows it), once; every host renews through that page."""
    site = sites(
        kind,
        lambda port: {
            "FORWARDAUTH_LOGIN_URL": f"http://auth.example.test:{port}/login",
            "FORWARDAUTH_ISSUER": f"http://auth.example.test:{port}",
            "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
            "FORWARDAUTH_ALLOWED_DOMAINS": "example.test",
        },
        login_host="auth.example.test",
    )
    user = make_user()
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    logins = login_pages(page)
    page.goto(site.url("app"))
    expect(page).to_have_url(re.compile(re.escape(site.url("auth", "/login?rd=")) + ".+"))
    sign_in(page, user.username, PASSWORD)
    expect_app(page, site.url("app"), user.username)
    assert not [text for text in console if "form-action" in text], console
    assert audit_events(database, user.username) == ["login_success"]  # one sign-in, no retries

    page.goto(site.url("wiki"))
    expect_app(page, site.url("wiki"), user.username)
    refresh = next(c for c in context.cookies(site.url("auth", "/")) if c["name"] == REFRESH)
    assert (refresh["domain"], refresh["path"]) == ("auth.example.test", "/")  # the login host's alone
    for host in ("wiki", "app"):
        wait_for_expiry(context, site.url(host))
        del logins[:]
        page.goto(site.url(host))
        expect_app(page, site.url(host), user.username)
        assert logins == [("auth.example.test", "GET", 303)]

    page.goto(site.url("wiki", "/forwardauth/logout"))  # any host's link: to the login host, which holds the cookie
    expect(page).to_have_url(site.url("auth", "/logout"))
    expect(page.get_by_text(f"You are signed in as {user.username}.")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You have been signed out.")
    page.goto(site.url("wiki"))
    expect(page).to_have_url(re.compile(re.escape(site.url("auth", "/login?rd=")) + ".+"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_secure_cookie_over_plain_http_is_explained(
    context: BrowserContext, sites: Callable[..., Sites], make_user: MakeUser, database: Database
) -> None:
    """FORWARDAUTH_COOKIE_SECURE=true (the default) on a plain-HTTP site: Chromium would drop the
    cookie and the user would land on an empty form again. The page and the log say why."""
    site = sites(
        "nginx",
        lambda port: {
            "FORWARDAUTH_COOKIE_SECURE": "true",
            "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
            "FORWARDAUTH_ALLOWED_DOMAINS": "example.test",
            "FORWARDAUTH_ISSUER": f"http://app.example.test:{port}/forwardauth",
        },
    )
    assert any(
        "FORWARDAUTH_ISSUER is http://app.example.test" in line and "FORWARDAUTH_COOKIE_SECURE=true" in line
        for line in site.log()
    )  # said at start
    user = make_user()
    page = context.new_page()
    page.goto(site.url("app"))
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        sign_in(page, user.username, PASSWORD)
    assert posted.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("FORWARDAUTH_COOKIE_SECURE=false")
    expect(page.get_by_label("Username")).to_have_value(user.username)
    assert any(line.startswith("sign-in refused: the login page was reached over plain HTTP") for line in site.log())
    assert audit_events(database, user.username) == []
    assert not context.cookies()
