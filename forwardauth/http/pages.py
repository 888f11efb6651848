"""HTML pages (sign in, second factor, second-factor settings, sign out, access denied), rendered from Jinja2 templates.

Autoescape is on for every template, so each value put into a page is HTML-escaped; templates
hold layout only. The pages' security headers are built here from the settings, because the
Content-Security-Policy's ``form-action`` must name every place our forms lead to.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from forwardauth.config import Settings
from forwardauth.core.csrf import origin_of
from forwardauth.http import i18n

# Branding of the request being handled (None outside a request: the defaults). Set beside the
# language by the error middleware, so the page functions need no settings argument.
BRANDING: ContextVar[Settings | None] = ContextVar("branding", default=None)
_DEFAULT_BRANDING = Settings()


def _environment(lang: str) -> Environment:
    """One environment per language, its translations installed once: never swapped per request."""
    env = Environment(
        loader=PackageLoader(__package__, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True  # msgids without the templates' line breaks
    env.install_gettext_translations(i18n.TRANSLATIONS[lang], newstyle=True)  # type: ignore[attr-defined]
    return env


_ENVS = {lang: _environment(lang) for lang in i18n.LANGUAGES}


def _render(name: str, **values: Any) -> str:
    """``name`` in the request's language, with the site's branding (base.html shows it)."""
    lang = i18n.current()
    brand = BRANDING.get() or _DEFAULT_BRANDING
    return (
        _ENVS[lang]
        .get_template(name)
        .render(
            lang=lang,
            site_name=brand.site_name,
            logo_url=brand.logo_url,
            accent_color=brand.accent_color,
            accent_text=text_on(brand.accent_color) if brand.accent_color else "",
            **values,
        )
    )


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of ``#rgb`` or ``#rrggbb`` (FORWARDAUTH_ACCENT_COLOR, validated)."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_on(colour: str) -> str:
    """Black or white, whichever contrasts more with ``colour``: the text of buttons in the accent."""
    luminance = _luminance(colour)
    return "#000" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "#fff"


def render(name: str, **values: Any) -> str:
    """Template ``name`` (a portal or console page) with ``values``, in the request's language and
    the site's branding. The portal's and console's pages use this directly: their handlers
    name the template and pass every value it uses (StrictUndefined: a missing one raises)."""
    return _render(name, **values)


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
    forgot_href: str = "",
) -> str:
    """The password form; with ``passkeys`` (see passkeys_offered) also "Sign in with a passkey",
    with ``forgot_href`` a "Forgot your password?" link (only with a mail server: see http.portal).
    It names the site ``rd`` leads to, so the user sees where this sign-in is for."""
    return _render(
        "login.html",
        target=_rd_host(rd),
        action=action,
        rd=rd,
        username=username,
        error=error,
        notice=notice,
        passkeys=passkeys,
        forgot_href=forgot_href,
    )


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
    return _render(
        "second_factor.html",
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
    return _render("mfa.html", **values)


def recovery_codes_page(codes: Sequence[str], next_href: str, next_label: str, notice: str | None = None) -> str:
    return _render("recovery_codes.html", codes=codes, next_href=next_href, next_label=next_label, notice=notice)


def forbidden_page(
    host: str, username: str | None, roles: Sequence[str], logout_action: str, rd: str, needs_role: bool
) -> str:
    """The 403 page for a browser: who is signed in, and the ways out (sign out, switch user)."""
    return _render(
        "forbidden.html",
        host=host,
        username=username,
        roles=roles,
        logout_action=logout_action,
        rd=rd,
        needs_role=needs_role,
    )


def logout_page(signed_in: bool, username: str | None, action: str, rd: str, login_href: str) -> str:
    """What ``GET /logout`` shows: a button that posts the sign-out (a link alone must not sign out)."""
    return _render("logout.html", signed_in=signed_in, username=username, action=action, rd=rd, login_href=login_href)


def consent_page(client: str, username: str, scopes: Sequence[str], host: str, action: str, request_id: str) -> str:
    """An OIDC client asks for ``scopes`` (described in words): allow or deny, posted to ``action``."""
    return _render(
        "consent.html", client=client, username=username, scopes=scopes, host=host, action=action, request_id=request_id
    )


def oidc_error_page(error: str, description: str) -> str:
    """An authorization request refused before its client or redirect URI could be trusted: no redirect."""
    return _render("oidc_error.html", error=error, description=description)


def logged_out_page(
    confirm: bool,
    login_href: str,
    username: str | None = None,
    client: str | None = None,
    action: str = "",
    fields: Sequence[tuple[str, str]] = (),
) -> str:
    """RP-initiated logout: a button that posts it (``confirm``), or "you are signed out"."""
    return _render(
        "logged_out.html",
        confirm=confirm,
        login_href=login_href,
        username=username,
        client=client,
        action=action,
        fields=fields,
    )


def continue_page(heading: str, host: str, url: str) -> str:
    """On to another site after one of our forms (see http.authorize.onward)."""
    return _render("continue.html", heading=heading, host=host, url=url)


def _rd_host(rd: str) -> str:
    """The host (with a port other than the default) of an absolute ``rd``; "" for a path."""
    origin = origin_of(rd) if rd else None
    return origin.split("://", 1)[1] if origin else ""


def _image_source(logo_url: str) -> str:
    """``img-src`` for the logo: its https origin, or 'self' for a path on our own origin."""
    return origin_of(logo_url) or "'self'"


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
    # the logo's origin only (FORWARDAUTH_LOGO_URL); no images without one
    images = f"img-src {_image_source(settings.logo_url)}; " if settings.logo_url else ""
    csp = (
        # script and fetch from our own origin only: static/passkeys.js and its JSON endpoints
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        f"{images}"
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
