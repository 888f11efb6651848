"""``/auth`` and ``/auth/envoy``: the hot path.

Verify the JWT (pure, in memory), one Redis ``EXISTS``, headers out; the access rules' verdict is
memoised per policy on the raw request. No PostgreSQL, no blocking call. A rule's sign-in
requirement (second factor, recent sign-in) is decided from the token's own claims: a short one is
a step-up, 401 with an RFC 9470 challenge, a browser sent to the login page as when signed out.

A personal access token (``Bearer fa_pat_...``, or the password of Basic credentials, whose user
must be the token's owner) costs the same after its first check on a worker: its Redis record is
remembered by the token's digest (``services.pats``), and whether it is live is ``is_live``'s
answer from memory while the worker follows the revocation channel, as for any token. A Basic
password that is not a token is refused (401) without being checked: there is no password hash on
this path. A rule's ``challenge: basic`` makes the 401 a Basic challenge, so git and WebDAV
clients prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

from forwardauth.accounts.pats import resolve
from forwardauth.config import Settings
from forwardauth.constants import ENVOY_PREFIX, MAX_TOKEN_LENGTH
from forwardauth.core.credentials import AmbiguousToken, cookie_value, credential
from forwardauth.core.forwarding import (
    FORWARDED_FOR,
    OriginalRequest,
    Source,
    client_address,
    forwarded_for,
    is_trusted,
    original_request,
    refuse_untrusted,
)
from forwardauth.core.pats import PREFIX as PAT_PREFIX
from forwardauth.core.pats import digest
from forwardauth.core.policy import ALLOW_ALL_AUTHENTICATED, PAT, Effect, Object, StepUp, Subject, Verdict, decide
from forwardauth.core.principals import identity_headers, pat_headers, subject_of, subject_of_claims
from forwardauth.core.redirects import login_location
from forwardauth.core.refusals import RefusalLog, Refused, refresh_cookie_leak
from forwardauth.core.tokens import Identity, TokenError
from forwardauth.core.usernames import normalise_username
from forwardauth.http import browser
from forwardauth.http.common import BadInput, is_browser
from forwardauth.http.services import SERVICES, PatCredential, Services

log = logging.getLogger("forwardauth.web")  # one name for the HTTP layer's lines, as before

REFUSALS = RefusalLog()  # one per worker process
MISSING = "\x00missing"  # no address is this: a memo miss, where None is an unknown client


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
    verdict: Verdict | None = None,
) -> web.Response:
    """401 with a Bearer challenge (``challenge``, else the one for no or a bad token); a browser
    is also pointed at the login page. Under a rule with ``challenge: basic`` (``verdict``), a
    Basic challenge instead, for anyone: git and WebDAV clients prompt for credentials on it.

    Traefik and Caddy hand our response to the client as is, so they get a 302. nginx cannot
    pass a redirect on from auth_request, and Envoy passes only 200, so they get the 401 with
    ``Location`` for their config to use.
    """
    if verdict is not None and verdict.basic_challenge and challenge is None:
        realm = settings.site_name.replace("\\", "").replace('"', "")
        basic = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"', "Cache-Control": "no-store"}
        return web.Response(status=401, text="unauthorized\n", headers=basic)
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
    elif not trusted_sender(request.remote, services):  # no rules: only the sender is checked
        try:
            refuse_untrusted(
                request.headers, request.remote, settings.trusted_proxies, request.path.startswith(ENVOY_PREFIX)
            )
        except Refused as exc:
            raise refuse(request, exc) from None
    authorization: Sequence[str] = request.headers.getall(hdrs.AUTHORIZATION, ())
    known = services.pat_credentials.get(authorization[0]) if len(authorization) == 1 else None
    if known is not None:  # a personal access token this worker accepted: not parsed nor hashed again
        return await personal_token(request, services, known, original, verdict, authorization[0])
    try:
        given = credential(authorization, request.headers.getall(hdrs.COOKIE, ()), settings.cookie_name)
    except AmbiguousToken:
        decided.invalid_token += 1
        return unauthorized(request, settings, True, original, None, verdict)
    if given is None:
        decided.no_token += 1
        return unauthorized(request, settings, False, original, None, verdict)
    token = given[0]
    if len(token) > MAX_TOKEN_LENGTH:  # before any work, hashing it for the cache included
        decided.invalid_token += 1
        return unauthorized(request, settings, True, original, None, verdict)
    if token.startswith(PAT_PREFIX):
        user = None if given[1] is None else normalise_username(given[1])
        return await personal_token(request, services, (token, digest(token), user), original, verdict)
    now = time.time()
    claims = services.claims.get(token, now)
    if claims is None:
        try:
            claims = services.tokens.verify(token)
        except TokenError as exc:
            log.debug("token refused: %s", exc)  # why, never the token
            decided.invalid_token += 1
            return unauthorized(request, settings, True, original, None, verdict)
        services.claims.put(token, claims)
    revocations = services.revocations  # the memory first, without a coroutine; Redis when it says no
    sid, jti = claims.sid, claims.jti
    if not (revocations.remembered(sid, jti, now) or await revocations.asked(sid, jti, claims.expires_at)):
        decided.revoked += 1
        return unauthorized(request, settings, True, original, None, verdict)
    # Only a restricted rule, a sign-in requirement or a rule on the kind of token looks at the
    # token (decide() would allow the others): no Subject built, no clock read, for them.
    if verdict is not None and verdict.checks_subject:
        refused = judged(request, services, verdict, original, claims.identity, subject_of_claims(claims))
        if refused is not None:
            return refused
    decided.allowed += 1
    headers = services.answers.get(token)
    if headers is None:  # a user's, or a client's own, under the names settled at start (config.HeaderNames)
        names = settings.header_names
        headers = services.answers.remember(
            token, CIMultiDict(identity_headers(claims.identity, claims.auth, names, claims.payload))
        )
    return web.Response(status=200, headers=headers)  # (a copy: the response adds its own)


async def personal_token(
    request: web.Request,
    services: Services,
    known: PatCredential,
    original: OriginalRequest | None,
    verdict: Verdict | None,
    remembered: str | None = None,
) -> web.Response:
    """The check of a personal access token (``known``: the token, its digest, Basic's user
    normalised): its record from memory (Redis once per worker), Basic's user its owner, live
    (``is_live``), then the rule as for any token. ``remembered``: the Authorization header that
    found it in ``services.pat_credentials`` (else it is remembered there once accepted)."""
    settings, decided = services.settings, services.metrics.decisions
    token, key, user = known
    if remembered is not None and hdrs.COOKIE in request.headers and has_cookie(request, settings.cookie_name):
        decided.invalid_token += 1  # two credentials, as credential() refuses them
        return unauthorized(request, settings, True, original, None, verdict)
    now = time.time()
    claims = services.pats.get(key, now)
    if claims is None:
        claims = await resolve(services, token)
        if claims is None:
            decided.invalid_token += 1
            return unauthorized(request, settings, True, original, None, verdict)
        services.pats.put(key, claims)
    identity = claims.identity
    if user is not None and user != identity.username:
        decided.invalid_token += 1  # another user's name with the token: refused, never guessed at
        return unauthorized(request, settings, True, original, None, verdict)
    revocations, sid, jti = services.revocations, claims.sid, claims.jti  # as in auth: the memory first
    if not (revocations.remembered(sid, jti, now) or await revocations.asked(sid, jti, claims.expires_at)):
        decided.revoked += 1
        return unauthorized(request, settings, True, original, None, verdict)
    if verdict is not None and verdict.checks_subject:
        refused = judged(request, services, verdict, original, identity, subject_of(identity, None, PAT, claims.scopes))
        if refused is not None:
            return refused
    if remembered is None:
        services.pat_credentials.remember(request.headers[hdrs.AUTHORIZATION], known)
    services.last_used.note(key, original.client_ip if original is not None else client_of(request, services), now)
    decided.allowed += 1
    return web.Response(status=200, headers=pat_headers(identity, claims.scopes, settings.header_names))


def has_cookie(request: web.Request, name: str) -> bool:
    """Whether our cookie is in the request (an unreadable or doubled one counts too)."""
    try:
        return cookie_value(request.headers.getall(hdrs.COOKIE, ()), name) is not None
    except AmbiguousToken:
        return True


def trusted_sender(remote: str | None, services: Services) -> bool:
    """Whether the sender is one of our proxies (remembered per address: ``is_trusted`` hashes the
    configured networks on every call, even when its cache answers)."""
    found = services.senders.get(remote)
    if found is None:
        found = services.senders.remember(remote, is_trusted(remote, services.settings.trusted_proxies))
    return found


def client_of(request: web.Request, services: Services) -> str | None:
    """The client's address when no rules described the request (memoised: the hops parsed once)."""
    headers = request.headers
    key = (*headers.getall(FORWARDED_FOR, ()), headers.get("X-Real-IP"), request.remote)
    found = services.addresses.get(key, MISSING)
    if found is MISSING:
        found = services.addresses.remember(
            key, client_address(forwarded_for(headers), request.remote, services.settings.trusted_proxies)
        )
    return found


def judged(
    request: web.Request,
    services: Services,
    verdict: Verdict,
    original: OriginalRequest | None,
    identity: Identity,
    subject: Subject,
) -> web.Response | None:
    """The rule's answer for a valid, live token (``decide``): None allows; else the 401 of a
    step-up or the 403."""
    decided = services.metrics.decisions
    outcome = decide(verdict, subject)
    if outcome is None:
        return None
    if isinstance(outcome, StepUp):
        decided.step_up += 1
        return unauthorized(request, services.settings, True, original, outcome.challenge())
    decided.forbidden_role += 1
    return browser.forbidden(request, services.settings, original, identity, "role")
