"""The back-channel logouts to send (OpenID Connect Back-Channel Logout 1.0), queued in Redis.

When a browser session ends, each client that had a session opened from it and registered a
back-channel URI is told, by a POST the sender (http.backchannel) makes after the session has
ended. Items hold who to tell about which session, not a logout token: the sender mints one at
each attempt, so a retry carries a fresh ``iat``/``exp``.

One sorted set, scored by when each item is next due. ``due`` claims items atomically (their
score moves a lease ahead), so two workers never send the same item at once, and an item whose
sender died comes back when the lease ends. ``done`` removes it; ``retry_later`` puts it back
with a backoff, until ``MAX_ATTEMPTS``. Items Redis refused (it was down) wait in the worker and
are written by the next ``due`` or ``enqueue``: durable enough for a courtesy the relying party
cannot count on anyway (the spec lets it be lost).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import REDIS_DOWN, RedisClient

log = logging.getLogger("forwardauth.backchannel")

LEASE_SECONDS = 60  # a claimed item comes back after this long if its sender never said
MAX_ATTEMPTS = 8
FIRST_RETRY = 5  # seconds; doubled at each attempt, up to MAX_RETRY
MAX_RETRY = 3600
MAX_KEPT = 10_000  # items kept in a worker while Redis refuses them; older ones are dropped

# KEYS: the queue. ARGV: now, how many, the lease's end. Claims due items by moving their score.
CLAIM = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, item in ipairs(items) do
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], item)
end
return items
"""


@dataclass(frozen=True, slots=True, order=True)
class Notice:
    """A client to tell that a session of one of its users ended."""

    client_id: str
    uri: str  # its registered backchannel_logout_uri
    subject: str  # the user's id (the id_token's ``sub``)
    sid: str  # the browser session that ended (the id_token's ``sid``)


@dataclass(frozen=True, slots=True)
class Item:
    """A queued notice, with its delivery so far."""

    notice: Notice
    attempts: int = 0  # failed sends so far
    next_at: float = 0.0  # when it is due (seconds since the epoch)
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    member: bytes = field(default=b"", compare=False, repr=False)  # as stored (for done/retry)


def _encode(item: Item) -> bytes:
    data = {"id": item.id, "attempts": item.attempts, **asdict(item.notice)}
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(member: bytes, score: float) -> Item | None:
    try:
        data: Any = json.loads(member)
        notice = Notice(data["client_id"], data["uri"], data["subject"], data["sid"])
        return Item(notice, int(data["attempts"]), score, str(data["id"]), member)
    except (ValueError, TypeError, KeyError):
        return None


def backoff(attempts: int) -> int:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return int(min(MAX_RETRY, FIRST_RETRY * 2 ** max(0, attempts - 1)))


class BackchannelQueue:
    """The queue under ``keys.backchannel_queue()``."""

    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self._client = client
        self._key = keys.backchannel_queue()
        self.kept: list[Item] = []  # refused by Redis: written at the next chance

    async def enqueue(self, notices: Iterable[Notice], now: float | None = None) -> int:
        """Queue ``notices`` (due at once); how many. Raises (REDIS_DOWN) if Redis refuses."""
        at = time.time() if now is None else now
        items = [Item(notice, next_at=at) for notice in dict.fromkeys(notices)]
        await self._write(items)
        return len(items)

    async def enqueue_or_keep(self, notices: Iterable[Notice], now: float | None = None) -> bool:
        """Queue ``notices``, or keep them in this worker while Redis refuses (written by the next
        ``due``); whether they are in Redis now. Never raises for Redis being down."""
        at = time.time() if now is None else now
        items = [*self.kept, *(Item(notice, next_at=at) for notice in dict.fromkeys(notices))]
        try:
            await self._write(items)
        except REDIS_DOWN as exc:
            self.kept = items[-MAX_KEPT:]
            log.warning(
                "Redis refused %d back-channel logout(s) (%s): kept to queue later", len(items), type(exc).__name__
            )
            return False
        self.kept = []
        return True

    async def _write(self, items: list[Item]) -> None:
        if items:
            await self._client.zadd(self._key, {_encode(item): item.next_at for item in items})

    async def due(self, now: float | None = None, limit: int = 50) -> list[Item]:
        """Claim up to ``limit`` items due by ``now`` (none is handed to another caller for
        ``LEASE_SECONDS``); each must then be ``done`` or ``retry_later``."""
        at = time.time() if now is None else now
        if self.kept:
            await self.enqueue_or_keep((), at)
        raw = await self._client.eval(CLAIM, 1, self._key, repr(at), str(limit), repr(at + LEASE_SECONDS))
        items = [_decode(member, at) for member in raw]
        broken = [member for member, item in zip(raw, items, strict=True) if item is None]
        if broken:  # not written by us: dropped, or it would come back forever
            await self._client.zrem(self._key, *broken)
        return [item for item in items if item is not None]

    async def done(self, item: Item) -> None:
        """Sent (or refused for good by the client): off the queue."""
        await self._client.zrem(self._key, item.member or _encode(item))

    async def retry_later(self, item: Item, now: float | None = None, delay: float | None = None) -> bool:
        """Put a failed item back, due after ``delay`` (default: the backoff of its attempts);
        ``False`` when it has had ``MAX_ATTEMPTS`` and is dropped instead."""
        at = time.time() if now is None else now
        attempts = item.attempts + 1
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key, item.member or _encode(item))
            if attempts < MAX_ATTEMPTS:
                again = replace(item, attempts=attempts, next_at=at + (backoff(attempts) if delay is None else delay))
                pipe.zadd(self._key, {_encode(again): again.next_at})
            await pipe.execute()
        return attempts < MAX_ATTEMPTS

    async def size(self) -> int:
        """Items queued in Redis (due or not)."""
        return int(await self._client.zcard(self._key))
