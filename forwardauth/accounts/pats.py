"""Personal access tokens: made, listed, revoked, looked up for /auth, written again to Redis.

PostgreSQL is the truth (``stores.pats``); each live token also has, in Redis, a record of what
/auth needs (``stores.patrecords``) and a registration as the session ``pat-<id>`` in the
revocation store. /auth reads the record (``resolve``, no PostgreSQL) and asks
``revocations.is_live`` as for any access token, so a revocation reaches every worker at once
through the same channel. ``sync`` writes every live token to Redis again after Redis lost data.

Creating writes PostgreSQL first, then Redis: a token is never live in Redis without its row. A
revocation of the user's tokens that commits while a token is being made (a disable) could run
its Redis part before this token's registration: the row is read again after the registration,
and a token found revoked is revoked in Redis once more. ``sync`` does the same.

Last use: ``LastUsed`` keeps, per worker, the uses seen and writes them at most once a minute per
token, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from forwardauth.accounts.changes import AccountError
from forwardauth.accounts.services import AccountServices
from forwardauth.core.pats import PatClaims, check_name, check_scopes, check_ttl, digest, looks_like, new_token, sid_of
from forwardauth.core.problems import Problem
from forwardauth.core.usernames import normalise_username
from forwardauth.stores import pats, users
from forwardauth.stores.patrecords import PatRecords
from forwardauth.stores.pats import PatError, PatInfo
from forwardauth.stores.postgres import POSTGRES_DOWN, Connection, Database
from forwardauth.stores.redis import REDIS_DOWN

__all__ = [
    "LastUsed",
    "PatClaims",
    "PatError",
    "PatInfo",
    "RedisUnavailable",
    "create",
    "list_for",
    "resolve",
    "revoke",
    "sync",
]

log = logging.getLogger("forwardauth.pats")

FLUSH_SECONDS = 60.0  # last-used times reach PostgreSQL at most this often per token (and worker)
MAX_PENDING = 10_000  # tokens whose uses a worker keeps between flushes
MAX_ADDRESSES = 8  # addresses kept per token between flushes


class RedisUnavailable(AccountError):
    """Redis refused: the message says what was done and what to do (a 503, not the caller's fault)."""


def records(services: AccountServices) -> PatRecords:
    """The records store on the services' Redis client and key layout."""
    return PatRecords(services.onetime.client, services.onetime.keys)


def _find(conn: Connection, username: str, lock: bool = False) -> users.User:
    user = users.find(conn, username)
    if user is not None and lock:
        user = users.get(conn, user.id, lock=True)
    if user is None:
        raise users.UserError(f"no user {normalise_username(username)!r}")
    return user


def _create_in_db(
    conn: Connection,
    username: str,
    name: str,
    token_digest: str,
    scopes: tuple[str, ...],
    ttl: int,
    created_by: str,
    client_ip: str | None,
) -> tuple[pats.PatInfo, users.User]:
    user = _find(conn, username, lock=True)
    if user.disabled:
        raise PatError("%(user)s is disabled: no token can be made for them", user=user.username)
    return pats.create(conn, user, name, token_digest, scopes, ttl, created_by, client_ip), user


async def _publish(services: AccountServices, token_digest: str, claims: PatClaims, again: bool = False) -> None:
    """Register the token live in Redis and write its record, both until it expires. ``again``
    (a sync): a record still there is kept, so a token keeps the roles it was made with."""
    ttl = max(1, claims.expires_at - int(time.time()))
    await services.revocations.register(claims.sid, claims.jti, ttl)
    await records(services).put(token_digest, claims, ttl, missing_only=again)


async def _withdraw(services: AccountServices, sids: Sequence[str], digests: Sequence[str]) -> None:
    """Revoke tokens in Redis (announced to every worker) and delete their records."""
    await services.revocations.revoke_sessions(list(sids))
    await records(services).delete(*digests)


async def create(
    services: AccountServices,
    username: str,
    name: str,
    scopes: Sequence[str],
    ttl: int,
    created_by: str,
    client_ip: str | None = None,
) -> tuple[PatInfo, str]:
    """Make a token for user ``username``: (what may be shown of it, the token, shown once).

    ``PatError`` for a bad name, scopes or lifetime (``ttl`` seconds, at most
    FORWARDAUTH_PAT_MAX_TTL), a name the user already has, or a disabled user;
    ``users.UserError`` for no such user; ``RedisUnavailable`` when Redis refuses (nothing usable kept).
    """
    try:
        name, checked, ttl = (
            check_name(name),
            check_scopes(tuple(scopes)),
            check_ttl(ttl, services.settings.pat_max_ttl),
        )
    except Problem as exc:
        raise PatError(exc.message, **exc.values) from None
    try:
        await services.revocations.writable()
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"Redis is unreachable ({type(exc).__name__}): no token was made") from None
    token = new_token()
    token_digest = digest(token)
    info, user = await services.db.run(_create_in_db, username, name, token_digest, checked, ttl, created_by, client_ip)
    claims = PatClaims(info.sid, info.id, user.identity, info.scopes, int(info.expires_at.timestamp()))
    try:
        await _publish(services, token_digest, claims)
    except REDIS_DOWN as exc:
        await services.db.run(pats.revoke, user, info.id, "redis_unavailable", client_ip)
        raise RedisUnavailable(
            f"Redis became unreachable ({type(exc).__name__}): the token was revoked unused; make it again"
        ) from None
    if not await services.db.run(pats.live, [info.id]):  # revoked meanwhile (see the module's docstring)
        await _withdraw(services, [info.sid], [token_digest])
        raise PatError("the tokens of %(user)s were revoked while this one was made", user=user.username)
    return info, token


async def list_for(services: AccountServices, username: str) -> list[PatInfo]:
    """Every token of the user (revoked and expired ones too), oldest first."""

    def query(conn: Connection) -> list[PatInfo]:
        return pats.of_user(conn, _find(conn, username).id)

    return await services.db.run(query)


def _revoke_in_db(
    conn: Connection, username: str, token_id: str, by: str, client_ip: str | None
) -> tuple[pats.PatInfo, str] | None:
    return pats.revoke(conn, _find(conn, username), token_id, by, client_ip)


async def revoke(
    services: AccountServices, username: str, token_id: str, by: str, client_ip: str | None = None
) -> bool:
    """Revoke token ``token_id`` of ``username`` (audited ``pat_revoked`` with ``by``), in
    PostgreSQL then in Redis, where every worker forgets it at once. False: the user has no such
    token. Revoking a revoked token again revokes it in Redis again (after Redis refused)."""
    try:
        await services.revocations.writable()
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"Redis is unreachable ({type(exc).__name__}): nothing was revoked") from None
    found = await services.db.run(_revoke_in_db, username, token_id, by, client_ip)
    if found is None:
        return False
    info, token_digest = found
    try:
        await _withdraw(services, [info.sid], [token_digest])
    except REDIS_DOWN as exc:
        raise RedisUnavailable(
            f"the token is revoked in PostgreSQL, but Redis became unreachable ({type(exc).__name__}): "
            "it may pass until Redis is back and this is run again"
        ) from None
    return True


async def resolve(services: AccountServices, token: str) -> PatClaims | None:
    """The claims of the record of ``token`` (Redis, never PostgreSQL); None when it is not a
    token's shape, has no record or has expired. Whether it is *live* is for the caller to ask:
    ``revocations.is_live(claims.sid, claims.jti, claims.expires_at)``, as for any access token."""
    if not looks_like(token):
        return None
    claims = await records(services).get(digest(token))
    if claims is None or claims.expires_at <= time.time():
        return None
    return claims


async def sync(services: AccountServices) -> int:
    """Write every live token's registration and record to Redis again (after Redis lost data);
    how many. Tokens revoked while this ran are revoked in Redis again afterwards, and the records
    revoked tokens left behind are deleted."""
    await records(services).delete(*await services.db.run(pats.revoked_digests))
    tokens = await services.db.run(pats.live)
    for token in tokens:
        claims = PatClaims(sid_of(token.id), token.id, token.identity, token.scopes, token.expires_at)
        await _publish(services, token.digest, claims, again=True)
    still = {t.id for t in await services.db.run(pats.live, [t.id for t in tokens])}
    gone = [t for t in tokens if t.id not in still]
    if gone:
        await _withdraw(services, [sid_of(t.id) for t in gone], [t.digest for t in gone])
    return len(tokens) - len(gone)


@dataclass(slots=True)
class _Seen:
    at: float
    address: str | None
    addresses: dict[str, None] = field(default_factory=dict)  # ordered, bounded by MAX_ADDRESSES


class LastUsed:
    """Per worker: the uses of tokens since the last flush, written at most once a minute per token.

    ``note`` is on the /auth path and only touches memory; ``run`` (a background task of the
    worker) flushes; a flush PostgreSQL refuses is kept for the next one.
    """

    def __init__(self, db: Database, interval: float = FLUSH_SECONDS, max_tokens: int = MAX_PENDING) -> None:
        self._db = db
        self._interval = interval
        self._max = max_tokens
        self._pending: dict[str, _Seen] = {}
        self.dropped = 0  # uses not kept: too many tokens between two flushes

    def note(self, token_digest: str, address: str | None, now: float) -> None:
        seen = self._pending.get(token_digest)
        if seen is None:
            if len(self._pending) >= self._max:
                self.dropped += 1
                return
            seen = self._pending[token_digest] = _Seen(now, address)
        elif now >= seen.at:
            seen.at, seen.address = now, address
        if address is not None and address not in seen.addresses and len(seen.addresses) < MAX_ADDRESSES:
            seen.addresses[address] = None

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write what was noted; how many uses from new addresses were audited."""
        if not self._pending:
            return 0
        taken, self._pending = self._pending, {}
        # In one order on every worker: two flushes locking the same tokens never deadlock.
        uses = [pats.Use(d, s.at, s.address, tuple(s.addresses)) for d, s in sorted(taken.items())]
        try:
            return await self._db.run(pats.note_uses, uses)
        except POSTGRES_DOWN as exc:
            for token_digest, seen in taken.items():  # kept for the next flush (newer notes win)
                self._pending.setdefault(token_digest, seen)
            log.warning("last use of %d token(s) not recorded yet: PostgreSQL refused (%s)", len(taken), exc)
            return 0

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval`` until ``stop`` is set, then once more (also when it was set
        before this started: what was noted is written)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("recording the last use of tokens failed")
            if stop.is_set():
                return
