"""``forwardauth doctor`` against real stacks (nginx from deploy/, the echo app, forwardauth), each
broken on purpose in one way, and its judgments (core.checkup) on their own.

The stacks are shared by the module: one echo upstream, a forwardauth per environment (healthy,
Secure cookies on plain HTTP, a proxy it does not trust) and an nginx per configuration (as
shipped, /metrics left public, identity headers with `_`/`.` let through). The protected host is
``app.example.test`` (``other.test`` for a host the cookie domain misses), reached with
``--connect 127.0.0.1:PORT`` as a stack not yet in DNS would be.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest

from forwardauth import config, doctor
from forwardauth.constants import IDENTITY_HEADERS
from forwardauth.core import checkup, setcookies
from forwardauth.core.checkup import Finding, Status
from forwardauth.core.passwords import Passwords
from forwardauth.dev import demo
from forwardauth.stores import users
from forwardauth.stores.postgres import Connection, Database

from .support import FAST_ARGON2, PASSWORD, REDIS_URL, Service, free_port, require_program, stop_process

HEALTHY, SECURE, UNTRUSTED = "healthy", "secure", "untrusted"
ENVIRONMENTS = {
    HEALTHY: {},
    SECURE: {"FORWARDAUTH_COOKIE_SECURE": "true"},
    UNTRUSTED: {"FORWARDAUTH_TRUSTED_PROXIES": "10.0.0.0/8"},
}


def expose_metrics(proxy: demo.Proxy) -> None:
    """The locations snippet without its `location = /forwardauth/metrics { return 404; }`."""
    snippet = proxy.workdir / "snippets" / "forwardauth-locations.conf"
    text = snippet.read_text()
    block = "location = /forwardauth/metrics {\n    return 404;\n}\n"
    assert block in text
    snippet.write_text(text.replace(block, ""))


def pass_odd_header_names(proxy: demo.Proxy) -> None:
    """The site passing X_Auth_User and X.Auth.User on, which PHP or WSGI read as X-Auth-User."""
    site = proxy.workdir / "site.conf"
    text = site.read_text()
    assert "underscores_in_headers off;" in text and "ignore_invalid_headers on;" in text
    site.write_text(
        text.replace("underscores_in_headers off;", "underscores_in_headers on;").replace(
            "ignore_invalid_headers on;", "ignore_invalid_headers off;"
        )
    )


EDITS: dict[str, Callable[[demo.Proxy], None]] = {"metrics": expose_metrics, "spoofable": pass_odd_header_names}


@dataclass
class Stacks:
    """Started on demand, once each; stopped together at the end of the module."""

    root: Path
    base_env: dict[str, str]
    upstream_port: int = 0
    services: dict[str, Service] = field(default_factory=dict)
    proxies: dict[tuple[str, str, str], int] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def service(self, variant: str) -> Service:
        if variant not in self.services:
            root = self.root / variant
            root.mkdir()
            env = {**self.base_env, "FORWARDAUTH_DATA_DIR": str(root / "data"), **ENVIRONMENTS[variant]}
            svc = Service(env, free_port(), cwd=root)
            self.services[variant] = svc
            svc.wait_ready()
        return self.services[variant]

    def proxy(self, variant: str = HEALTHY, edit: str = "", kind: str = "nginx") -> int:
        """The port of a ``kind`` proxy in front of forwardauth ``variant``, its config edited."""
        key = (variant, edit, kind)
        if key not in self.proxies:
            require_program(kind)
            if not self.upstream_port:
                self.upstream_port = free_port()
                self.processes.append(demo.start_upstream(self.upstream_port, self.root / "upstream"))
                demo.wait_for_http(f"http://127.0.0.1:{self.upstream_port}/", 20, self.processes[-1])
            svc, port = self.service(variant), free_port()
            workdir = self.root / f"{kind}-{variant}-{edit or 'shipped'}"
            proxy = demo.Proxy(kind, workdir, port, f"127.0.0.1:{svc.port}", f"127.0.0.1:{self.upstream_port}")
            proxy.configure()
            if edit:
                EDITS[edit](proxy)
            self.processes.append(proxy.launch())
            demo.wait_for_http(f"http://127.0.0.1:{port}/forwardauth/healthz", 30, self.processes[-1])
            self.proxies[key] = port
        return self.proxies[key]


@pytest.fixture(scope="module")
def stacks(database_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    base_env = {
        "FORWARDAUTH_DATABASE_URL": database_url,
        "FORWARDAUTH_REDIS_URL": REDIS_URL,
        "FORWARDAUTH_REDIS_PREFIX": redis_prefix,
        "FORWARDAUTH_ISSUER": "http://app.example.test/forwardauth",
        "FORWARDAUTH_LOGIN_URL": "/forwardauth/login",
        "FORWARDAUTH_ALLOWED_DOMAINS": "example.test,other.test",
        "FORWARDAUTH_COOKIE_DOMAIN": "example.test",
        "FORWARDAUTH_COOKIE_SECURE": "false",
        "FORWARDAUTH_LOG_LEVEL": "WARNING",
        "FORWARDAUTH_LOGIN_MAX_FAILURES": "100000",
        **FAST_ARGON2,
    }
    found = Stacks(tmp_path_factory.mktemp("doctor"), base_env)
    yield found
    for process in reversed(found.processes):
        stop_process(process)
    for svc in found.services.values():
        svc.stop()


@pytest.fixture(scope="module")
def user(database_url: str) -> str:
    settings = config.load(
        {"FORWARDAUTH_DATABASE_URL": database_url, "FORWARDAUTH_REDIS_URL": REDIS_URL, **FAST_ARGON2}
    )
    db = Database(database_url, 1)
    try:
        name = f"doctor-{secrets.token_hex(4)}"
        db.call(users.create, Passwords.from_settings(settings), name, PASSWORD, ("user",), None)
        return name
    finally:
        db.close()


def examine(port: int, host: str = "app.example.test", **options: Any) -> dict[str, Finding]:
    url = f"http://{host}:{port}/some/page?x=1"
    findings = doctor.examine(doctor.Options(url, **options), doctor.Client(("127.0.0.1", port)))
    assert [f.check for f in findings] == list(doctor.CHECKS)
    return {f.check: f for f in findings}


def statuses(found: dict[str, Finding]) -> dict[str, Status]:
    return {check: finding.status for check, finding in found.items()}


def problems(found: dict[str, Finding]) -> set[str]:
    return {check for check, finding in found.items() if finding.status is Status.PROBLEM}


# --- whole stacks -----------------------------------------------------------------------------------


def live_sessions(database_url: str, name: str) -> int:
    def count(conn: Connection) -> int:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM refresh_tokens r JOIN users u ON u.id = r.user_id "
                "WHERE u.username = %s AND r.revoked_at IS NULL",
                (name,),
            )
            return int(cur.fetchone()[0])

    db = Database(database_url, 1)
    try:
        return db.call(count)
    finally:
        db.close()


def test_a_healthy_stack_passes_every_check(stacks: Stacks, user: str, database_url: str) -> None:
    found = examine(stacks.proxy(), user=user, password=PASSWORD)
    assert statuses(found) == dict.fromkeys(doctor.CHECKS, Status.OK), found
    assert "Domain=example.test" in found["cookie-domain"].summary
    assert "access token" in found["clock"].summary
    assert live_sessions(database_url, user) == 0  # signed out again: no session left behind


def test_without_credentials_the_signed_in_checks_cannot_tell(stacks: Stacks) -> None:
    found = examine(stacks.proxy())
    assert not problems(found)
    for check in ("cookie-domain", "cookie-secure", "identity-headers"):
        assert found[check].status is Status.UNKNOWN, found[check]
    assert found["trusted-proxy"].status is found["metrics"].status is Status.OK


def test_a_cookie_domain_that_misses_the_host(stacks: Stacks, user: str) -> None:
    found = examine(stacks.proxy(), host="app.other.test", user=user, password=PASSWORD)
    assert problems(found) == {"cookie-domain"}, found
    finding = found["cookie-domain"]
    assert "Domain=example.test" in finding.summary and "app.other.test" in finding.summary
    assert "FORWARDAUTH_COOKIE_DOMAIN=other.test" in finding.fix


def test_secure_cookies_on_plain_http(stacks: Stacks, user: str) -> None:
    found = examine(stacks.proxy(SECURE), user=user, password=PASSWORD)
    assert problems(found) == {"cookie-secure"}, found
    assert "FORWARDAUTH_COOKIE_SECURE=false" in found["cookie-secure"].fix
    # On loopback browsers keep them: not a problem there (the login redirect drops rd instead).
    on_loopback = examine(stacks.proxy(SECURE), host="127.0.0.1", user=user, password=PASSWORD)
    assert on_loopback["cookie-secure"].status is Status.OK


def test_an_rd_host_not_allowed(stacks: Stacks, user: str) -> None:
    found = examine(stacks.proxy(), host="127.0.0.1", user=user, password=PASSWORD)
    assert found["login-redirect"].status is Status.PROBLEM
    assert "FORWARDAUTH_ALLOWED_DOMAINS" in found["login-redirect"].fix
    assert "127.0.0.1" in found["login-redirect"].fix


def test_metrics_left_public_by_the_proxy(stacks: Stacks) -> None:
    port = stacks.proxy(edit="metrics")
    found = examine(port)
    assert problems(found) == {"metrics"}, found
    assert f"app.example.test:{port}/forwardauth/metrics" in found["metrics"].summary
    assert "location = /forwardauth/metrics" in found["metrics"].fix  # nginx's line, as it said Server: nginx


def test_identity_headers_a_client_can_spoof(stacks: Stacks, user: str) -> None:
    found = examine(stacks.proxy(edit="spoofable"), user=user, password=PASSWORD)
    assert problems(found) == {"identity-headers"}, found
    finding = found["identity-headers"]
    through = finding.summary.split(": ")[1].split(", ")
    assert "X_Auth_User" in through and "X.Auth.User" in through and "X-Auth-User" not in through
    assert "underscores_in_headers off" in finding.fix


def test_the_spoofed_names_are_forwardauths_configured_ones(
    stacks: Stacks, user: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run with forwardauth's FORWARDAUTH_HEADERS_* (the Authelia preset here), the doctor probes
    those names: the stack rendered for X-Auth-* lets a client's Remote-User through, and it says
    so. Unset, it probes X-Auth-*; a bad name stops it, naming the variable."""
    assert doctor.identity_headers_of({"FORWARDAUTH_ISSUER": "not read"}) == IDENTITY_HEADERS
    parser = argparse.ArgumentParser()
    doctor.add_parser(parser.add_subparsers())
    port = stacks.proxy()
    url = f"http://app.example.test:{port}/some/page"
    args = parser.parse_args(["doctor", url, "--connect", f"127.0.0.1:{port}", "--json"])
    assert doctor.run(args, {"FORWARDAUTH_HEADERS_USER": "Bad Name"}) == 2
    assert "FORWARDAUTH_HEADERS_USER" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    signed_in = parser.parse_args(
        ["doctor", url, "--connect", f"127.0.0.1:{port}", "--user", user, "--password-stdin", "--json"]
    )
    assert doctor.run(signed_in, {"FORWARDAUTH_HEADERS_PRESET": "authelia"}) == 1
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert {k for k, c in checks.items() if c["status"] == "PROBLEM"} == {"identity-headers"}, checks
    through = checks["identity-headers"]["summary"].split(": ")[1].split(", ")
    assert "Remote-User" in through and not any(name.startswith("X") for name in through), through


def test_a_backend_that_shows_no_headers_cannot_tell(stacks: Stacks) -> None:
    port = stacks.proxy(edit="spoofable")
    found = examine(port, public="/forwardauth/healthz")  # a public page that echoes nothing
    assert found["identity-headers"].status is Status.UNKNOWN
    assert "does not show the request headers" in found["identity-headers"].summary


def test_a_proxy_forwardauth_does_not_trust(stacks: Stacks, user: str) -> None:
    found = examine(stacks.proxy(UNTRUSTED), user=user, password=PASSWORD)
    assert found["trusted-proxy"].status is Status.PROBLEM, found
    assert "FORWARDAUTH_TRUSTED_PROXIES" in found["trusted-proxy"].fix
    assert "X-Forwarded-Prefix" in found["trusted-proxy"].summary  # what nginx's 400 hides, the login page shows
    assert problems(found) == {"trusted-proxy"}, found  # the rest cannot be told, not failed


def test_through_traefik_forwardauths_own_refusal_is_quoted(stacks: Stacks) -> None:
    found = examine(stacks.proxy(UNTRUSTED, kind="traefik"))
    assert found["trusted-proxy"].status is Status.PROBLEM
    assert "not in FORWARDAUTH_TRUSTED_PROXIES" in found["trusted-proxy"].summary
    healthy = examine(stacks.proxy(kind="traefik"))
    assert not problems(healthy), healthy


def test_the_command_exit_status_json_and_no_secret_printed(stacks: Stacks, user: str) -> None:
    def run(
        port: int, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        url = f"http://app.example.test:{port}/"
        command = [sys.executable, "-m", "forwardauth", "doctor", url, "--connect", f"127.0.0.1:{port}", *args]
        return subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
        )

    healthy = stacks.proxy()
    svc = stacks.service(HEALTHY)
    result = run(
        healthy, "--user", user, "--password-stdin", "--json", "--forwardauth", svc.base, stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["problems"] == 0
    assert {c["check"]: c["status"] for c in report["checks"]} == dict.fromkeys(doctor.CHECKS, "OK")
    assert "forwardauth's Date" in next(c["summary"] for c in report["checks"] if c["check"] == "clock")
    assert PASSWORD not in result.stdout + result.stderr

    broken = run(stacks.proxy(edit="metrics"))
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert len(lines) == len(doctor.CHECKS)
    assert any(line.startswith("PROBLEM      metrics:") and "Fix:" in line for line in lines), lines

    token = "eyJhbGciOiJub25lIn0." + base64.urlsafe_b64encode(b'{"iat": 1}').decode().rstrip("=") + ".x"
    with_token = run(healthy, env={doctor.TOKEN_VARIABLE: token})
    assert token not in with_token.stdout + with_token.stderr
    assert with_token.returncode == 0, with_token.stdout  # a token refused by forwardauth: cannot tell

    unreachable = run(free_port())
    assert unreachable.returncode == 2 and unreachable.stdout == ""
    assert unreachable.stderr.startswith("forwardauth: doctor: ") and len(unreachable.stderr.splitlines()) == 1


# --- judgments (pure) -------------------------------------------------------------------------------


def url(text: str) -> SplitResult:
    return urlsplit(text)


def test_set_cookie_is_read_as_browsers_do() -> None:
    cookie = setcookies.parse_set_cookie("fa=abc; Domain=.Example.TEST; Path=/; Secure; HttpOnly", "/forwardauth/login")
    assert cookie == setcookies.SetCookie("fa", "abc", "example.test", "/", True, False)
    cleared = setcookies.parse_set_cookie('fa=""; Max-Age=0; Path=/forwardauth/', "/forwardauth/login")
    assert cleared is not None and cleared.cleared
    default = setcookies.parse_set_cookie("x=1", "/forwardauth/login")
    assert default is not None and default.path == "/forwardauth" and default.domain is None
    assert setcookies.parse_set_cookie("no equals sign", "/") is None
    assert setcookies.path_matches("/forwardauth/", "/forwardauth/login")
    assert not setcookies.path_matches("/forwardauth", "/forwardauthx")


def test_the_login_form_is_found_with_its_hidden_fields() -> None:
    page = (
        '<form action="/forwardauth/logout" method="post"><button>Sign out</button></form>'
        '<form method="post" action="/forwardauth/login"><input type="hidden" name="rd" '
        'value="http://a.example.test/x?a=1&amp;b=2"><input name="username">'
        '<input id="password" name="password" type="password"></form>'
    )
    form = checkup.login_form(page)
    assert form is not None and form.action == "/forwardauth/login"
    assert form.hidden == [("rd", "http://a.example.test/x?a=1&b=2")]
    assert checkup.login_form("<form action=/x><input name=q></form>") is None


def test_a_host_only_cookie_from_a_login_host_misses_the_app() -> None:
    cookies = [setcookies.SetCookie("fa", "t", None, "/", True, False)]
    found = setcookies.judge_cookie_domain(
        cookies, url("https://auth.example.com/login"), url("https://app.example.com/")
    )
    assert found.status is Status.PROBLEM
    assert "FORWARDAUTH_COOKIE_DOMAIN=example.com" in found.fix
    refused = [setcookies.SetCookie("fa", "t", "other.com", "/", True, False)]
    found = setcookies.judge_cookie_domain(
        refused, url("https://auth.example.com/login"), url("https://auth.example.com/")
    )
    assert found.status is Status.PROBLEM and "browsers refuse them" in found.summary
    on_ip = setcookies.judge_cookie_domain(refused, url("http://10.1.2.3/login"), url("http://10.1.2.3/"))
    assert "unset" in on_ip.fix


def test_cookies_without_secure_on_https() -> None:
    cookies = [setcookies.SetCookie("fa", "t", None, "/", False, False)]
    found = setcookies.judge_cookie_secure(cookies, url("https://a.example.com/login"), url("https://a.example.com/"))
    assert found.status is Status.PROBLEM and "FORWARDAUTH_COOKIE_SECURE=true" in found.fix


def test_clock_skew_from_a_token_iat() -> None:
    now = time.time()
    payload = base64.urlsafe_b64encode(json.dumps({"iat": int(now) + 120}).encode()).decode().rstrip("=")
    iat = checkup.issued_at(f"h.{payload}.s")
    assert iat == int(now) + 120
    assert checkup.offset(iat, now - 0.2, now + 0.2) > 100
    assert checkup.offset(int(now), now, now + 0.5) == 0  # a whole second taken within the window
    found = checkup.judge_clock([("the new access token's iat", checkup.offset(iat, now, now))])
    assert found.status is Status.PROBLEM and "ahead of" in found.summary and "FORWARDAUTH_LEEWAY" in found.fix
    assert checkup.judge_clock([]).status is Status.UNKNOWN
    assert checkup.issued_at("not.a.jwt!") is None and checkup.issued_at("abc") is None


def test_spoofing_needs_an_echo_to_tell() -> None:
    sent = checkup.spoofed_headers(["X-Auth-User"], "n")
    assert [name for name, _ in sent] == ["X-Auth-User", "X.Auth.User", "X_Auth_User"]
    assert checkup.judge_spoofing(200, "<h1>Hello</h1>", "m4rk", sent, None).status is Status.UNKNOWN
    echoed = json.dumps({"headers": {"X-Forwardauth-Doctor": "m4rk", "X-Auth-User": "alice"}})
    assert checkup.judge_spoofing(200, echoed, "m4rk", sent, None).status is Status.OK
    leaked = json.dumps({"headers": {"X-Forwardauth-Doctor": "m4rk", "X.Auth.User": sent[1][1]}})
    found = checkup.judge_spoofing(200, leaked, "m4rk", sent, None)
    assert found.status is Status.PROBLEM and "X.Auth.User" in found.summary
    assert "nginx:" in found.fix and "traefik:" in found.fix  # the proxy unknown: each one's line
    assert checkup.judge_spoofing(302, leaked, "m4rk", sent, "nginx").status is Status.UNKNOWN


def test_trust_and_redirect_judgments() -> None:
    nginx_400 = checkup.judge_trust(400, "bad request: ambiguous path or host\n", None, None)
    assert nginx_400.status is Status.PROBLEM and "FORWARDAUTH_TRUSTED_PROXIES" in nginx_400.fix
    assert checkup.judge_trust(404, "not found", None, None).status is Status.UNKNOWN
    assert checkup.judge_trust(302, "", "/forwardauth/login", "/forwardauth/login").status is Status.OK
    assert checkup.judge_trust(302, "", "/login", "/login").status is Status.OK  # a login host of its own
    target = url("https://app.example.com/x")
    assert checkup.judge_redirect(401, False, target, None, False).status is Status.PROBLEM
    wrong_scheme = checkup.judge_redirect(302, True, target, url("http://app.example.com/x"), False)
    assert wrong_scheme.status is Status.PROBLEM and "X-Forwarded-Proto" in wrong_scheme.fix
    dropped = checkup.judge_redirect(302, True, target, target, None)
    assert dropped.status is Status.PROBLEM and "login page drops rd" in dropped.summary


def test_the_report_escapes_what_came_from_the_network() -> None:
    findings = [Finding("trusted-proxy", Status.PROBLEM, "refused: \x1b]0;owned\x07\nOK  forged", "fix it")]
    text = doctor.render("http://x/", findings, as_json=False)
    assert "\x1b" not in text and "\n" not in text and "\\x1b" in text
    document = doctor.render("http://x/", [Finding("clock", Status.UNKNOWN, "a\u202eb")], as_json=True)
    assert "\u202e" not in document and json.loads(document)["checks"][0]["summary"] == "a\u202eb"
    assert json.loads(document)["checks"][0]["status"] == "CANNOT TELL"
