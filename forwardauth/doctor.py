"""``forwardauth doctor URL``: probe a protected URL through its proxy, as a browser and as an
attacker would, and report what is wrong with the setup, each finding with its fix.

It asks only what anyone can ask from outside (plus a sign-in, with ``--user`` or a token in
``FORWARDAUTH_DOCTOR_TOKEN``): the login redirect and its ``rd``, the cookies of a sign-in, the
metrics page, spoofed identity headers, the clocks. The verdicts are judged in core (checkup, setcookies); this
module makes the requests (http.client: no redirect is followed, ``Host`` is the URL's even when
``--connect`` sends the request elsewhere). The password and the token are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import http.client
import json
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from forwardauth import config
from forwardauth.constants import IDENTITY_HEADERS
from forwardauth.core import checkup, setcookies
from forwardauth.core.checkup import Finding, Form, Status
from forwardauth.core.setcookies import SetCookie
from forwardauth.safetext import escape, escape_json

TOKEN_VARIABLE = "FORWARDAUTH_DOCTOR_TOKEN"  # noqa: S105 (a variable name)
DEFAULT_LOGIN = "/forwardauth/login"  # where the shipped snippets serve it, when no redirect says
BROWSER = (("Accept", "text/html,application/xhtml+xml"), ("User-Agent", "forwardauth-doctor"))
MAX_BODY = 256 * 1024
MARKER = "X-Forwardauth-Doctor"  # a harmless header: seen in the answer, the backend echoes headers
CHECKS = ("trusted-proxy", "login-redirect", "cookie-domain", "cookie-secure", "metrics", "identity-headers", "clock")


class Unreachable(Exception):
    """A request got no HTTP answer (refused, timed out, TLS failed)."""


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: str
    before: float  # this machine's clock when the request went, and when the answer came
    after: float

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        found = self.all(name)
        return found[0] if found else None


class _HTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, address: tuple[str, int] | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self.address or (self.host, self.port), self.timeout)


class _HTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, address: tuple[str, int] | None, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection(self.address or (self.host, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


@dataclass
class Client:
    """One request per connection; ``connect``: the address every request goes to instead."""

    connect: tuple[str, int] | None = None
    timeout: float = 10.0

    def send(self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes | None = None) -> Answer:
        parts = urlsplit(url)
        kind = _HTTPS if parts.scheme == "https" else _HTTP
        connection = kind(parts.hostname or "", parts.port, self.connect, self.timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        before = time.time()
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read(MAX_BODY)
            return Answer(
                url, response.status, response.getheaders(), data.decode("utf-8", "replace"), before, time.time()
            )
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{url}: {exc or type(exc).__name__}") from None
        finally:
            connection.close()


@dataclass
class Options:
    url: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    forwardauth: str | None = None
    public: str | None = None
    identity_headers: tuple[str, ...] = IDENTITY_HEADERS


@dataclass
class SignIn:
    """What a sign-in through the login form gave: its cookies, or why there are none."""

    set_on: str
    cookies: list[SetCookie]
    answer: Answer | None
    failure: str = ""


def _sign_in(client: Client, page: Answer, form: Form, user: str, password: str) -> SignIn:
    action = urljoin(page.url, form.action)
    fields = [*form.hidden, ("username", user), ("password", password)]
    headers = [*BROWSER, ("Content-Type", "application/x-www-form-urlencoded")]
    answer = client.send("POST", action, headers, urlencode(fields).encode())
    path = urlsplit(action).path or "/"
    cookies = [c for line in answer.all("Set-Cookie") if (c := setcookies.parse_set_cookie(line, path)) is not None]
    if answer.status in (302, 303) and any(not c.cleared for c in cookies):
        return SignIn(action, cookies, answer)
    why = {401: " (wrong username or password?)", 429: " (throttled)", 200: " (a second factor? use a token)"}
    return SignIn(action, [], None, f"the sign-in answered {answer.status}{why.get(answer.status, '')}")


def _rd_of(location: str) -> str | None:
    return next((value for key, value in parse_qsl(urlsplit(location).query) if key == "rd"), None)


def _date_offset(answer: Answer) -> float | None:
    date = answer.get("Date")
    try:
        return checkup.offset(parsedate_to_datetime(date).timestamp(), answer.before, answer.after) if date else None
    except (TypeError, ValueError):
        return None


def examine(options: Options, client: Client) -> list[Finding]:
    """Every check on ``options.url``, in CHECKS order. Raises Unreachable when the URL is."""
    target = urlsplit(options.url)
    origin = f"{target.scheme}://{target.netloc}"
    first = client.send("GET", options.url, BROWSER)
    kind = checkup.proxy_kind(first.all("Server"))
    location = first.get("Location") if 300 <= first.status < 400 else None
    login_url = urljoin(options.url, location) if location else origin + DEFAULT_LOGIN
    try:
        page: Answer | None = client.send("GET", login_url, BROWSER)
    except Unreachable:
        page = None
    form = checkup.login_form(page.body) if page is not None and page.status == 200 else None
    found: dict[str, Finding] = {}

    login = urlsplit(login_url)
    action = urlsplit(urljoin(login_url, form.action)) if form else None
    own_action = action.path if action and action.netloc == login.netloc else None
    found["trusted-proxy"] = checkup.judge_trust(first.status, first.body, login.path if form else None, own_action)

    rd = _rd_of(location) if location else None
    form_rd = dict(form.hidden).get("rd") if form and location else None
    found["login-redirect"] = checkup.judge_redirect(
        first.status,
        location is not None,
        target,
        urlsplit(rd) if rd else None,
        (urlsplit(form_rd) if form_rd else None) if form else False,
    )

    signed: SignIn | None = None
    if options.user and options.password is not None and page is not None and form is not None:
        signed = _sign_in(client, page, form, options.user, options.password)
    for check, judge in (
        ("cookie-domain", setcookies.judge_cookie_domain),
        ("cookie-secure", setcookies.judge_cookie_secure),
    ):
        if signed is not None and signed.answer is not None:
            found[check] = judge(signed.cookies, urlsplit(signed.set_on), target)
        elif signed is not None:
            found[check] = checkup.unknown(check, signed.failure)
        elif options.user and form is None:
            found[check] = checkup.unknown(check, f"no login form at {login_url[:200]} to sign in with")
        else:
            found[check] = checkup.unknown(check, "sign in to tell: give --user (a token has no cookies)")

    tried, exposed = _metrics(client, origin, login_url if form else None)
    found["metrics"] = checkup.judge_metrics(tried, exposed, kind)

    credentials: list[tuple[str, str]] = []
    if signed is not None and signed.answer is not None:
        credentials.append(("Cookie", _jar(signed, target.path or "/")))
    elif options.token:
        credentials.append(("Authorization", f"Bearer {options.token}"))
    found["identity-headers"] = _spoofing(client, options, first, credentials, kind)
    found["clock"] = _clock(options, first, signed)
    if signed is not None and signed.answer is not None:  # leave no session behind
        logout = signed.set_on.split("?", 1)[0].rsplit("/", 1)[0] + "/logout"
        with contextlib.suppress(Unreachable):
            client.send(
                "POST", logout, [("Accept", "application/json"), ("Cookie", _jar(signed, urlsplit(logout).path))]
            )
    return [found[check] for check in CHECKS]


def _jar(signed: SignIn, path: str) -> str:
    """The Cookie header a browser would send to ``path`` (whatever the domain: judged apart)."""
    kept = [c for c in signed.cookies if not c.cleared and setcookies.path_matches(c.path, path)]
    return "; ".join(f"{c.name}={c.value}" for c in kept)


def _metrics(client: Client, origin: str, login_url: str | None) -> tuple[list[str], list[str]]:
    """forwardauth's metrics page under its folder on this origin (and the login page's), spelled
    as a client may spell it."""
    bases = {origin + DEFAULT_LOGIN.rsplit("/", 1)[0], origin}
    if login_url:
        bases.add(login_url.split("?", 1)[0].rsplit("/", 1)[0])
    tried, exposed = [], []
    for base in sorted(bases):
        for spelling in ("metrics", "%6detrics"):
            url = f"{base}/{spelling}"
            tried.append(url)
            try:
                answer = client.send("GET", url, [("Accept", "text/plain")])
            except Unreachable:
                continue
            if checkup.looks_like_metrics(answer.status, answer.body):
                exposed.append(url)
    return tried, exposed


def _spoofing(
    client: Client, options: Options, first: Answer, credentials: list[tuple[str, str]], kind: str | None
) -> Finding:
    check = "identity-headers"
    url = options.url
    if options.public:
        url = urljoin(options.url, options.public)
    elif not credentials and not 200 <= first.status < 300:
        return checkup.unknown(
            check, "needs a request the backend answers: give --user, FORWARDAUTH_DOCTOR_TOKEN or --public PATH"
        )
    marker, sent = secrets.token_hex(8), checkup.spoofed_headers(options.identity_headers, secrets.token_hex(4))
    headers = [("Accept", "application/json"), (MARKER, marker), *credentials, *sent]
    answer = client.send("GET", url, headers)
    return checkup.judge_spoofing(answer.status, answer.body, marker, sent, kind)


def _clock(options: Options, first: Answer, signed: SignIn | None) -> Finding:
    samples, note = [], ""
    if (skew := _date_offset(first)) is not None:
        samples.append(("the Date of the protected URL's answer", skew))
    if options.forwardauth:
        try:
            direct = Client().send("GET", options.forwardauth.rstrip("/") + "/healthz")
            if (skew := _date_offset(direct)) is not None:
                samples.append(("forwardauth's Date", skew))
        except Unreachable as exc:
            note = f" (--forwardauth did not answer: {exc})"
    if signed is not None and signed.answer is not None:
        for cookie in signed.cookies:
            if (iat := checkup.issued_at(cookie.value)) is not None:
                samples.append(
                    ("the new access token's iat", checkup.offset(iat, signed.answer.before, signed.answer.after))
                )
                break
    if options.token and (iat := checkup.issued_at(options.token)) is not None and iat > time.time():
        samples.append((f"{TOKEN_VARIABLE}'s iat", iat - time.time()))  # older tokens only tell of a clock ahead
    return checkup.judge_clock(samples, note)


# --- the command --------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """``doctor URL [options]`` under the top-level parser."""
    command: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="probe a protected URL through its proxy and report setup problems with their fixes"
    )
    command.add_argument("url", help="a protected URL, as browsers open it")
    command.add_argument("--user", help="sign in as this user (password from a prompt or --password-stdin)")
    command.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    command.add_argument(
        "--forwardauth", metavar="URL", help="forwardauth itself (http://127.0.0.1:8080), for its clock"
    )
    command.add_argument("--connect", metavar="HOST:PORT", help="send every request there (a stack not in DNS yet)")
    command.add_argument("--public", metavar="PATH", help="a path that needs no sign-in, for the spoofing check")
    command.add_argument(
        "--identity-header",
        action="append",
        metavar="NAME",
        help="an identity header to spoof (default: forwardauth's, from FORWARDAUTH_HEADERS_* here, else X-Auth-*)",
    )
    command.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    command.add_argument("--timeout", type=float, default=10.0, help="seconds per request (10)")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--connect {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _password(args: argparse.Namespace) -> str | None:
    if not args.user:
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password: pipe it in with --password-stdin")
    try:
        return getpass.getpass(f"Password for {args.user}: ")
    except EOFError:
        raise ValueError("no password given") from None


def identity_headers_of(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The identity headers forwardauth answers with, read from the ``FORWARDAUTH_HEADERS_*`` in
    ``environ`` as ``serve`` reads them (the doctor run with forwardauth's settings probes renamed
    headers, not X-Auth-*); a bad value is a ``ValueError`` naming the variable."""
    prefix = config.PREFIX + "HEADERS_"
    return config.load({k: v for k, v in environ.items() if k.startswith(prefix)}).header_names.all


def render(url: str, findings: Sequence[Finding], as_json: bool) -> str:
    """The report: a line per check (network text escaped), or one JSON document."""
    if as_json:
        problems = sum(f.status is Status.PROBLEM for f in findings)
        document = {
            "url": url,
            "problems": problems,
            "checks": [
                {"check": f.check, "status": f.status.value, "summary": f.summary, "fix": f.fix or None}
                for f in findings
            ],
        }
        return escape_json(json.dumps(document, ensure_ascii=False))
    width = max(len(status.value) for status in Status)
    lines = [
        escape(f"{f.status.value.ljust(width)}  {f.check}: {f.summary}" + (f". Fix: {f.fix}" if f.fix else ""))
        for f in findings
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``doctor``: 0 when nothing is wrong, 1 with a PROBLEM, 2 when it could not ask."""
    parts = urlsplit(args.url)
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{args.url!r} is not an http(s) URL")
        connect = _address(args.connect) if args.connect else None
        options = Options(
            args.url,
            user=args.user,
            password=_password(args),
            token=environ.get(TOKEN_VARIABLE) or None,
            forwardauth=args.forwardauth,
            public=args.public,
            identity_headers=tuple(args.identity_header or identity_headers_of(environ)),
        )
        findings = examine(options, Client(connect, args.timeout))
    except (ValueError, Unreachable) as exc:
        print(f"forwardauth: doctor: {escape(str(exc))}", file=sys.stderr)
        return 2
    print(render(args.url, findings, args.json))
    return 1 if any(f.status is Status.PROBLEM for f in findings) else 0
