"""A sign-in's ``Set-Cookie`` read as browsers read it (RFC 6265), and whether its cookies are
kept where the login page is and sent to the protected site: ``forwardauth doctor``'s cookie
checks. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult

from forwardauth.core.checkup import Finding, ok, problem, unknown


@dataclass(frozen=True, slots=True)
class SetCookie:
    name: str
    value: str
    domain: str | None  # None: host-only
    path: str
    secure: bool
    cleared: bool  # an empty value or Max-Age=0: the server removes it


def default_path(request_path: str) -> str:
    """A cookie's path when Set-Cookie names none: the folder of the request (RFC 6265 5.1.4)."""
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rindex("/")]


def parse_set_cookie(line: str, request_path: str) -> SetCookie | None:
    first, *attributes = line.split(";")
    name, equals, value = first.partition("=")
    if not equals or not name.strip():
        return None
    domain, path, secure, cleared = None, default_path(request_path), False, not value.strip()
    for attribute in attributes:
        key, _, text = attribute.partition("=")
        key, text = key.strip().lower(), text.strip()
        if key == "domain" and text:
            domain = text.lstrip(".").lower()
        elif key == "path" and text.startswith("/"):
            path = text
        elif key == "secure":
            secure = True
        elif key == "max-age":
            cleared = cleared or (text.lstrip("-").isdigit() and int(text) <= 0)
    return SetCookie(name.strip(), value.strip().strip('"'), domain, path, secure, cleared)


def covers(domain: str, host: str) -> bool:
    """Whether a cookie with ``Domain=domain`` is kept by, and sent to, ``host``."""
    host, domain = host.lower().rstrip("."), domain.lower().lstrip(".")
    return host == domain or host.endswith("." + domain)


def path_matches(cookie_path: str, request_path: str) -> bool:
    if request_path == cookie_path:
        return True
    return request_path.startswith(cookie_path) and (cookie_path.endswith("/") or request_path[len(cookie_path)] == "/")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def loopback(host: str) -> bool:
    """A host browsers treat as secure over plain HTTP, where they keep Secure cookies."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return _is_address(host) and ipaddress.ip_address(host).is_loopback


def _domain_fix(target_host: str, login_host: str) -> str:
    if target_host == login_host and _is_address(target_host):
        return "leave FORWARDAUTH_COOKIE_DOMAIN unset: a cookie for an IP address can only be host-only"
    common: list[str] = []  # the labels both hosts end with
    for a, b in zip(reversed(target_host.split(".")), reversed(login_host.split(".")), strict=False):
        if a != b:
            break
        common.insert(0, a)
    if target_host == login_host and len(common) > 2:
        common = common[1:]
    if len(common) >= 2 and not _is_address(target_host):
        return (
            f"set FORWARDAUTH_COOKIE_DOMAIN={'.'.join(common)} (it must cover the login host and every protected host)"
        )
    return f"set FORWARDAUTH_COOKIE_DOMAIN to a domain covering {target_host} and {login_host}"


def _where(cookie: SetCookie, set_host: str) -> str:
    return f"Domain={cookie.domain}" if cookie.domain else f"host-only, on {set_host}"


def judge_cookie_domain(cookies: Sequence[SetCookie], set_on: SplitResult, target: SplitResult) -> Finding:
    """Whether the browser keeps the sign-in's cookies (set on ``set_on``) and sends them to ``target``."""
    check, set_host, host = "cookie-domain", set_on.hostname or "", target.hostname or ""
    kept = [c for c in cookies if not c.cleared]
    if not kept:
        return unknown(check, "the sign-in set no cookie (not a browser sign-in?)")
    refused = [c for c in kept if c.domain and not covers(c.domain, set_host)]
    if refused:
        return problem(
            check,
            f"the sign-in sets {', '.join(sorted({c.name for c in refused}))} with Domain={refused[0].domain}, "
            f"which does not cover {set_host}, the login page's host: browsers refuse them",
            _domain_fix(host, set_host),
        )
    needed = [c for c in kept if path_matches(c.path, target.path or "/")]
    if not needed:
        return unknown(check, f"no cookie of the sign-in applies to the path {target.path or '/'}")
    missing = [c for c in needed if not (covers(c.domain, host) if c.domain else set_host == host)]
    if missing:
        return problem(
            check,
            f"the sign-in cookie {missing[0].name} ({_where(missing[0], set_host)}) is not sent to {host}: "
            "browsers come back without it and are sent to sign in again",
            _domain_fix(host, set_host),
        )
    return ok(check, f"the sign-in cookie {needed[0].name} ({_where(needed[0], set_host)}) reaches {host}")


def judge_cookie_secure(cookies: Sequence[SetCookie], set_on: SplitResult, target: SplitResult) -> Finding:
    """Secure cookies on a plain-HTTP site (dropped: sign-ins loop), or none on an HTTPS one."""
    check = "cookie-secure"
    kept = [c for c in cookies if not c.cleared]
    if not kept:
        return unknown(check, "the sign-in set no cookie (not a browser sign-in?)")
    plain = sorted({u.hostname or "" for u in (set_on, target) if u.scheme == "http"})
    secure = [c for c in kept if c.secure]
    if plain and secure:
        if all(loopback(h) for h in plain):
            return ok(
                check,
                f"Secure cookies over plain HTTP on {', '.join(plain)}: browsers keep them on loopback only; "
                "any other host needs HTTPS",
            )
        return problem(
            check,
            f"the sign-in cookies are Secure but {', '.join(plain)} is plain HTTP: browsers neither keep nor send "
            "them there, so every sign-in loops back to the login page",
            "serve the site over HTTPS, or set FORWARDAUTH_COOKIE_SECURE=false for a plain-HTTP trial",
        )
    if not plain and len(secure) < len(kept):
        return problem(
            check,
            "the sign-in cookies lack Secure on an HTTPS site: a browser would send them over plain HTTP",
            "set FORWARDAUTH_COOKIE_SECURE=true (the default)",
        )
    if plain:
        return ok(check, "plain HTTP with cookies that are not Secure (FORWARDAUTH_COOKIE_SECURE=false): a trial only")
    return ok(check, "Secure cookies over HTTPS")
