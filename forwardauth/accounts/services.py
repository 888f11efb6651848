"""What an account operation works with: the settings, the token service and the stores.

The HTTP layer's ``Services`` extends it with what only requests need (the claims cache, the
counters, the access rules); the command line builds just this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from forwardauth.config import Settings
from forwardauth.constants import RedisKeys
from forwardauth.core.cache import LiveTokens
from forwardauth.core.passwords import Passwords
from forwardauth.core.tokens import TokenService
from forwardauth.keys import KeyRing, load_ring
from forwardauth.redisurl import RedisSettings
from forwardauth.sealing import Sealer, SealError, sealing_directory
from forwardauth.stores.backchannel import BackchannelQueue
from forwardauth.stores.codes import Codes
from forwardauth.stores.links import LinkRequests
from forwardauth.stores.mail import Mailer
from forwardauth.stores.onetime import OneTime
from forwardauth.stores.pending import PendingSignIns
from forwardauth.stores.postgres import Database
from forwardauth.stores.redis import connect
from forwardauth.stores.regulation import Regulation
from forwardauth.stores.revocation import Revocations

log = logging.getLogger("forwardauth.services")


@dataclass(slots=True)
class AccountServices:
    """The stores and keys of one process (one worker, or one CLI command)."""

    settings: Settings
    tokens: TokenService
    revocations: Revocations
    db: Database
    passwords: Passwords
    regulation: Regulation
    sealer: Sealer  # TOTP secrets in PostgreSQL (keys read on first use if not at build)
    onetime: OneTime  # what may be used once (a TOTP code per time step)
    pending: PendingSignIns  # sign-ins waiting for their second factor
    codes: Codes  # OIDC authorization codes
    backchannel: BackchannelQueue  # back-channel logouts to send
    mailer: Mailer  # e-mailed links (enabled with FORWARDAUTH_SMTP_URL)
    link_requests: LinkRequests  # how often links were asked for (throttling)

    async def close(self) -> None:
        await self.revocations.close()
        self.db.close()


def build_account_services(settings: Settings, ring: KeyRing | None = None) -> AccountServices:
    """Connect nothing yet: the stores connect on first use (a down store delays no start)."""
    assert settings.database_url is not None and settings.redis_url is not None
    ring = ring or load_ring(settings)
    client = connect(RedisSettings.from_url(settings.redis_url))
    keys = RedisKeys(settings.redis_prefix)
    sealer = Sealer(sealing_directory(settings))
    if settings.second_factor != "off":
        # Read (or made) now, so workers starting together agree on the first key. A folder that
        # cannot be used (read-only, without a sealing key) is said here, and refuses TOTP only.
        try:
            sealer.load()
        except SealError as exc:
            log.warning("TOTP secrets cannot be sealed until this is fixed: %s", exc)
    return AccountServices(
        settings=settings,
        tokens=TokenService(ring, settings.issuer, settings.audience, settings.access_ttl, settings.leeway),
        revocations=Revocations(client, keys, LiveTokens() if settings.local_cache else None),
        db=Database(settings.database_url, settings.db_pool_size),
        passwords=Passwords.from_settings(settings),
        regulation=Regulation(client, keys, settings.login_max_failures, settings.login_window),
        sealer=sealer,
        onetime=OneTime(client, keys),
        pending=PendingSignIns(client, keys),
        codes=Codes(client, keys),
        backchannel=BackchannelQueue(client, keys),
        mailer=Mailer(settings),
        link_requests=LinkRequests(client, keys),
    )
