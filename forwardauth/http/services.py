"""What the handlers use, built once per worker: the account services and what only requests need."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from aiohttp import web

from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.config import Settings
from forwardauth.core.cache import ClaimsCache, Memo
from forwardauth.core.forwarding import OriginalRequest
from forwardauth.core.policy import ALLOW_ALL_AUTHENTICATED, Policy, Verdict
from forwardauth.core.policyfile import load as load_policy
from forwardauth.http.metrics import Metrics
from forwardauth.keys import KeyRing


@dataclass(slots=True)
class Services(AccountServices):
    """What the handlers use, built once per worker: the account services, and what only
    requests need."""

    claims: ClaimsCache  # verified signatures (safe always: revocation is checked apart)
    metrics: Metrics
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
        policy=load_policy(settings.policy_file) if settings.policy_file else ALLOW_ALL_AUTHENTICATED,
    )
