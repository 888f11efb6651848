"""Browser sign-on that holds, and cookie mistakes that are explained instead of looping.

- Where the refresh cookie lives (:func:`refresh_cookie_domain`): behind the per-host snippets,
  on the cookie domain and forwardauth's own folder, so every host's login page renews the
  session; on a login host of its own, on that host only.
- Why a browser would not keep or send the cookie we set (:func:`delivery_problem`), judged from
  the ``Origin`` the browser itself sent, so a proxy in between cannot mislead it; and what is
  wrong in the settings at start (:func:`startup_warnings`).
- The 403 page for browsers, and one INFO line per refusal (access denied, failed login,
  throttled) starting with the address, for fail2ban and its kind.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import hdrs, web

from forwardauth.config import PREFIX, Settings
from forwardauth.core.credentials import AmbiguousToken, cookie_value
from forwardauth.core.csrf import origin_of
from forwardauth.core.forwarding import (
    OriginalRequest,
    Source,
    client_address,
    forwarded_for,
    is_trusted,
    path_prefix,
    public_origin,
)
from forwardauth.core.redirects import safe_redirect
from forwardauth.core.tokens import Identity
from forwardauth.http.i18n import N_, _
from forwardauth.http.pages import forbidden_page, login_page, page_headers
from forwardauth.logs import TRUSTED_PROXIES, current_request

log = logging.getLogger("forwardauth.browser")
security = logging.getLogger("forwardauth.security")

COOKIE_DOMAIN = PREFIX + "COOKIE_DOMAIN"
COOKIE_SECURE = PREFIX + "COOKIE_SECURE"


# --- where cookies go (RFC 6265), pure ------------------------------------------------------------


def trustworthy(host: str) -> bool:
    """A host browsers treat as secure over plain HTTP (loopback): they keep Secure cookies there."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def covers(cookie_domain: str, host: str) -> bool:
    """Whether a cookie with ``Domain=cookie_domain`` is kept by, and sent to, ``host``."""
    host, domain = host.lower().rstrip("."), cookie_domain.lower().lstrip(".")
    return host == domain or host.endswith("." + domain)


def refresh_cookie_domain(settings: Settings, folder: str) -> str | None:
    """The refresh cookie's Domain: the cookie domain when forwardauth is served under a folder of
    each protected host (``FORWARDAUTH_LOGIN_URL`` a path, the per-host snippets), else none.

    Under a folder, the cookie's Path keeps it to forwardauth's own pages on every host, and
    sharing it lets each host's login page renew one sign-in for the whole refresh lifetime.
    Without a folder (a login host of its own) a domain-wide cookie would reach the apps, and is
    not needed: every host sends its browsers to that one login page.
    """
    if settings.cookie_domain and folder != "/" and settings.login_url.startswith("/"):
        return settings.cookie_domain
    return None


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a browser would not get its cookie where it is going: for the page, and for the log."""

    page: str
    log: str


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def delivery_problem(settings: Settings, page_origin: str, rd: str) -> Problem | None:
    """What keeps the cookies of a sign-in on ``page_origin`` from reaching ``rd``, if anything.

    All of it is how browsers treat cookies, so it is certain: a Secure cookie set or needed over
    plain HTTP (except on loopback), a ``Domain`` the page's host is not under (the browser
    refuses the cookie), or a destination the cookie does not cover. The page's text is in the
    request's language, the log's in English for the operator.
    """
    page_host, page_scheme = _host(page_origin), urlsplit(page_origin).scheme
    if not page_host:
        return None
    secure = str(settings.cookie_secure).lower()
    if settings.cookie_secure and page_scheme == "http" and not trustworthy(page_host):
        return Problem(
            _(
                "This page was opened over plain HTTP ({origin}), but the sign-in cookie is for HTTPS only, so "
                "your browser would not keep it. Open the site over HTTPS, or (for a plain-HTTP trial) set "
                "{variable}=false."
            ).format(origin=page_origin, variable=COOKIE_SECURE),
            f"sign-in refused: the login page was reached over plain HTTP ({page_origin}) while "
            f"{COOKIE_SECURE}={secure}; browsers drop Secure cookies there. Serve it over HTTPS, or set "
            f"{COOKIE_SECURE}=false for a plain-HTTP trial",
        )
    values = {"variable": COOKIE_DOMAIN, "domain": settings.cookie_domain, "page_host": page_host}
    if settings.cookie_domain and not covers(settings.cookie_domain, page_host):
        return Problem(
            _(
                "Your browser would refuse the sign-in cookie: {variable}={domain} does not cover {page_host}, "
                "where you sign in."
            ).format(**values),
            f"sign-in refused: {COOKIE_DOMAIN}={settings.cookie_domain} does not cover {page_host}, the login "
            "page's host, so browsers refuse the cookie; it must cover the login host and every protected host",
        )
    values["host"] = rd_host = _host(rd) if rd else page_host
    if settings.cookie_domain and not covers(settings.cookie_domain, rd_host):
        reach = N_("{variable}={domain} does not cover {host}")
    elif not settings.cookie_domain and rd_host != page_host:
        reach = N_("{variable} is unset, so the cookie stays on {page_host} and never reaches {host}")
    elif settings.cookie_secure and rd and urlsplit(rd).scheme == "http" and not trustworthy(rd_host):
        values.update(variable=COOKIE_SECURE, secure=secure)
        reach = N_("{variable}={secure} and {host} is served over plain HTTP")
    else:
        return None
    return Problem(
        _("You would be signed in, but your browser would not send the sign-in cookie to {host}: {reach}.").format(
            host=rd_host, reach=_(reach).format(**values)
        ),
        f"sign-in refused: the cookie cannot reach {rd_host}: {reach.format(**values)}",
    )


def browser_origin(request: web.Request) -> str | None:
    """Where the browser says the form was: its ``Origin`` (or ``Referer``), never a proxy's view."""
    source = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    return origin_of(source) if source else None


def refuse_undeliverable(request: web.Request, settings: Settings, rd: str, username: str) -> web.Response | None:
    """A form sign-in whose cookie the browser would drop or not send to ``rd``: the form again
    saying why (400), and a warning naming the variable, before any password is checked.

    Without this, the sign-in "succeeds" (audited as such), the browser goes to ``rd`` without
    the cookie, and is back on an empty form: a loop that says nothing. The page's scheme and host
    are the browser's own ``Origin`` (a proxy in front cannot blur them), judged only when it is
    the host the form was posted to, i.e. our own form. Not a browser (no ``Origin`` nor
    ``Referer``): nothing to judge.
    """
    origin = browser_origin(request)
    seen = public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies)
    if origin is None or seen is None or _host(origin) != _host(seen):
        return None
    problem = delivery_problem(settings, origin, rd)
    if problem is None:
        return None
    log.warning("%s", problem.log)
    action = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/login"
    body = login_page(action=action, rd=rd, username=username, error=problem.page)
    return web.Response(text=body, status=400, content_type="text/html", headers=page_headers(settings))


def after_sign_out(login_action: str, rd: str) -> str:
    """Where a browser goes once signed out: the login page, saying so, with ``rd`` (a safe one)
    when it came from "sign in as someone else"."""
    return f"{login_action}?signed_out=1" + (f"&rd={quote(rd, safe='')}" if rd else "")


def signed_out(request: web.Request, settings: Settings) -> bool:
    """The login page after a sign-out (``?signed_out``), for a browser that holds neither cookie
    any more: only then does the page say so (a link cannot make a signed-in user believe it)."""
    if "signed_out" not in request.query:
        return False
    cookies = request.headers.getall(hdrs.COOKIE, ())
    for name in (settings.cookie_name, settings.refresh_cookie_name):
        try:
            if cookie_value(cookies, name) is not None:
                return False
        except AmbiguousToken:
            return False
    return True


# --- at start ------------------------------------------------------------------------------------


def startup_warnings(settings: Settings) -> list[str]:
    """Settings that make browsers drop or withhold the cookie: each a sentence naming the variables."""
    warnings: list[str] = []
    urls = [("ISSUER", settings.issuer)]
    if not settings.login_url.startswith("/"):
        urls.append(("LOGIN_URL", settings.login_url))
    for name, url in urls:
        parts = urlsplit(url)
        if settings.cookie_secure and parts.scheme == "http" and not trustworthy(parts.hostname or ""):
            warnings.append(
                f"{PREFIX}{name} is {url} (plain HTTP) but {COOKIE_SECURE}=true: browsers keep "
                f"Secure cookies only over HTTPS, so sign-ins there would loop. Serve it over HTTPS, "
                f"or set {COOKIE_SECURE}=false for a plain-HTTP trial"
            )
    if not settings.login_url.startswith("/"):
        login_host = _host(settings.login_url)
        if settings.cookie_domain and not covers(settings.cookie_domain, login_host):
            warnings.append(
                f"{COOKIE_DOMAIN}={settings.cookie_domain} does not cover {login_host}, the host of "
                f"{PREFIX}LOGIN_URL: browsers will refuse the cookie it sets"
            )
        elif not settings.cookie_domain and any(d != login_host for d in settings.allowed_domains):
            warnings.append(
                f"{COOKIE_DOMAIN} is unset: the cookie set by the login host {login_host} reaches "
                f"only that host, not the protected hosts. Set it to a domain covering them all"
            )
    renamed = [name for name in settings.header_names.all if not name.lower().startswith("x-auth-")]
    if renamed:
        warnings.append(
            f"identity headers renamed ({', '.join(renamed)}, {PREFIX}HEADERS_*): the proxy must pass these on "
            "and strip every spelling a client sends of them. The shipped nginx, Traefik, Caddy and Envoy files do "
            "when rendered with these names; the Kubernetes manifests (deploy/kubernetes) pass on and strip only "
            "X-Auth-* (the ingress-nginx-authelia and traefik-authelia overlays: Authelia's names): for other names "
            "edit their auth-response-headers annotation or forwardAuth middleware before use, or a client can send "
            "these headers itself"
        )
    if settings.cookie_domain:
        outside = [d for d in settings.allowed_domains if not covers(settings.cookie_domain, d)]
        if outside:
            warnings.append(
                f"{PREFIX}ALLOWED_DOMAINS lets sign-ins lead to {', '.join(outside)}, which "
                f"{COOKIE_DOMAIN}={settings.cookie_domain} does not cover: the cookie will not reach "
                "them"
            )
    return warnings


def warn_at_start(settings: Settings) -> None:
    for warning in startup_warnings(settings):
        log.warning("%s", warning)


# --- refusals: one line each, and a page for browsers ----------------------------------------------


def _quoted(text: str) -> str:
    """A value from the request, quoted so no space or quote in it shifts the fields after it."""
    return json.dumps(text, ensure_ascii=False)


def _who(identity: Identity | None) -> str:
    if identity is None:
        return "-"
    return _quoted(identity.username if identity.client is None else f"client:{identity.client}")


def _browser_side(request: web.Request) -> tuple[str, str]:
    """(client address, host) of a request to forwardauth itself, as seen through a trusted proxy."""
    trusted = request.app.get(TRUSTED_PROXIES, ())
    address = request.remote
    if is_trusted(request.remote, trusted):
        address = client_address(forwarded_for(request.headers), request.remote, trusted)
    origin = public_origin(request.scheme, request.headers, request.remote, trusted)
    return address or "-", _host(origin) if origin else "-"


def log_login_failed(username: str, retry_after: int | None = None) -> None:
    """``login failed`` (or ``login throttled``) at INFO: address first, then host, then the user."""
    request = current_request()
    address, host = _browser_side(request) if request is not None else ("-", "-")
    if retry_after is None:
        security.info("login failed: address=%s host=%s user=%s", address, host, _quoted(username))
    else:
        security.info(
            "login throttled: address=%s host=%s user=%s retry_after=%d", address, host, _quoted(username), retry_after
        )


def log_denied(original: OriginalRequest | None, identity: Identity | None, reason: str) -> None:
    """``access denied`` at INFO, one line per refusal from /auth (only then: never on a pass)."""
    if original is None:
        return
    security.info(
        "access denied: address=%s host=%s user=%s method=%s path=%s reason=%s",
        original.client_ip or "-",
        _host("//" + original.host),
        _who(identity),
        original.method,
        original.uri[:256],
        reason,
    )


def logout_action(settings: Settings) -> str:
    """Where a sign-out form posts, as the browser sees it: beside the login page."""
    return settings.login_url.rsplit("/", 1)[0] + "/logout"


def forbidden(
    request: web.Request, settings: Settings, original: OriginalRequest | None, identity: Identity | None, reason: str
) -> web.Response:
    """/auth's 403: logged; for a browser the page itself, since Traefik, Caddy and Envoy return
    our answer as is (nginx asks /forbidden for it through ``error_page 403``)."""
    log_denied(original, identity, reason)
    headers = {"Cache-Control": "no-store"}
    if original is None or original.source is Source.NGINX or "text/html" not in request.headers.get("Accept", ""):
        return web.Response(status=403, text="forbidden\n", headers=headers)
    return forbidden_response(settings, original.host, original.url, identity, reason == "role")


def forbidden_response(
    settings: Settings, host: str, url: str, identity: Identity | None, needs_role: bool
) -> web.Response:
    name = None if identity is None else identity.username or f"client {identity.client}"
    body = forbidden_page(
        host=urlsplit("//" + host).hostname or host,
        username=name,
        roles=identity.roles if identity else (),
        logout_action=logout_action(settings),
        rd=safe_redirect(url, settings.allowed_domains) or "",
        needs_role=needs_role,
    )
    return web.Response(text=body, status=403, content_type="text/html", headers=page_headers(settings))
