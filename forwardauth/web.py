"""HTTP handlers and the aiohttp application.

``/auth`` is the hot path: verify the JWT (pure, in memory), one Redis ``EXISTS``, headers out.
Login, refresh and logout do their PostgreSQL work and password hashing in one hop to the
bounded thread pool. Store outages answer 503, bad input 4xx; nothing answers with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField
from multidict import MultiDictProxy, istr

from . import browser, limits, migrations, sessions
from .cache import ClaimsCache, LiveTokens, Memo
from .config import Settings
from .connections import POSTGRES_DOWN, REDIS_DOWN, Database, OutageLog, RedisSettings
from .constants import (
    BROWSER_REFRESH_GRACE,
    ENVOY_PREFIX,
    MAX_TOKEN_LENGTH,
    REFRESH_RETRY_GRACE,
    RENEWAL_LOOP_SECONDS,
    RedisKeys,
)
from .credentials import AmbiguousToken, access_token, cookie_value
from .csrf import form_post_allowed, origin_of
from .forwarding import (
    OriginalRequest,
    Source,
    is_trusted,
    original_request,
    path_prefix,
    public_origin,
    refuse_untrusted,
)
from .keys import RELOAD_SECONDS, KeyRing, key_files, load_ring, record_signing, reload_ring
from .logs import TRUSTED_PROXIES
from .metrics import CONTENT_TYPE, Metrics, observe
from .pages import login_page, page_headers
from .passwords import Passwords
from .policy import ALLOW_ALL_AUTHENTICATED, Effect, Object, Policy, PolicyError, Verdict, decide
from .policy import load as load_policy
from .principals import identity_headers, subject_of
from .redirects import login_location, safe_redirect
from .refusals import RefusalLog, Refused, refresh_cookie_leak
from .regulation import Regulation
from .revocation import Revocations
from .signin import (
    Throttled,
    client_address,
    device_of,
    issue_access,
    new_device,
    set_device_cookie,
    sign_in,
)
from .tokens import AccessClaims, MintedToken, TokenError, TokenService

log = logging.getLogger("forwardauth.web")

MAX_BODY = 64 * 1024
MAX_FIELD = 4096
JSON = "application/json"


@dataclass(slots=True)
class Services:
    """What the handlers use, built once per worker."""

    settings: Settings
    tokens: TokenService
    revocations: Revocations
    db: Database
    passwords: Passwords
    regulation: Regulation
    claims: ClaimsCache  # verified signatures (safe always: revocation is checked apart)
    metrics: Metrics
    policy: Policy = ALLOW_ALL_AUTHENTICATED  # replaced whole on reload, with its memo
    decisions: Memo[tuple[OriginalRequest, Verdict]] = field(default_factory=Memo)

    def use_policy(self, policy: Policy) -> None:
        """Swap in new rules and a memo of their own (one assignment: never rules of one with
        the memo of the other)."""
        self.policy, self.decisions = policy, Memo()


SERVICES = web.AppKey("services", Services)


class BadInput(Exception):
    """The client sent something we cannot read; answered 400 (or the given status)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def error_response(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status=status)


# --- reading requests --------------------------------------------------------------------


def token_of(request: web.Request, cookie_name: str) -> str | None:
    """The access token: ``Authorization: Bearer`` first, then the cookie (``AmbiguousToken``: two)."""
    return access_token(request.headers.getall(hdrs.AUTHORIZATION, ()), request.headers.getall(hdrs.COOKIE, ()),
                        cookie_name)


def bearer_or_cookie(request: web.Request, cookie_name: str) -> str | None:
    """The access token, for endpoints other than /auth: two of them are a 401."""
    try:
        return token_of(request, cookie_name)
    except AmbiguousToken as exc:
        raise BadInput(str(exc), status=401) from None


def refuse_cross_site(request: web.Request, settings: Settings) -> None:
    """403 for a browser form post from a page not ours (see csrf); JSON and Bearer calls pass."""
    if request.content_type == JSON or hdrs.AUTHORIZATION in request.headers:
        return
    own = (public_origin(request.scheme, request.headers, request.remote, settings.trusted_proxies),
           origin_of(settings.issuer), origin_of(settings.login_url))
    if not form_post_allowed(request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.REFERER), own,
                             settings.allowed_domains):
        raise BadInput("cross-site form post refused: the Origin is not this service's", status=403)


def is_browser(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def wants_json(request: web.Request) -> bool:
    return request.content_type == JSON or (
        JSON in request.headers.get("Accept", "") and "text/html" not in request.headers.get("Accept", "")
    )


class BodyTooLarge(BadInput):
    """Over ``client_max_size``: aiohttp's own 413 is plain text, ours JSON like every other error."""

    def __init__(self) -> None:
        super().__init__(f"the request body is over {MAX_BODY} bytes", status=413)


async def posted_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The parsed form body; a malformed one (multipart without boundary, bytes not in the declared
    charset) is a 400, and so is one aiohttp cannot decode: an unknown charset (LookupError), an
    unknown Content-Transfer-Encoding of a part (RuntimeError), a part's headers it cannot parse
    (HttpProcessingError; aiohttp also loses its place after a ``_charset_`` part). A large one is a 413."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge() from None
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:
        raise BadInput(f"malformed form body: {exc}") from None


async def read_fields(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    """String fields from a JSON object or a form body; missing fields come back empty."""
    if request.content_type == JSON:
        try:
            data = orjson.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge() from None
        except orjson.JSONDecodeError:
            raise BadInput("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadInput("body must be a JSON object")
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = dict(await posted_form(request))
    elif not request.body_exists:
        data = {}
    else:
        raise BadInput("use application/json or a form", status=415)
    fields: dict[str, str] = {}
    for name in names:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise BadInput(f"{name} must be a string")
        if len(value) > MAX_FIELD or "\x00" in value:
            raise BadInput(f"{name} is too long or contains NUL")
        fields[name] = value
    return fields


# --- /auth ---------------------------------------------------------------------------------


REFUSALS = RefusalLog()  # one per worker process


def refuse(request: web.Request, refusal: Refused) -> BadInput:
    """The 400 for a request /auth will not judge (see refusals), logged once per interval per reason."""
    REFUSALS.report(refusal, request.remote)
    return BadInput(str(refusal))


def describe(request: web.Request, settings: Settings) -> OriginalRequest:
    """The request the proxy is asking about; one that cannot be described exactly is a 400."""
    envoy = ENVOY_PREFIX if request.path.startswith(ENVOY_PREFIX) else None
    try:
        return original_request(request.method, request.raw_path, request.headers, request.remote,
                                settings.trusted_proxies, envoy)
    except Refused as exc:
        raise refuse(request, exc) from None


# Everything describe() reads: the memo key, so a hit skips parsing and matching entirely. The
# names are istr (case-folded once), as aiohttp's own hdrs are: a plain str is folded per lookup.
# Every line of each (not the first only), joined with NUL (which no header value can hold): a
# header given twice is refused on a miss, and must never find the answer for the request that
# had it once. An empty line and none are one key, as describe() reads them alike.
DESCRIBING_HEADERS = tuple(istr(h) for h in (
    "Host", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri",
    "X-Forwarded-Method", "X-Original-URL", "X-Original-URI", "X-Original-Method", "X-Original-Host",
    "X-Forwarded-Prefix", "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"))
_NO_LINES = ((),) * len(DESCRIBING_HEADERS)
_LINES = "\x00".join


def access_rule(request: web.Request, services: Services) -> tuple[OriginalRequest, Verdict]:
    """The original request and the rules' verdict on it (policy.Policy.judge), memoised per policy
    on the raw request: a hit costs a dict lookup; the path's readings are worked out on a miss."""
    policy, decisions = services.policy, services.decisions  # together: no await in between
    key = (request.method, request.raw_path, request.remote,
           *map(_LINES, map(request.headers.getall, DESCRIBING_HEADERS, _NO_LINES)))
    found = decisions.get(key)
    if found is None:
        original = describe(request, services.settings)
        obj = Object.of(original.scheme, original.host, original.uri, original.method, original.overrides)
        try:
            verdict = policy.judge(obj, original.client_ip)
        except Refused as exc:
            raise refuse(request, exc) from None
        found = decisions.remember(key, (original, verdict))
    return found


def unauthorized(
    request: web.Request, settings: Settings, token_given: bool, original: OriginalRequest | None = None
) -> web.Response:
    """401 with a Bearer challenge; a browser is also pointed at the login page.

    Traefik and Caddy hand our response to the client as is, so they get a 302. nginx cannot
    pass a redirect on from auth_request, and Envoy passes only 200, so they get the 401 with
    ``Location`` for their config to use.
    """
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if token_given else "Bearer",
               "Cache-Control": "no-store"}
    if not is_browser(request):
        return web.Response(status=401, text="unauthorized\n", headers=headers)
    original = original or describe(request, settings)
    location = login_location(settings.login_url, original.scheme, original.host, original.url,
                              settings.allowed_domains)
    if location is not None:
        headers["Location"] = location
    status = 302 if original.source is Source.FORWARDED else 401
    return web.Response(status=status, text="sign in required\n", headers=headers)


async def auth(request: web.Request) -> web.StreamResponse:
    """The check: access rule first (bypass, deny), then the token, then the rule's users/roles."""
    services = request.app[SERVICES]
    settings = services.settings
    decided = services.metrics.decisions  # one counter per outcome, for /metrics
    if hdrs.COOKIE in request.headers:  # the refresh cookie must never reach an app (see refusals)
        leak = refresh_cookie_leak(request.headers, settings.refresh_cookie_name, request.path.startswith(ENVOY_PREFIX))
        if leak is not None:
            raise refuse(request, leak)
    original = verdict = None
    if services.policy is not ALLOW_ALL_AUTHENTICATED:
        original, verdict = access_rule(request, services)
        if verdict.effect is Effect.BYPASS:  # decide(verdict, None), inlined on the hot path
            decided.bypass += 1
            return web.Response(status=200)
        if verdict.effect is Effect.DENY:
            decided.forbidden_rule += 1
            return browser.forbidden(request, settings, original, None, "rule")
    elif not is_trusted(request.remote, settings.trusted_proxies):  # no rules: only the sender is checked
        try:
            refuse_untrusted(request.headers, request.remote, settings.trusted_proxies,
                             request.path.startswith(ENVOY_PREFIX))
        except Refused as exc:
            raise refuse(request, exc) from None
    try:
        token = token_of(request, settings.cookie_name)
    except AmbiguousToken:
        decided.invalid_token += 1
        return unauthorized(request, settings, True, original)
    if token is None:
        decided.no_token += 1
        return unauthorized(request, settings, False, original)
    if len(token) > MAX_TOKEN_LENGTH:  # before any work, hashing it for the cache included
        decided.invalid_token += 1
        return unauthorized(request, settings, True, original)
    claims = services.claims.get(token, time.time())
    if claims is None:
        try:
            claims = services.tokens.verify(token)
        except TokenError as exc:
            log.debug("token refused: %s", exc)  # why, never the token
            decided.invalid_token += 1
            return unauthorized(request, settings, True, original)
        services.claims.put(token, claims)
    if not await services.revocations.is_live(claims.sid, claims.jti, claims.expires_at):
        decided.revoked += 1
        return unauthorized(request, settings, True, original)
    identity = claims.identity
    if verdict is not None and verdict.effect is Effect.RESTRICTED and decide(verdict, subject_of(identity)):
        decided.forbidden_role += 1
        return browser.forbidden(request, settings, original, identity, "role")
    decided.allowed += 1
    return web.Response(status=200, headers=identity_headers(identity))  # a user's, or a client's own


# --- login, refresh, logout ----------------------------------------------------------------


async def rotate_refresh(
    services: Services, token: str, client_ip: str | None, client_id: str | None = None,
    narrow_scope: Callable[[str | None], str | None] | None = None, grace: int = 0, min_age: int = 0,
) -> tuple[sessions.Session, MintedToken]:
    """Spend a refresh token: its successor and a new access token. Raises sessions.RefreshError
    when it is refused, after revoking a replayed token's session in Redis too (see sessions.rotate;
    queued if Redis refuses: PostgreSQL has revoked it already).

    Redis must take a write first: the rotation commits in PostgreSQL, and if the new access token
    then could not be registered, the old refresh token would be spent and the new one never handed
    out. Should Redis fail in between anyway, the client's retry with the same token, within
    REFRESH_RETRY_GRACE, gets a fresh pair instead of being taken for a replay (sessions.rotate).
    """
    await services.revocations.writable()
    try:
        session = await services.db.run(sessions.rotate, token, services.settings.refresh_ttl, client_ip, client_id,
                                        narrow_scope, grace, min_age, REFRESH_RETRY_GRACE)
    except sessions.RefreshError as exc:
        if exc.reused_family:
            await services.revocations.revoke_or_queue([exc.reused_family])
        raise
    return session, await issue_access(services, session)


def token_body(services: Services, minted: MintedToken, refresh_token: str) -> dict[str, Any]:
    return {
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": services.settings.access_ttl,
        "refresh_token": refresh_token,
    }


def put_cookie(response: web.StreamResponse, settings: Settings, name: str, value: str | None, max_age: int,
               path: str = "/", domain: str | None = None) -> None:
    """Set (or, with ``None``, clear) one of our cookies: always HttpOnly and SameSite=Lax."""
    options: dict[str, Any] = {"path": path, "httponly": True, "samesite": "Lax", "secure": settings.cookie_secure}
    if domain:
        options["domain"] = domain
    if value is None:
        response.del_cookie(name, **options)
    else:
        response.set_cookie(name, value, max_age=max_age, **options)


def set_access_cookie(response: web.StreamResponse, settings: Settings, token: str | None) -> None:
    """Set (or, with ``None``, clear) the access-token cookie."""
    if settings.cookie_domain:
        # A host-only cookie of the same name (set before FORWARDAUTH_COOKIE_DOMAIN was) would be
        # sent beside ours, and two tokens are refused: expire it too, or that browser is stuck.
        # A raw header: aiohttp keeps one Set-Cookie per name.
        response.headers.add(hdrs.SET_COOKIE, f"{settings.cookie_name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
                             + ("; Secure" if settings.cookie_secure else ""))
    put_cookie(response, settings, settings.cookie_name, token, settings.access_ttl, domain=settings.cookie_domain)


def set_refresh_cookie(response: web.StreamResponse, request: web.Request, settings: Settings,
                       token: str | None) -> None:
    """Set (or, with ``None``, clear) the browser's refresh cookie (FORWARDAUTH_REMEMBER_BROWSER).

    On forwardauth's own paths (the folder of the login page as the browser sees it:
    ``/forwardauth/`` behind the shipped snippets), so the protected apps, which do get the access
    cookie, never receive the long-lived token; /logout does, to end its session. Under such a
    folder it is for the cookie domain, so every host's login page renews the one sign-in; on a
    login host of its own, host-only (see browser.refresh_cookie_domain).
    """
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    domain = browser.refresh_cookie_domain(settings, folder)
    if domain:
        # The host-only one of the same name (from a version before, or a login host on this
        # folder) would be sent beside it, and two are refused: expire it too (a raw header:
        # aiohttp keeps one Set-Cookie per name).
        response.headers.add(hdrs.SET_COOKIE, f"{settings.refresh_cookie_name}=; Max-Age=0; Path={folder}; "
                             "HttpOnly; SameSite=Lax" + ("; Secure" if settings.cookie_secure else ""))
    put_cookie(response, settings, settings.refresh_cookie_name, token, settings.refresh_ttl,
               path=folder, domain=domain)


def refresh_cookie(request: web.Request, settings: Settings) -> str | None:
    """The browser's refresh token, if it sent exactly one."""
    try:
        return cookie_value(request.headers.getall(hdrs.COOKIE, ()), settings.refresh_cookie_name)
    except AmbiguousToken:
        return None


def login_action(request: web.Request, settings: Settings) -> str:
    """The login form's action as the browser sees it (through a proxy's path prefix)."""
    return path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/login"


async def login_form(request: web.Request) -> web.Response:
    """The form; or, for a browser sent here by a protected app, a silent renewal (see renew)."""
    services = request.app[SERVICES]
    settings = services.settings
    rd = safe_redirect(request.query.get("rd"), settings.allowed_domains) or ""
    if rd and settings.remember_browser:
        renewed = await renew(request, services, rd)
        if renewed is not None:
            return renewed
    notice = "You have been signed out." if browser.signed_out(request, settings) else None
    return html_page(login_page(action=login_action(request, settings), rd=rd, notice=notice), settings)


async def renew(request: web.Request, services: Services, rd: str) -> web.Response | None:
    """Sign a browser whose access cookie expired back in with its refresh cookie: rotate it,
    mint a new access cookie and go on to ``rd``. None (show the form) when that cannot be done.

    A token presented again by the same browser within REFRESH_RETRY_GRACE (its answer was lost, or
    a second tab renewed at the same moment) gets fresh cookies once (see sessions.rotate). Beyond
    that, within BROWSER_REFRESH_GRACE, the form (another tab has the new cookies), not a revoked
    session. Later, a replaced token is a copy and ends the session, as on /refresh. A token
    only just issued means the access cookie did not reach ``rd``: the page says so, rather than
    renewing in a loop until the browser gives up.
    """
    settings = services.settings
    token = refresh_cookie(request, settings)
    if token is None:
        return None
    loop_window = min(RENEWAL_LOOP_SECONDS, settings.access_ttl // 2)
    try:
        session, minted = await rotate_refresh(services, token, client_address(request, settings),
                                               grace=BROWSER_REFRESH_GRACE, min_age=loop_window)
    except sessions.RefreshError as exc:
        if not exc.too_soon:
            return None
        host = urlsplit(rd).hostname
        log.warning("redirect loop: a browser signed in moments ago is back on the login page for %s; the access "
                    "cookie (FORWARDAUTH_COOKIE_DOMAIN=%s, FORWARDAUTH_COOKIE_SECURE=%s) does not reach it",
                    host, settings.cookie_domain or "(host only)", str(settings.cookie_secure).lower())
        error = (f"You are signed in, but your browser did not send the sign-in cookie to {host}. "
                 "FORWARDAUTH_COOKIE_DOMAIN must cover that host (and with FORWARDAUTH_COOKIE_SECURE the site "
                 "must use HTTPS).")
        return html_page(login_page(action=login_action(request, settings), rd=rd, error=error), settings)
    response = see_other(rd)
    set_access_cookie(response, settings, minted.token)
    set_refresh_cookie(response, request, settings, session.refresh_token)
    return response


def html_page(body: str, settings: Settings, status: int = 200) -> web.Response:
    """One of our pages, with its headers (see pages.page_headers: CSP, no caching, no framing)."""
    return web.Response(text=body, status=status, content_type="text/html", headers=page_headers(settings))


async def login(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    as_json = wants_json(request)
    refuse_cross_site(request, settings)
    fields = await read_fields(request, ("username", "password", "rd"))
    if not fields["username"] or not fields["password"]:
        raise BadInput("username and password are required")
    if not as_json:  # would the browser keep the cookie, and send it to rd? Else say why (browser.py)
        rd = safe_redirect(fields["rd"], settings.allowed_domains) or ""
        refused = browser.refuse_undeliverable(request, settings, rd, fields["username"])
        if refused is not None:
            return refused
    # The browser's device cookie (see regulation: known clients); a browser without one gets one.
    device = device_of(request, settings) or (None if as_json else new_device())
    try:
        signed = await sign_in(services, fields["username"], fields["password"], client_address(request, settings),
                               device=device)
    except Throttled as exc:
        headers = {"Retry-After": str(exc.retry_after)}
        if as_json:
            return json_response({"error": "too_many_attempts", "error_description": str(exc)}, status=429,
                                 headers=headers)
        page = login_page(action=login_action(request, settings), username=fields["username"],
                          rd=safe_redirect(fields["rd"], settings.allowed_domains) or "",
                          error=f"Too many failed attempts. Try again in {exc.retry_after} seconds.")
        response = html_page(page, settings, status=429)
        response.headers.update(headers)
        return response
    if signed is None:
        message = "Wrong username or password."
        if as_json:
            return error_response(401, "invalid_credentials", message)
        rd = safe_redirect(fields["rd"], settings.allowed_domains) or ""
        page = login_page(action=login_action(request, settings), rd=rd, username=fields["username"],
                          error=message)
        return html_page(page, settings, status=401)
    session, minted = signed.session, signed.access
    if as_json:
        return json_response(token_body(services, minted, session.refresh_token),
                             headers={"Cache-Control": "no-store"})
    response = see_other(safe_redirect(fields["rd"], settings.allowed_domains) or "/")
    set_access_cookie(response, settings, minted.token)
    if settings.remember_browser:
        set_refresh_cookie(response, request, settings, session.refresh_token)
    if signed.device is not None:  # a new value of ours: a browser that keeps signing in stays known
        set_device_cookie(response, request, settings, signed.device)
    return response


async def refresh(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    fields = await read_fields(request, ("refresh_token",))
    try:
        session, minted = await rotate_refresh(services, fields["refresh_token"],
                                               client_address(request, services.settings))
    except sessions.RefreshError:
        return error_response(401, "invalid_grant", "refresh token is invalid, expired or revoked")
    return json_response(token_body(services, minted, session.refresh_token),
                         headers={"Cache-Control": "no-store"})


async def logout(request: web.Request) -> web.Response:
    """End the session of the presented access token (or refresh token), idempotently.

    PostgreSQL first (the refresh tokens die: nothing new can be minted), then Redis (the access
    tokens). If Redis refuses, the revocation is queued until it takes writes again and the answer
    says so (202, ``revocation_pending``): never a 503 after the session was ended. A client's own
    token (client_credentials) has no session: only that token is revoked, in Redis, or a 503.
    """
    services = request.app[SERVICES]
    refuse_cross_site(request, services.settings)
    address = client_address(request, services.settings)
    fields = await read_fields(request, ("refresh_token", "rd"))
    claims: AccessClaims | None = None
    token = bearer_or_cookie(request, services.settings.cookie_name)
    if token:
        try:
            claims = services.tokens.verify(token, allow_expired=True)
        except TokenError:
            claims = None
    client_token = claims is not None and claims.identity.client is not None
    if claims is not None and client_token:
        await services.revocations.revoke(claims.sid, claims.jti)  # its sid groups the client's other tokens
    # The token's session, else the posted refresh token's; and the browser's refresh cookie's,
    # which may be another session (signed in again on this host since).
    found: list[str | None] = [claims.sid if claims and not client_token else None]
    if claims is None and fields["refresh_token"]:
        found.append(await services.db.run(sessions.family_of, fields["refresh_token"]))
    browser_refresh = refresh_cookie(request, services.settings)
    if browser_refresh:
        found.append(await services.db.run(sessions.family_of, browser_refresh))
    ended = sorted({sid for sid in found if sid is not None})
    for sid in ended:
        who = (claims.identity.subject, claims.identity.username) if claims and claims.sid == sid else (None, None)
        await services.db.run(sessions.logout, sid, *who, address)
    revoked = await services.revocations.revoke_or_queue(ended)
    if is_browser(request):  # a sign-out button: back to the login page, saying so (and rd: switch user)
        rd = safe_redirect(fields["rd"], services.settings.allowed_domains) or ""
        response = see_other(browser.after_sign_out(login_action(request, services.settings), rd))
    else:
        body = {"logged_out": bool(ended) or client_token}
        response = json_response(body) if revoked else json_response({**body, "revocation_pending": True}, 202)
    set_access_cookie(response, services.settings, None)
    set_refresh_cookie(response, request, services.settings, None)
    return response


# --- keys and health -------------------------------------------------------------------------


async def jwks(request: web.Request) -> web.Response:
    ring = request.app[SERVICES].tokens.ring
    return json_response(ring.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def openapi_json(request: web.Request) -> web.Response:
    from .openapi import document

    return json_response(document(request.app[SERVICES].settings))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def prometheus(request: web.Request) -> web.Response:
    """Every worker's counters in the Prometheus text format (other workers' up to ~1 s old)."""
    body = request.app[SERVICES].metrics.exposition()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE, hdrs.CACHE_CONTROL: "no-store"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        await services.revocations.ping()
        checks["redis"] = "ok"
    except REDIS_DOWN:
        checks["redis"] = "unreachable"
    try:
        version = await services.db.run_blocking(migrations.applied_version, services.settings.database_url)
        checks["postgres"] = "ok" if version >= migrations.latest_version() else "migrations pending"
    except POSTGRES_DOWN:
        checks["postgres"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


# --- application -----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


OUTAGES = OutageLog()  # one per worker process
RETRY_AFTER_OUTAGE = "2"


def unavailable(request: web.Request, what: str) -> web.Response:
    """503 while a store is down: the login page with the reason for a browser, else JSON."""
    headers = {"Retry-After": RETRY_AFTER_OUTAGE, "Cache-Control": "no-store"}
    if request.path == "/login" and is_browser(request) and not wants_json(request):
        settings = request.app[SERVICES].settings
        response = html_page(login_page(action=login_action(request, settings), rd="",
                                        error="Sign-in is unavailable right now. Try again in a moment."),
                             settings, 503)
        response.headers.update(headers)
        return response
    return json_response({"error": "temporarily_unavailable", "error_description": what}, 503, headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map bad input and store outages to clear 4xx/503 answers; never leak a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BadInput as exc:
        return error_response(exc.status, "invalid_request", str(exc))
    except UnicodeError as exc:  # bytes a request carried that do not decode (a source missed a check)
        log.info("refused %s %s: undecodable input (%s)", request.method, request.path, type(exc).__name__)
        return error_response(400, "invalid_request", "the request holds bytes that are not valid text")
    except REDIS_DOWN as exc:
        OUTAGES.failed("redis", exc)
        request.app[SERVICES].metrics.store_errors["redis"] += 1
        return unavailable(request, "the session store is unavailable")
    except POSTGRES_DOWN as exc:
        OUTAGES.failed("postgres", exc)
        request.app[SERVICES].metrics.store_errors["postgres"] += 1
        return unavailable(request, "the user database is unavailable")
    except Exception as exc:
        if type(exc) is LookupError:  # codecs.lookup: a charset the request named does not exist
            log.info("refused %s %s: %s", request.method, request.path, exc)
            return error_response(400, "invalid_request", "the request names an unknown charset or encoding")
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "server_error", "internal error")


async def watch(state: Callable[[], object], reload: Callable[[], bool]) -> None:
    """Every RELOAD_SECONDS, call ``reload`` when ``state`` changed (until it succeeds)."""
    seen = await asyncio.to_thread(state)
    while True:
        await asyncio.sleep(RELOAD_SECONDS)
        current = await asyncio.to_thread(state)
        if current != seen and await asyncio.to_thread(reload):
            seen = current


def reload_keys(services: Services) -> bool:
    """Pick up rotated or pruned keys in this worker, without a restart."""
    ring = reload_ring(services.settings)  # a refused folder is logged there, rate-limited
    if ring is None:
        return False
    services.tokens.ring = ring
    services.claims.clear()  # a pruned key must stop verifying at once
    log.info("keys reloaded: signing with %s, %d key(s) verify", ring.current.kid, len(ring.by_kid))
    return True


def reload_policy(services: Services) -> bool:
    """Load the policy file again; a broken file is refused and the rules in force stay."""
    path = services.settings.policy_file
    if path is None:
        return True
    try:
        services.use_policy(load_policy(path))
    except PolicyError as exc:
        log.error("policy not reloaded, keeping the rules in force: %s", exc)
        return False
    log.info("policy reloaded: %d rule(s), default %s", len(services.policy.rules), services.policy.default.value)
    return True


def file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def build_services(settings: Settings, ring: KeyRing | None = None, metrics_dir: Path | None = None) -> Services:
    assert settings.database_url is not None and settings.redis_url is not None
    ring = ring or load_ring(settings)
    tokens = TokenService(ring, settings.issuer, settings.audience, settings.access_ttl, settings.leeway)
    client = RedisSettings.from_url(settings.redis_url).client()
    local = LiveTokens() if settings.local_cache else None
    keys = RedisKeys(settings.redis_prefix)
    revocations = Revocations(client, keys, local)
    claims = ClaimsCache(settings.leeway)
    return Services(
        settings=settings,
        tokens=tokens,
        revocations=revocations,
        regulation=Regulation(client, keys, settings.login_max_failures, settings.login_window),
        claims=claims,
        metrics=Metrics(claims, revocations, metrics_dir),
        db=Database(settings.database_url, settings.db_pool_size),
        passwords=Passwords.from_settings(settings),
        policy=load_policy(settings.policy_file) if settings.policy_file else ALLOW_ALL_AUTHENTICATED,
    )


def create_app(settings: Settings, ring: KeyRing | None = None, metrics_dir: Path | None = None) -> web.Application:
    """The application for one worker; stores are connected lazily and closed on cleanup.

    ``metrics_dir``: the folder where this server's workers share their counters (see metrics).
    """
    services = build_services(settings, ring, metrics_dir)
    app = web.Application(middlewares=[observe(services.metrics, errors)], client_max_size=MAX_BODY,
                          handler_args=limits.PARSER)
    app[SERVICES] = services
    app[TRUSTED_PROXIES] = settings.trusted_proxies  # whose X-Request-Id the logs take
    app[limits.HEADER_TIMEOUT] = settings.header_timeout

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        watchers = []
        if settings.signing_alg != "HS256":
            directory = settings.key_directory
            watchers.append(asyncio.create_task(
                watch(lambda: key_files(directory), lambda: reload_keys(services))))
            watchers.append(asyncio.create_task(record_signing(directory, lambda: services.tokens.ring.current)))
        if settings.policy_file is not None:
            policy_file = settings.policy_file
            watchers.append(asyncio.create_task(
                watch(lambda: file_state(policy_file), lambda: reload_policy(services))))
        if services.revocations.local is not None:
            watchers.append(asyncio.create_task(services.revocations.follow(stop)))
        if metrics_dir is not None:
            watchers.append(asyncio.create_task(services.metrics.publish()))
        yield
        stop.set()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.wait(watchers, timeout=5)
        services.metrics.final_snapshot()
        await services.revocations.close()
        services.db.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/auth", auth)
    # Any path under the prefix, control characters included (forwarding refuses those).
    app.router.add_route("*", ENVOY_PREFIX + r"{original:(/[\s\S]*)?}", auth)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/refresh", refresh)
    app.router.add_post("/logout", logout)
    app.router.add_get("/.well-known/jwks.json", jwks)
    from . import oauth  # it builds on this module's helpers

    oauth.add_routes(app)
    from . import browser_pages  # GET /logout and /forbidden, built on this module's helpers too

    browser_pages.add_routes(app)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app
