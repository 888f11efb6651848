"""What the handlers use, built once per worker: the account services and what only requests need."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict

from forwardauth.accounts.pats import LastUsed
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.config import Settings
from forwardauth.core.cache import CLAIMS_ENTRIES, ClaimsCache, Memo, PatCache
from forwardauth.core.forwarding import OriginalRequest
from forwardauth.core.policy import ALLOW_ALL_AUTHENTICATED, Policy, Verdict
from forwardauth.core.policyfile import load as load_policy
from forwardauth.http.metrics import Metrics
from forwardauth.keys import KeyRing

PatCredential = tuple[str, str, str | None]  # a personal access token, its digest, Basic's user (normalised)


@dataclass(slots=True)
class Services(AccountServices):
    """What the handlers use, built once per worker: the account services, and what only
    requests need."""

    claims: ClaimsCache  # verified signatures (safe always: revocation is checked apart)
    metrics: Metrics
    # Personal access tokens' records by digest: read from Redis once per worker (liveness is
    # still asked of revocations.is_live), and their uses, written off the request path.
    pats: PatCache
    last_used: LastUsed
    # Authorization headers whose token was accepted -> (token, digest, Basic's user normalised),
    # so a token's next request is neither parsed nor hashed (memory only, as ClaimsCache keeps
    # JWTs; never logged); and, when no rules describe requests, client addresses by their hops
    # (for last_used).
    pat_credentials: Memo[PatCredential] = field(default_factory=Memo)
    addresses: Memo[str | None] = field(default_factory=Memo)
    senders: Memo[bool] = field(default_factory=Memo)  # whether an address is a trusted proxy's
    # The 200's headers by access token (pure functions of its claims and the names settled at
    # start), so a token's next check builds no headers; bounded as ClaimsCache is.
    answers: Memo[CIMultiDict[str]] = field(default_factory=lambda: Memo(CLAIMS_ENTRIES))
    policy: Policy = ALLOW_ALL_AUTHENTICATED  # replaced whole on reload, with its memo
    verdicts: Memo[tuple[OriginalRequest, Verdict]] = field(default_factory=Memo)

    def use_policy(self, policy: Policy) -> None:
        """Swap in new rules and a memo of their own (one assignment: never rules of one with
        the memo of the other)."""
        self.policy, self.verdicts = policy, Memo()


SERVICES = web.AppKey("services", Services)


def build_services(settings: Settings, ring: KeyRing | None = None, metrics_dir: Path | None = None) -> Services:
    base = build_account_services(settings, ring)
    claims = ClaimsCache(settings.leeway)
    shared = {f.name: getattr(base, f.name) for f in fields(AccountServices)}
    return Services(
        **shared,
        claims=claims,
        metrics=Metrics(claims, base.revocations, metrics_dir),
        pats=PatCache(),
        last_used=LastUsed(base.db),
        policy=load_policy(settings.policy_file) if settings.policy_file else ALLOW_ALL_AUTHENTICATED,
    )
