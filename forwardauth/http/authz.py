"""``/auth`` and ``/auth/envoy``: the hot path.

Verify the JWT (pure, in memory), one Redis ``EXISTS``, headers out; the access rules' verdict is
memoised per policy on the raw request. No PostgreSQL, no blocking call. A rule's sign-in
requirement (second factor, recent sign-in) is decided from the token's own claims: a short one is
a step-up, 401 with an RFC 9470 challenge, a browser sent to the login page as when signed out.
"""

from __future__ import annotations

import logging
import time

from aiohttp import hdrs, web
from multidict import istr

from forwardauth.config import Settings
from forwardauth.constants import ENVOY_PREFIX, MAX_TOKEN_LENGTH
from forwardauth.core.credentials import AmbiguousToken
from forwardauth.core.forwarding import OriginalRequest, Source, is_trusted, original_request, refuse_untrusted
from forwardauth.core.policy import ALLOW_ALL_AUTHENTICATED, Effect, Object, StepUp, Verdict, decide
from forwardauth.core.principals import identity_headers, subject_of
from forwardauth.core.redirects import login_location
from forwardauth.core.refusals import RefusalLog, Refused, refresh_cookie_leak
from forwardauth.core.tokens import TokenError
from forwardauth.http import browser
from forwardauth.http.common import BadInput, is_browser, token_of
from forwardauth.http.services import SERVICES, Services

log = logging.getLogger("forwardauth.web")  # one name for the HTTP layer's lines, as before

REFUSALS = RefusalLog()  # one per worker process


def refuse(request: web.Request, refusal: Refused) -> BadInput:
    """The 400 for a request /auth will not judge (see refusals), logged once per interval per reason."""
    REFUSALS.report(refusal, request.remote)
    return BadInput(str(refusal))


def original_of(request: web.Request, settings: Settings) -> OriginalRequest:
    """The request the proxy is asking about; one that cannot be described exactly is a 400."""
    envoy = ENVOY_PREFIX if request.path.startswith(ENVOY_PREFIX) else None
    try:
        return original_request(
            request.method, request.raw_path, request.headers, request.remote, settings.trusted_proxies, envoy
        )
    except Refused as exc:
        raise refuse(request, exc) from None


# Everything original_of() reads: the memo key, so a hit skips parsing and matching entirely. The
# names are istr (case-folded once), as aiohttp's own hdrs are: a plain str is folded per lookup.
# Every line of each (not the first only), joined with NUL (which no header value can hold): a
# header given twice is refused on a miss, and must never find the answer for the request that
# had it once. An empty line and none are one key, as original_of() reads them alike.
DESCRIBING_HEADERS = tuple(
    istr(h)
    for h in (
        "Host",
        "X-Forwarded-For",
        "X-Real-IP",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
        "X-Original-URL",
        "X-Original-URI",
        "X-Original-Method",
        "X-Original-Host",
        "X-Forwarded-Prefix",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    )
)
_NO_LINES = ((),) * len(DESCRIBING_HEADERS)
_LINES = "\x00".join


def access_rule(request: web.Request, services: Services) -> tuple[OriginalRequest, Verdict]:
    """The original request and the rules' verdict on it (policy.Policy.judge), memoised per policy
    on the raw request: a hit costs a dict lookup; the path's readings are worked out on a miss."""
    policy, verdicts = services.policy, services.verdicts  # together: no await in between
    key = (
        request.method,
        request.raw_path,
        request.remote,
        *map(_LINES, map(request.headers.getall, DESCRIBING_HEADERS, _NO_LINES)),
    )
    found = verdicts.get(key)
    if found is None:
        original = original_of(request, services.settings)
        obj = Object.of(original.scheme, original.host, original.uri, original.method, original.overrides)
        try:
            verdict = policy.judge(obj, original.client_ip)
        except Refused as exc:
            raise refuse(request, exc) from None
        found = verdicts.remember(key, (original, verdict))
    return found


def unauthorized(
    request: web.Request,
    settings: Settings,
    token_given: bool,
    original: OriginalRequest | None = None,
    challenge: str | None = None,
) -> web.Response:
    """401 with a Bearer challenge (``challenge``, else the one for no or a bad token); a browser
    is also pointed at the login page.

    Traefik and Caddy hand our response to the client as is, so they get a 302. nginx cannot
    pass a redirect on from auth_request, and Envoy passes only 200, so they get the 401 with
    ``Location`` for their config to use.
    """
    headers = {
        "WWW-Authenticate": challenge or ('Bearer error="invalid_token"' if token_given else "Bearer"),
        "Cache-Control": "no-store",
    }
    if not is_browser(request):
        return web.Response(status=401, text="unauthorized\n", headers=headers)
    original = original or original_of(request, settings)
    location = login_location(
        settings.login_url, original.scheme, original.host, original.url, settings.allowed_domains
    )
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
        without_token = decide(verdict, None)  # the one decision, as `policy explain` and its tests make it
        if without_token is None:
            decided.bypass += 1
            return web.Response(status=200)
        if without_token is Effect.DENY:
            decided.forbidden_rule += 1
            return browser.forbidden(request, settings, original, None, "rule")
    elif not is_trusted(request.remote, settings.trusted_proxies):  # no rules: only the sender is checked
        try:
            refuse_untrusted(
                request.headers, request.remote, settings.trusted_proxies, request.path.startswith(ENVOY_PREFIX)
            )
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
    # Only a restricted rule or a sign-in requirement looks at who it is and how they signed in
    # (decide() would allow the others): no Subject built, no clock read, for them.
    if verdict is not None and verdict.checks_subject:
        outcome = decide(verdict, subject_of(identity, claims.auth))
        if isinstance(outcome, StepUp):
            decided.step_up += 1
            return unauthorized(request, settings, True, original, outcome.challenge())
        if outcome is not None:
            decided.forbidden_role += 1
            return browser.forbidden(request, settings, original, identity, "role")
    decided.allowed += 1
    # a user's, or a client's own, under the names settled at start (config.HeaderNames)
    return web.Response(
        status=200, headers=identity_headers(identity, claims.auth, settings.header_names, claims.payload)
    )
