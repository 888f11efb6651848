"""``forwardauth doctor``'s judgments: what the answers of a stack say about its setup. Pure.

The doctor (forwardauth/doctor.py) makes the requests; everything it concludes from the answers
(redirects, the login form, echoed headers, clocks, a metrics page; cookies in setcookies) is
judged here, so each verdict is tested without a network. A verdict is OK, PROBLEM (with the
fix, naming the ``FORWARDAUTH_*`` variable or the proxy's config line) or CANNOT TELL: the doctor
never guesses a pass.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from html.parser import HTMLParser
from urllib.parse import SplitResult

SKEW_SECONDS = 5  # FORWARDAUTH_LEEWAY's default: a token from a clock further off fails elsewhere


class Status(Enum):
    OK = "OK"
    PROBLEM = "PROBLEM"
    UNKNOWN = "CANNOT TELL"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    summary: str
    fix: str = ""


def ok(check: str, summary: str) -> Finding:
    return Finding(check, Status.OK, summary)


def problem(check: str, summary: str, fix: str) -> Finding:
    return Finding(check, Status.PROBLEM, summary, fix)


def unknown(check: str, summary: str) -> Finding:
    return Finding(check, Status.UNKNOWN, summary)


# --- the login form ------------------------------------------------------------------------------


@dataclass
class Form:
    """A form of a page: where it posts, its hidden fields, whether it asks for a password."""

    action: str
    hidden: list[tuple[str, str]] = field(default_factory=list)
    password: bool = False


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", "")))
        elif tag == "input" and self.forms:
            kind = values.get("type", "").lower()
            if kind == "password":
                self.forms[-1].password = True
            elif kind == "hidden" and values.get("name"):
                self.forms[-1].hidden.append((values["name"], values.get("value", "")))


def login_form(page: str) -> Form | None:
    """The page's form with a password field, if any."""
    parser = _Forms()
    parser.feed(page)
    return next((form for form in parser.forms if form.password), None)


# --- which proxy, and its config lines -------------------------------------------------------------


def proxy_kind(server_headers: Sequence[str]) -> str | None:
    """nginx or Caddy by the ``Server`` header of answers they made themselves; Traefik sets none."""
    for server in server_headers:
        if server.lower().startswith("nginx"):
            return "nginx"
        if server.lower().startswith("caddy"):
            return "caddy"
    return None


def for_proxy(kind: str | None, lines: dict[str, str]) -> str:
    """The config line of this proxy, or of each shipped proxy when it is not known."""
    if kind in lines:
        return lines[kind]
    return "; ".join(f"{name}: {line}" for name, line in lines.items())


METRICS_LINES = {
    "nginx": "keep `location = /forwardauth/metrics { return 404; }` (deploy/nginx/forwardauth-locations.conf; "
    "`location = /metrics` on a login host, example-login-host.conf)",
    "traefik": "keep the forwardauth-not-public middleware on the forwardauth router (deploy/traefik/dynamic.yml)",
    "caddy": "keep `@not_public path /forwardauth/metrics ...` with `respond 404` (deploy/caddy/Caddyfile)",
}
IDENTITY_LINES = {
    "nginx": "`proxy_set_header` for every identity header (deploy/nginx/forwardauth-protect.conf) and "
    "`underscores_in_headers off; ignore_invalid_headers on;` in the server block (example-site.conf)",
    "traefik": '`authResponseHeaders` and `authResponseHeadersRegex: "(?i)^x[^a-z0-9]auth[^a-z0-9]"` on the '
    "forwardAuth middleware (deploy/traefik/dynamic.yml)",
    "caddy": "the `request_header -X-Auth-*` lines, in every spelling, before forward_auth (deploy/caddy/Caddyfile)",
}


# --- the login redirect and rd -------------------------------------------------------------------


def _same_url(a: SplitResult, b: SplitResult) -> bool:
    return (a.scheme.lower(), (a.hostname or ""), a.port, a.path or "/") == (
        b.scheme.lower(),
        (b.hostname or ""),
        b.port,
        b.path or "/",
    )


RD_FIX = "add {host} (or a domain above it) to FORWARDAUTH_ALLOWED_DOMAINS"


def judge_redirect(
    status: int, redirected: bool, target: SplitResult, rd: SplitResult | None, kept: SplitResult | bool | None
) -> Finding:
    """A browser's first answer (``status``; ``redirected``: with a Location), the login redirect's
    ``rd`` (None: there is none) and what the login page did with it (``kept``: the form's rd;
    False: no login form was read)."""
    check, host = "login-redirect", target.hostname or ""
    if 200 <= status < 300:
        return unknown(check, f"the URL answered {status} without a sign-in (a public path?): no login redirect")
    if status == 401 and not redirected:
        return problem(
            check,
            "a browser is answered 401 instead of being sent to the login page",
            "check FORWARDAUTH_LOGIN_URL, and that the proxy passes forwardauth's Location on (nginx: "
            "`auth_request_set $forwardauth_location $upstream_http_location;` and `error_page 401 = "
            "@forwardauth_login;`, forwardauth-protect.conf)",
        )
    if not redirected:
        return unknown(check, f"the URL answered {status}: no login redirect to judge")
    if rd is None:
        return problem(
            check,
            f"the login redirect carries no rd: after signing in, browsers are not sent back to {host}",
            RD_FIX.format(host=host),
        )
    if not _same_url(rd, target):
        return problem(
            check,
            f"the login redirect's rd is {rd.geturl()[:200]}, not the URL asked for: the proxy describes the request "
            "wrongly (scheme, host or path)",
            "the proxy must pass the URL as the browser sent it: X-Original-URL $scheme://$http_host$request_uri "
            "(nginx) or X-Forwarded-Proto/-Host/-Uri (Traefik, Caddy)",
        )
    if kept is None:
        return problem(
            check,
            f"the login page drops rd: after signing in, browsers are not sent back to {host}",
            RD_FIX.format(host=host) + " (of the forwardauth serving the login page)",
        )
    if kept is False:
        return ok(check, f"browsers are sent to sign in with the way back to {host} (no login form read)")
    return ok(check, f"browsers are sent to sign in and back to {host}")


# --- forwardauth behind the proxy -------------------------------------------------------------------

TRUSTED_FIX = (
    "add the proxy's address (as forwardauth sees it) to FORWARDAUTH_TRUSTED_PROXIES (default 127.0.0.0/8,::1/128)"
)


def judge_trust(status: int, body: str, login_path: str | None, form_action: str | None) -> Finding:
    """The protected URL's answer (``status``, ``body``) and the login form's action as the login
    page at ``login_path`` wrote it: a proxy forwardauth does not trust is refused (400), and its
    X-Forwarded-Prefix ignored (the form posts outside forwardauth's folder)."""
    check = "trusted-proxy"
    if "FORWARDAUTH_TRUSTED_PROXIES" in body:
        return problem(check, f"forwardauth refused the proxy's request: {_description(body)[:300]}", TRUSTED_FIX)
    folder = login_path.rsplit("/", 1)[0] if login_path else ""
    if folder and form_action is not None and not form_action.startswith(folder + "/"):
        refused = f"the protected URL answers {status}, and " if status == 400 else ""
        return problem(
            check,
            f"{refused}the login page at {login_path} posts its form to {form_action[:100]}: forwardauth did not "
            "believe the proxy's X-Forwarded-Prefix",
            TRUSTED_FIX + ", and have the proxy send X-Forwarded-Prefix " + folder,
        )
    if status == 400:
        return problem(
            check,
            f"the protected URL answers 400 ({body.strip()[:120]}): forwardauth refused the proxy's description "
            "of the request (its log says why: 'refused (400)')",
            TRUSTED_FIX + "; the proxy must replace the client's X-Original-*/X-Forwarded-* headers, not add to them",
        )
    if status in (500, 502, 503, 504):
        return problem(
            check,
            f"the protected URL answers {status}: the proxy could not get a decision from forwardauth",
            "check that the proxy reaches forwardauth (its upstream address) and forwardauth's /readyz",
        )
    if 200 <= status < 400 or status in (401, 403):
        return ok(check, f"forwardauth judges the proxy's requests (answer {status})")
    return unknown(check, f"the protected URL answers {status}: not forwardauth's decision")


def _description(body: str) -> str:
    """forwardauth's JSON error, as its ``error_description``; any other body as it is."""
    try:
        document = json.loads(body)
    except ValueError:
        return body.strip()
    described = document.get("error_description") if isinstance(document, dict) else None
    return described if isinstance(described, str) else body.strip()


def looks_like_metrics(status: int, body: str) -> bool:
    """forwardauth's Prometheus page: a 200 with its metric families."""
    return status == 200 and "forwardauth_" in body and ("# TYPE" in body or "# HELP" in body)


def judge_metrics(tried: Sequence[str], exposed: Sequence[str], kind: str | None) -> Finding:
    check = "metrics"
    if exposed:
        return problem(
            check,
            f"forwardauth's metrics are public: {', '.join(exposed[:3])}",
            "refuse them at the proxy (Prometheus reaches forwardauth directly): " + for_proxy(kind, METRICS_LINES),
        )
    return ok(check, f"not reachable from outside ({len(tried)} URL(s) tried)")


# --- identity headers a client can spoof ------------------------------------------------------------


def spellings(name: str) -> tuple[str, ...]:
    """``X-Auth-User`` and the names applications read as it (PHP, CGI, WSGI, Rack)."""
    return tuple(dict.fromkeys((name, name.replace("-", "."), name.replace("-", "_"))))


def spoofed_headers(names: Sequence[str], nonce: str) -> list[tuple[str, str]]:
    """Every spelling of every identity header, each with a value of its own to look for."""
    sent = [spelled for name in names for spelled in spellings(name)]
    return [(spelled, f"spoofed-{nonce}-{number}") for number, spelled in enumerate(sent)]


ECHO_NOTE = "only a backend that shows the request headers it received tells (the demo app of `forwardauth demo` does)"


def judge_spoofing(status: int, body: str, marker: str, sent: Sequence[tuple[str, str]], kind: str | None) -> Finding:
    """What the backend showed of a request carrying ``marker`` (a harmless header's value) and
    the ``sent`` spoofed identity headers."""
    check = "identity-headers"
    if not 200 <= status < 300:
        return unknown(check, f"the backend answered {status}, not what it received")
    if marker not in body:
        return unknown(check, f"the backend does not show the request headers it received: {ECHO_NOTE}")
    through = [name for name, value in sent if value in body]
    if through:
        return problem(
            check,
            f"headers a client sent reached the backend: {', '.join(through[:6])}: anyone can pass for any user "
            "with an application that reads them",
            "the proxy must remove or replace every identity header the client sends: "
            + for_proxy(kind, IDENTITY_LINES),
        )
    return ok(check, f"none of the {len(sent)} spoofed identity headers reached the backend")


# --- clocks -----------------------------------------------------------------------------------------


def issued_at(token: str) -> int | None:
    """A JWT's ``iat``, read without checking the signature (it is only compared with our clock)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    iat = claims.get("iat") if isinstance(claims, dict) else None
    return iat if isinstance(iat, int) and not isinstance(iat, bool) else None


def offset(stamp: float, before: float, after: float) -> float:
    """How far a whole-second time stamp taken between ``before`` and ``after`` is outside them."""
    if stamp > after:
        return stamp - after
    if stamp < int(before):
        return stamp - int(before)
    return 0.0


def judge_clock(samples: Sequence[tuple[str, float]], note: str = "") -> Finding:
    """``samples``: (what was read, its offset in seconds from this machine's clock)."""
    check = "clock"
    if not samples:
        return unknown(check, "nothing dated was read" + note)
    what, worst = max(samples, key=lambda sample: abs(sample[1]))
    if abs(worst) > SKEW_SECONDS:
        side = "ahead of" if worst > 0 else "behind"
        return problem(
            check,
            f"{what} is {abs(worst):.0f} s {side} this machine's clock{note}",
            "synchronise the clocks (NTP: chrony, systemd-timesyncd) of forwardauth's host, the proxy's and "
            f"this one; tokens are checked with FORWARDAUTH_LEEWAY ({SKEW_SECONDS} s by default) of slack",
        )
    return ok(check, f"within {SKEW_SECONDS} s of this machine's clock: {', '.join(w for w, _ in samples)}{note}")
