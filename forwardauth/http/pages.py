"""HTML pages (sign in, second factor, second-factor settings, sign out, access denied), rendered from Jinja2 templates.

Autoescape is on for every template, so each value put into a page is HTML-escaped; templates
hold layout only. The pages' security headers are built here from the settings, because the
Content-Security-Policy's ``form-action`` must name every place our forms lead to.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from forwardauth.config import Settings
from forwardauth.core.csrf import origin_of

_ENV = Environment(
    loader=PackageLoader(__package__, "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)
_LOGIN = _ENV.get_template("login.html")
_FORBIDDEN = _ENV.get_template("forbidden.html")
_LOGOUT = _ENV.get_template("logout.html")
_SECOND_FACTOR = _ENV.get_template("second_factor.html")
_MFA = _ENV.get_template("mfa.html")
_RECOVERY_CODES = _ENV.get_template("recovery_codes.html")
_CONSENT = _ENV.get_template("consent.html")
_OIDC_ERROR = _ENV.get_template("oidc_error.html")
_LOGGED_OUT = _ENV.get_template("logged_out.html")
_CONTINUE = _ENV.get_template("continue.html")


def passkeys_offered(settings: Settings) -> bool:
    """Whether pages offer passkeys: not with FORWARDAUTH_SECOND_FACTOR=off (their endpoints refuse)."""
    return settings.second_factor != "off"


def login_page(
    action: str,
    rd: str = "",
    username: str = "",
    error: str | None = None,
    notice: str | None = None,
    passkeys: bool = False,
) -> str:
    """The password form; with ``passkeys`` (see passkeys_offered) also "Sign in with a passkey"."""
    return _LOGIN.render(action=action, rd=rd, username=username, error=error, notice=notice, passkeys=passkeys)


def second_factor_page(
    action: str,
    username: str,
    totp: bool,
    recovery: bool,
    login_href: str,
    error: str | None = None,
    field: str = "",
    notice: str | None = None,
    **extra: Any,
) -> str:
    """The step after the password: a TOTP code or a recovery code (``field``: the one in error).
    ``extra``: what other parts of the page need (passkeys)."""
    return _SECOND_FACTOR.render(
        action=action,
        username=username,
        totp=totp,
        recovery=recovery,
        login_href=login_href,
        error=error,
        field=field,
        notice=notice,
        **extra,
    )


def mfa_page(**values: Any) -> str:
    """The second-factor settings page (see http.enrol for its values)."""
    return _MFA.render(**values)


def recovery_codes_page(codes: Sequence[str], next_href: str, next_label: str, notice: str | None = None) -> str:
    return _RECOVERY_CODES.render(codes=codes, next_href=next_href, next_label=next_label, notice=notice)


def forbidden_page(
    host: str, username: str | None, roles: Sequence[str], logout_action: str, rd: str, needs_role: bool
) -> str:
    """The 403 page for a browser: who is signed in, and the ways out (sign out, switch user)."""
    return _FORBIDDEN.render(
        host=host, username=username, roles=roles, logout_action=logout_action, rd=rd, needs_role=needs_role
    )


def logout_page(signed_in: bool, username: str | None, action: str, rd: str, login_href: str) -> str:
    """What ``GET /logout`` shows: a button that posts the sign-out (a link alone must not sign out)."""
    return _LOGOUT.render(signed_in=signed_in, username=username, action=action, rd=rd, login_href=login_href)


def consent_page(client: str, username: str, scopes: Sequence[str], host: str, action: str, request_id: str) -> str:
    """An OIDC client asks for ``scopes`` (described in words): allow or deny, posted to ``action``."""
    return _CONSENT.render(
        client=client, username=username, scopes=scopes, host=host, action=action, request_id=request_id
    )


def oidc_error_page(error: str, description: str) -> str:
    """An authorization request refused before its client or redirect URI could be trusted: no redirect."""
    return _OIDC_ERROR.render(error=error, description=description)


def logged_out_page(
    confirm: bool,
    login_href: str,
    username: str | None = None,
    client: str | None = None,
    action: str = "",
    fields: Sequence[tuple[str, str]] = (),
) -> str:
    """RP-initiated logout: a button that posts it (``confirm``), or "you are signed out"."""
    return _LOGGED_OUT.render(
        confirm=confirm, login_href=login_href, username=username, client=client, action=action, fields=fields
    )


def continue_page(heading: str, host: str, url: str) -> str:
    """On to another site after one of our forms (see http.authorize.onward)."""
    return _CONTINUE.render(heading=heading, host=host, url=url)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def form_action_sources(allowed_domains: Sequence[str], urls: Sequence[str]) -> str:
    """``form-action``'s sources: our own origin, the given URLs' and every allowed domain's.

    Browsers check a form's redirects against ``form-action`` too (CSP3; Chromium does), so the
    login form's 303 to ``rd`` on another host needs that host here, or the browser stays on the
    form. ``rd`` may be any scheme and port on an allowed domain or its subdomains, hence
    ``http(s)://[*.]domain:*`` (a source without a port matches only the scheme's default port,
    and ``*.domain`` not ``domain`` itself; an address has no subdomains).
    """
    sources = ["'self'"]
    for url in urls:
        origin = origin_of(url)
        if origin is not None and origin not in sources:
            sources.append(origin)
    for domain in allowed_domains:
        hosts = (domain,) if _is_ip(domain) else (domain, "*." + domain)
        sources.extend(f"{scheme}://{host}:*" for host in hosts for scheme in ("https", "http"))
    return " ".join(sources)


@functools.lru_cache(maxsize=64)
def page_headers(settings: Settings) -> Mapping[str, str]:
    """Our pages' headers: never cached, never framed, no sniffing, and the URL (with its rd) not
    sent elsewhere. Not "no-referrer": with it a browser sends "Origin: null" on the form post,
    which the CSRF check refuses."""
    csp = (
        # script and fetch from our own origin only: static/passkeys.js and its JSON endpoints
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        f"form-action {form_action_sources(settings.allowed_domains, (settings.login_url, settings.issuer))}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": csp,
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }
