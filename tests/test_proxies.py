"""End to end through real nginx, Traefik and Caddy, configured from the files in deploy/.

Every request goes through the proxy (``stack.url``) with the standard library only, never
following redirects: each hop a browser or an API client would make is made and checked here.
The session cookie has ``Domain=example.test`` (the ``env`` fixture), which no client stores
for 127.0.0.1, so it is read from ``Set-Cookie`` and sent back by hand.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest

from forwardauth.core.policy import StepUp
from forwardauth.stores import users
from forwardauth.stores.postgres import Database

from . import http
from .support import PASSWORD, Stack, backdate_sessions, wait_until

PROXIES = ["nginx", "traefik", "caddy"]
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API = {"Accept": "application/json"}
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SPOOF = {
    "X-Auth-User": "root",
    "X-Auth-Roles": "admin",
    "X-Auth-Email": "spoof@evil.test",
    "X-Auth-Subject": "x",
    "X-Auth-AMR": "hwk,user,mfa",
}
OFF_SITE = [
    "https://evil.test/",
    "//evil.test/",
    "/\\evil.test",
    "javascript:alert(1)",
    "https://127.0.0.1@evil.test/",
    "http://127.0.0.1.evil.test/",
    "https://evil.test%2F@127.0.0.1/",
]
MakeUser = Callable[..., users.User]


@pytest.fixture(params=PROXIES)
def stack(request: pytest.FixtureRequest, proxy_stack: Callable[[str], Stack]) -> Stack:
    return proxy_stack(request.param)


# --- helpers -----------------------------------------------------------------------------------


def login_url(stack: Stack) -> str:
    return stack.url + "/forwardauth/login"


def form_login(
    stack: Stack, user: users.User, rd: str = "", url: str | None = None, headers: dict[str, str] | None = None
) -> http.Response:
    return http.post_form(
        url or login_url(stack),
        {"username": user.username, "password": PASSWORD, "rd": rd},
        {**BROWSER, **(headers or {})},
    )


def bearer_token(stack: Stack, user: users.User) -> str:
    """An access token from a JSON login through the proxy."""
    response = expect(stack, http.login(stack.url + "/forwardauth", user.username, PASSWORD), 200, "JSON login")
    body = response.json()
    assert body["token_type"] == "Bearer"
    return str(body["access_token"])


def bearer(token: str) -> dict[str, str]:
    """An API client presenting the token."""
    return {**API, **http.bearer(token)}


def logs(stack: Stack, lines: int = 15) -> str:
    """The end of forwardauth's log and the proxy's logs, for failure messages."""
    files = [stack.service.log, *sorted((stack.service.log.parent / stack.kind).glob("*.log"))]
    tails = []
    for path in files:
        text = path.read_text(errors="replace") if path.exists() else "(missing)"
        tails.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(tails)


def expect(stack: Stack, response: http.Response, status: int, what: str = "") -> http.Response:
    """Assert the status; on failure say what came back and what the servers logged."""
    assert response.status == status, (
        f"{stack.kind} {what}: {response.status} instead of {status}: {response.text[:300]!r}\n{logs(stack)}"
    )
    return response


def upstream_saw(stack: Stack, response: http.Response) -> dict[str, Any]:
    """What the echo upstream received (headers with lower-case names); fails if it was not reached."""
    expect(stack, response, 200, "expected the echo upstream")
    assert (response.headers.get("Content-Type") or "").startswith("application/json"), response.headers
    seen = dict(response.json())
    assert set(seen) == {"method", "path", "headers", "body"}, seen
    seen["headers"] = {str(k).lower(): v for k, v in seen["headers"].items()}
    return seen


def identity(seen: dict[str, Any]) -> dict[str, str]:
    """The X-Auth-* headers the upstream received."""
    return {k: v for k, v in seen["headers"].items() if k.startswith("x-auth-")}


# --- 1. API client without a token -------------------------------------------------------------------


def test_api_client_without_token_gets_401_with_one_bearer_challenge(stack: Stack) -> None:
    for headers in ({}, API):
        response = expect(stack, http.get(stack.url + "/private/data?q=1", headers), 401, str(headers))
        assert response.headers.get_all("WWW-Authenticate") == ["Bearer"], response.headers.get_all("WWW-Authenticate")
        assert response.headers.get("Location") is None


# --- 2 and 3. browser: login page, form login, back to the page with the cookie ------------------------


def test_browser_is_sent_to_login_page_and_back(stack: Stack, make_user: MakeUser) -> None:
    user = make_user(roles=("user", "ops"), email=f"mail-{secrets.token_hex(4)}@example.test")
    original = stack.url + "/private/page?x=1&y=two%20words&z=%2F"

    first = expect(stack, http.get(original, BROWSER), 302, "browser without a cookie")
    location = first.headers["Location"]
    assert location == f"{stack.url}/forwardauth/login?rd={quote(original, safe='')}"
    assert urlsplit(location).netloc == urlsplit(stack.url).netloc

    page = expect(stack, http.get(location, BROWSER), 200, "login page")
    assert (page.headers.get("Content-Type") or "").startswith("text/html")
    [form] = http.forms(page.text)
    assert form.method == "post" and form.action == "/forwardauth/login"
    assert form.inputs["rd"] == original
    assert {"username", "password"} <= set(form.inputs)

    login = expect(
        stack, form_login(stack, user, rd=form.inputs["rd"], url=urljoin(location, form.action)), 303, "form login"
    )
    assert login.headers["Location"] == original
    # The session cookie for the whole domain, after the expiry of any host-only one left from
    # before FORWARDAUTH_COOKIE_DOMAIN was set (two cookies of one name would be refused).
    lines = login.headers.get_all("Set-Cookie") or []
    stale, fresh = [line for line in lines if line.startswith("forwardauth=")]
    refresh = [line for line in lines if line.startswith("forwardauth_refresh=")][-1]
    assert "Path=/forwardauth/" in refresh and "Domain=example.test" in refresh  # test_renewal.py, test_sso.py
    assert stale.startswith("forwardauth=;") and "Max-Age=0" in stale and "Domain" not in stale
    assert "Domain=example.test" in fresh
    cookie = http.set_cookies(login)["forwardauth"]
    assert cookie["value"] and cookie["httponly"] == "flag" and cookie["samesite"] == "Lax", cookie
    assert cookie["path"] == "/"

    seen = upstream_saw(stack, http.get(original, {**API, **http.cookie_header(forwardauth=cookie["value"])}))
    assert seen["method"] == "GET"
    assert seen["path"] == "/private/page?x=1&y=two%20words&z=%2F"
    assert identity(seen) == {
        "x-auth-user": user.username,
        "x-auth-roles": "user,ops",
        "x-auth-subject": str(user.id),
        "x-auth-email": user.email,
        "x-auth-amr": "pwd",  # signed in with a password alone
    }


def test_an_expired_session_is_renewed_through_the_login_page(
    stack: Stack, make_user: MakeUser, database: Database
) -> None:
    """The browser kept only its refresh cookie (sent on /forwardauth/ paths): the login page
    renews the session and sends it back to the page, without the form."""
    user = make_user()
    original = stack.url + "/private/renew?x=1"
    refresh = http.set_cookies(form_login(stack, user, rd=original))["forwardauth_refresh"]
    backdate_sessions(database, user)  # the access cookie has expired since
    assert refresh["path"] == "/forwardauth/" and refresh["domain"] == "example.test"  # every host's (test_sso.py)
    first = expect(stack, http.get(original, BROWSER), 302, "the access cookie expired")
    renewed = expect(
        stack,
        http.get(first.headers["Location"], {**BROWSER, **http.cookie_header(forwardauth_refresh=refresh["value"])}),
        303,
        "renewal on the login page",
    )
    assert renewed.headers["Location"] == original
    cookies = http.set_cookies(renewed)
    assert cookies["forwardauth_refresh"]["value"] not in ("", refresh["value"])  # rotated
    access = http.cookie_header(forwardauth=cookies["forwardauth"]["value"])
    seen = upstream_saw(stack, http.get(original, {**API, **access}))
    assert identity(seen)["x-auth-user"] == user.username


def test_wrong_password_gives_no_session(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    original = stack.url + "/somewhere"
    response = http.post_form(
        login_url(stack), {"username": user.username, "password": "wrong", "rd": original}, BROWSER
    )
    assert response.status == 401
    assert not response.headers.get_all("Set-Cookie")
    [form] = http.forms(response.text)
    assert form.action == "/forwardauth/login" and form.inputs["rd"] == original


# --- 4 and 5. bearer tokens and revocation ---------------------------------------------------------


def test_bearer_token_passes_and_logout_revokes_it_at_once(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    token = bearer_token(stack, user)

    seen = upstream_saw(stack, http.get(stack.url + "/api/thing", bearer(token)))
    assert seen["headers"]["x-auth-user"] == user.username
    assert seen["headers"]["x-auth-subject"] == str(user.id)
    assert "authorization" in seen["headers"]  # the app may use the token itself

    logout = http.request("POST", stack.url + "/forwardauth/logout", bearer(token))
    assert expect(stack, logout, 200, "logout").json() == {"logged_out": True}

    denied = expect(stack, http.get(stack.url + "/api/thing", bearer(token)), 401, "revoked token")  # no waiting
    assert denied.headers.get_all("WWW-Authenticate") == ['Bearer error="invalid_token"']


def test_garbage_token_is_refused(stack: Stack) -> None:
    response = http.get(stack.url + "/api/thing", bearer("not.a.token"))
    assert response.status == 401
    assert response.headers.get_all("WWW-Authenticate") == ['Bearer error="invalid_token"']


# --- 6. spoofed identity headers ---------------------------------------------------------------------


def test_spoofed_identity_headers_never_reach_the_app(stack: Stack, make_user: MakeUser) -> None:
    user = make_user(email=None)
    token = bearer_token(stack, user)
    seen = upstream_saw(stack, http.get(stack.url + "/p", {**bearer(token), **SPOOF}))
    assert identity(seen) == {
        "x-auth-user": user.username,
        "x-auth-roles": "user",
        "x-auth-subject": str(user.id),
        "x-auth-amr": "pwd",
    }

    anonymous = expect(stack, http.get(stack.url + "/p", {**API, **SPOOF}), 401, "spoofed headers, no token")
    assert b'"headers"' not in anonymous.body  # the proxy's or forwardauth's answer, not the echo


@pytest.mark.parametrize("kind", ["traefik", "caddy"])
def test_x_auth_headers_forwardauth_does_not_set_are_stripped(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, kind: str
) -> None:
    """deploy/traefik and deploy/caddy promise to drop every client X-Auth-*, not just the four we set.

    deploy/nginx only overwrites the four names forwardauth sets, so it is not held to this.
    """
    stack = proxy_stack(kind)
    token = bearer_token(stack, make_user(email=None))
    seen = upstream_saw(
        stack,
        http.get(
            stack.url + "/p", {**bearer(token), **SPOOF, "X-Auth-Groups": "admins", "x-auth-email": "lower@evil.test"}
        ),
    )
    assert set(identity(seen)) == {"x-auth-user", "x-auth-roles", "x-auth-subject", "x-auth-amr"}, identity(seen)


UNDERSCORED = {
    "X_Auth_User": "root",
    "X_Auth_Roles": "admin",
    "X_Auth_Email": "spoof@evil.test",
    "X_Auth_Subject": "x",
    "X_Auth_AMR": "mfa",
}


@pytest.mark.parametrize(
    "kind",
    [
        "nginx",
        "traefik",
        "caddy",
    ],
)
def test_underscore_spellings_of_identity_headers_never_reach_the_app(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, kind: str
) -> None:
    """CGI, PHP, Django's META and Rack read X-Auth-User and X_Auth_User both as HTTP_X_AUTH_USER."""
    stack = proxy_stack(kind)
    user = make_user(email=None)
    seen = upstream_saw(stack, http.get(stack.url + "/p", {**bearer(bearer_token(stack, user)), **UNDERSCORED}))
    as_cgi = {k for k in seen["headers"] if k.replace("_", "-").startswith("x-auth-")}
    assert as_cgi == {"x-auth-user", "x-auth-roles", "x-auth-subject", "x-auth-amr"}, as_cgi
    assert seen["headers"]["x-auth-amr"] == "pwd"


AMR_SPELLINGS = {
    "X-Auth-AMR": "mfa",
    "x-auth-amr": "otp",
    "X.Auth.AMR": "hwk",
    "X_Auth_AMR": "swk",
    "x_auth.amr": "kba",
}


def amr_readings(seen: dict[str, Any]) -> list[str]:
    """Every value an application may read as X-Auth-AMR (PHP, CGI, WSGI, Rack: any of ``-._``)."""
    return [v for k, v in seen["headers"].items() if re.fullmatch(r"x[-._]auth[-._]amr", k)]


@pytest.mark.parametrize("kind", PROXIES)
def test_a_client_never_says_how_it_signed_in(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, tmp_path: Path, kind: str
) -> None:
    """X-Auth-AMR is forwardauth's alone: without a token (a bypassed path) the app reads none, with a
    password-only token it reads ``pwd``, whatever the client sent in whichever spelling."""
    stack = policy_stack(proxy_stack, tmp_path, kind)
    token = bearer_token(stack, make_user(email=None))
    for spoof in [{name: value} for name, value in AMR_SPELLINGS.items()] + [AMR_SPELLINGS]:
        public = upstream_saw(stack, http.get(stack.url + "/public/x", {**API, **spoof}))
        assert amr_readings(public) == [], f"{kind}, {spoof}: {public['headers']}"
        private = upstream_saw(stack, http.get(stack.url + "/elsewhere", {**bearer(token), **spoof}))
        assert amr_readings(private) == ["pwd"], f"{kind}, {spoof}: {private['headers']}"


STEP_UP_POLICY = "default: authenticated\nrules:\n  - path: /admin\n    policy: authenticated\n" + (
    "    second_factor: required\n    max_auth_age: 15m\n"
)


@pytest.mark.parametrize("kind", PROXIES)
def test_a_step_up_reaches_api_clients_as_a_challenge_and_browsers_as_the_login_page(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, tmp_path: Path, kind: str
) -> None:
    """A password-only sign-in under ``second_factor: required``: the RFC 9470 challenge passes the
    proxy unchanged to an API client; a browser is sent to the login page with ``rd``."""
    policy = tmp_path / "stepup.yml"
    policy.write_text(STEP_UP_POLICY)
    stack = proxy_stack(kind, {"FORWARDAUTH_POLICY_FILE": str(policy)})
    user = make_user()
    token = bearer_token(stack, user)
    assert amr_readings(upstream_saw(stack, http.get(stack.url + "/elsewhere", bearer(token)))) == ["pwd"]
    refused = expect(stack, http.get(stack.url + "/admin/x", bearer(token)), 401, "password only, API")
    challenge = StepUp(second_factor=True, max_age=900).challenge()
    assert refused.headers.get_all("WWW-Authenticate") == [challenge]
    assert 'acr_values="urn:forwardauth:acr:mfa"' in challenge and "max_age=900" in challenge
    assert b'"headers"' not in refused.body  # not the echo

    original = stack.url + "/admin/x?y=1"
    cookie = http.set_cookies(form_login(stack, user))["forwardauth"]["value"]
    sent = expect(stack, http.get(original, {**BROWSER, **http.cookie_header(forwardauth=cookie)}), 302, "browser")
    assert sent.headers["Location"] == f"{stack.url}/forwardauth/login?rd={quote(original, safe='')}"


# --- 7 and 9. bodies and methods ------------------------------------------------------------------------


def auth_location(conf: Path) -> str:
    """The body of nginx's ``location = /forwardauth/auth { ... }`` block in ``conf``."""
    match = re.search(r"location\s*=\s*/forwardauth/auth\s*\{([^}]*)\}", conf.read_text())
    assert match, f"no auth location in {conf}"
    return match.group(1)


def test_post_body_reaches_the_app_intact(stack: Stack, make_user: MakeUser, tmp_path: Path) -> None:
    user = make_user()
    body = b'{"hello": "world"}'
    response = http.request(
        "POST",
        stack.url + "/submit?n=1",
        {**bearer(bearer_token(stack, user)), "Content-Type": "application/json"},
        body,
    )
    seen = upstream_saw(stack, response)
    assert seen["method"] == "POST" and seen["path"] == "/submit?n=1"
    assert seen["body"] == body.decode()
    assert seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["x-auth-user"] == user.username  # so /auth was asked and said yes

    # The same POST without a token is stopped before the app.
    refused = http.request("POST", stack.url + "/submit", {**API, "Content-Type": "application/json"}, body)
    assert refused.status == 401

    if stack.kind == "nginx":  # the auth subrequest itself carries no body: shipped and as run
        for snippet in (DEPLOY / "nginx", tmp_path / "nginx" / "snippets"):
            block = auth_location(snippet / "forwardauth-locations.conf")
            assert "proxy_pass_request_body off;" in block, snippet
            assert 'proxy_set_header Content-Length "";' in block, snippet


def test_other_methods_pass_with_a_token(stack: Stack, make_user: MakeUser) -> None:
    token = bearer_token(stack, make_user())
    for method in ("DELETE", "PUT", "PATCH", "OPTIONS"):
        seen = upstream_saw(stack, http.request(method, stack.url + "/items/7", bearer(token)))
        assert seen["method"] == method and seen["path"] == "/items/7", seen
        expect(stack, http.request(method, stack.url + "/items/7", API), 401, f"{method} without a token")


# --- 8. open redirects --------------------------------------------------------------------------------


def test_off_site_rd_lands_on_the_default_page(stack: Stack, make_user: MakeUser) -> None:
    user = make_user()
    for rd in OFF_SITE:
        response = form_login(stack, user, rd=rd)
        assert expect(stack, response, 303, f"form login, rd={rd!r}").headers["Location"] == "/", rd
        page = http.get(login_url(stack) + "?rd=" + quote(rd, safe=""), BROWSER)
        assert page.status == 200
        assert http.forms(page.text)[0].inputs["rd"] == "", rd


# --- what the public may not reach ------------------------------------------------------------------


def test_metrics_are_not_served_to_the_public(stack: Stack) -> None:
    """Prometheus scrapes forwardauth directly; through the shipped configs /metrics is a 404
    (and never the protected app's: the browser sends the refresh cookie on /forwardauth/).
    So are /readyz (the orchestrator's) and the decision endpoints /auth and /auth/envoy/*
    (the proxy's alone); more spellings in tests/test_boundary.py."""
    for path in (
        "/forwardauth/metrics",
        "/forwardauth/metrics?x=1",
        "/forwardauth//metrics",
        "/forwardauth/readyz",
        "/forwardauth/auth",
        "/forwardauth/auth/envoy/private/x",
        "/forwardauth//auth/envoy/x",
    ):
        public = http.get(stack.url + path, API)
        assert public.status == 404, f"{stack.kind} {path}: {public.status}"
        assert "forwardauth_requests_total" not in public.text and '"checks"' not in public.text
        assert public.headers.get("WWW-Authenticate") is None  # not a decision of /auth
    assert "forwardauth_requests_total" in http.get(stack.service.base + "/metrics").text
    assert http.get(stack.url + "/forwardauth/healthz").status == 200  # what load balancers may ask


# --- request ids ------------------------------------------------------------------------------------


def test_nginx_names_the_auth_subrequest_in_forwardauths_logs(proxy_stack: Callable[..., Stack]) -> None:
    """The shipped snippet sends nginx's $request_id, so forwardauth's lines join nginx's own."""
    stack = proxy_stack("nginx", {"FORWARDAUTH_LOG_LEVEL": "DEBUG", "FORWARDAUTH_LOG_FORMAT": "json"})
    expect(stack, http.get(stack.url + "/private/x", {**API, "X-Request-Id": "chosen-by-client"}), 401, "no token")

    def auth_line() -> dict[str, Any] | None:
        for line in stack.service.log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("logger") == "forwardauth.access" and entry.get("path") == "/auth":
                return entry
        return None

    entry = wait_until(auth_line, 10, "the /auth access line")
    assert re.fullmatch(r"[0-9a-f]{32}", entry["request_id"]), entry  # nginx's, not the client's


# --- cross-site form posts ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROXIES)
def test_the_own_origin_is_the_proxys_public_one(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, kind: str
) -> None:
    """Neither the issuer nor the allowed domains name the stack's address here: a form post from
    its own page passes only because the proxy says (X-Forwarded-Host/-Proto) where the browser is."""
    stack = proxy_stack(
        kind,
        {
            "FORWARDAUTH_ISSUER": "https://auth.example.test",
            "FORWARDAUTH_ALLOWED_DOMAINS": "example.test",
            # host-only: a cookie for example.test would not reach 127.0.0.1 (test_sso.py)
            "FORWARDAUTH_COOKIE_DOMAIN": "",
        },
    )
    user = make_user()
    expect(stack, form_login(stack, user, headers={"Origin": stack.url}), 303, "form login from our own page")
    expect(stack, form_login(stack, user, headers={"Referer": login_url(stack)}), 303, "with a Referer only")
    for origin in ("https://evil.test", "null", stack.url.replace("http:", "https:")):
        refused = expect(stack, form_login(stack, user, headers={"Origin": origin}), 403, f"Origin {origin}")
        assert refused.headers.get("Set-Cookie") is None
    logout = http.request("POST", stack.url + "/forwardauth/logout", {"Origin": "https://evil.test"})
    expect(stack, logout, 403, "cross-site logout")


# --- access rules (policy file) ----------------------------------------------------------------------

POLICY = "default: authenticated\nrules:\n  - path: /admin\n    roles: [admin]\n  - path: /public\n    policy: bypass\n"


def policy_stack(proxy_stack: Callable[..., Stack], tmp_path: Path, kind: str) -> Stack:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return proxy_stack(kind, {"FORWARDAUTH_POLICY_FILE": str(policy)})


def test_role_restricted_path_through_nginx(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, tmp_path: Path
) -> None:
    stack = policy_stack(proxy_stack, tmp_path, "nginx")
    admin, ops = make_user(roles=("admin",)), make_user(roles=("ops",))
    as_ops, as_admin = bearer(bearer_token(stack, ops)), bearer(bearer_token(stack, admin))
    expect(stack, http.get(stack.url + "/admin/panel", as_ops), 403, "/admin/panel")
    for path in ("/public/../admin/panel", "/%61dmin/panel"):  # refused as ambiguous (400), or judged as /admin
        response = http.get(stack.url + path, as_ops)
        assert response.status in (400, 403), f"{path}: {response.status}\n{logs(stack)}"
    seen = upstream_saw(stack, http.get(stack.url + "/admin/panel", as_admin))
    assert seen["headers"]["x-auth-user"] == admin.username
    assert upstream_saw(stack, http.get(stack.url + "/elsewhere", as_ops))["path"] == "/elsewhere"
    public = upstream_saw(stack, http.get(stack.url + "/public/page", API))
    assert identity(public) == {}


@pytest.mark.parametrize(
    "kind",
    [
        "nginx",
        "traefik",
        "caddy",
    ],
)
def test_client_cannot_choose_the_request_that_is_authorised(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, tmp_path: Path, kind: str
) -> None:
    """Headers that describe the original request to /auth come from the proxy, never from the client."""
    stack = policy_stack(proxy_stack, tmp_path, kind)
    as_ops = bearer(bearer_token(stack, make_user(roles=("ops",))))
    assert identity(upstream_saw(stack, http.get(stack.url + "/public/x", API))) == {}  # the rules are in force
    expect(stack, http.get(stack.url + "/admin/panel", API), 401, "no token")
    for spoof in (
        {"X-Original-URI": "/public/x", "X-Original-Method": "GET"},
        {"X-Original-URL": stack.url + "/public/x"},
        {"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET"},
    ):
        expect(stack, http.get(stack.url + "/admin/panel", {**API, **spoof}), 401, f"no token, {spoof}")
        expect(stack, http.get(stack.url + "/admin/panel", {**as_ops, **spoof}), 403, f"role ops, {spoof}")
