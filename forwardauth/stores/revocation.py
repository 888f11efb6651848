"""Live access tokens in Redis: a token passes /auth only while its key exists.

Revocation is deleting the key, so it holds for every worker and host, and the check is one
key lookup whatever the number of tokens. A session's tokens are also kept in a set, so logout
revokes every access token the session ever got, in one atomic step.

Every revocation is also published. A worker that follows the channel may answer "live" from
memory (``cache.LiveTokens``) and drops an entry the moment its revocation arrives; while it is
not subscribed it asks Redis every time, and concurrent requests share the round trips
(``livekeys.KeyBatch``: one ``MGET`` for the keys asked meanwhile).

A revocation that Redis refuses after PostgreSQL has ended the session (a logout, a replayed
refresh token) is not dropped: it is queued in the worker and retried until Redis accepts it, so
the ended session's access tokens stop passing as soon as Redis takes writes again.

Revocations are Lua scripts, not MULTI/EXEC: a Redis Cluster client refuses PUBLISH in a
transaction, and deleting a session's keys and publishing must stay one atomic step (a publisher
dying in between would leave other workers remembering a revoked token). Each script touches only
the ``{sid}`` keys of one session, so one Cluster slot; the PUBLISH inside reaches every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.core.cache import LiveTokens
from forwardauth.stores.livekeys import KeyBatch
from forwardauth.stores.redis import REDIS_DOWN, RedisClient, close, subscriber

log = logging.getLogger("forwardauth.revocation")

PING_SECONDS = 1.0  # the subscription is probed this often...
SILENCE_LIMIT = 3.0  # ...and given up (memory wiped) after this long without an answer
RETRY_SECONDS = 0.5
PRUNE_SECONDS = 60.0

# KEYS: the token, the session set. ARGV: jti, channel, message.
REVOKE_ONE = """
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
"""
# KEYS: the session set. ARGV: the token keys' prefix (ending in the session's hash tag), channel,
# message. The token keys are built here from the set's members: same hash tag, same slot.
REVOKE_SESSION = """
local members = redis.call('SMEMBERS', KEYS[1])
for _, jti in ipairs(members) do
    redis.call('DEL', ARGV[1] .. jti)
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return #members
"""


class Revocations:
    def __init__(self, client: RedisClient, keys: RedisKeys, local: LiveTokens | None = None) -> None:
        self._redis = client
        self._keys = keys
        self._channel = keys.revocations_channel()
        self.local = local
        self.lookups = 0  # live checks Redis answered (not the memory), for /metrics
        self.live_keys = KeyBatch(client)  # their round trips: ``commands``, ``keys``
        self.pending: set[str] = set()  # sessions whose revocation Redis refused: retried until done
        self._drainer: asyncio.Task[None] | None = None

    async def _eval(self, script: str, keys: list[str], args: list[str]) -> Any:
        """EVAL, routed by its keys. Not EVALSHA: on NOSCRIPT redis-py's cluster client loads the
        script on every node and fails while any node is down, even one this session is not on."""
        return await self._redis.eval(script, len(keys), *keys, *args)

    async def register(self, sid: str, jti: str, ttl: int) -> None:
        """Mark a freshly minted token live for ``ttl`` seconds."""
        session = self._keys.session_tokens(sid)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.access_token(sid, jti), b"1", ex=ttl)
            pipe.sadd(session, jti)
            # The set lives as long as the session's newest token can.
            pipe.expire(session, ttl)
            await pipe.execute()

    async def revoke(self, sid: str, jti: str) -> None:
        """Revoke one access token."""
        await self._eval(
            REVOKE_ONE,
            [self._keys.access_token(sid, jti), self._keys.session_tokens(sid)],
            [jti, self._channel, f"{sid} {jti}"],
        )
        self._forget(sid, jti)

    def _forget(self, sid: str, jti: str | None = None) -> None:
        """This worker's memory drops the revoked tokens at once; the others hear it on the
        channel (a moment later), so a request right after the revocation, here, is refused."""
        if self.local is not None:
            self.local.forget(sid, jti)

    async def revoke_sessions(self, sids: list[str]) -> None:
        for sid in sids:
            await self.revoke_session(sid)

    async def is_live(self, sid: str, jti: str, expires_at: int) -> bool:
        return self.remembered(sid, jti, time.time()) or await self.asked(sid, jti, expires_at)

    def remembered(self, sid: str, jti: str, now: float) -> bool:
        """Live by this worker's memory (kept only while it follows the revocation channel): no
        I/O and no coroutine, so /auth asks it first and awaits ``asked`` only when it says no."""
        local = self.local
        return local is not None and local.is_live(sid, jti, now)

    async def asked(self, sid: str, jti: str, expires_at: int) -> bool:
        """Live by Redis (one key of a shared MGET); remembered when the memory may keep it."""
        local = self.local
        epoch = local.epoch if local is not None else 0
        self.lookups += 1
        live = await self.live_keys.exists(self._keys.access_token(sid, jti))
        if live and local is not None:
            local.remember(sid, jti, expires_at, epoch)
        return live

    async def revoke_session(self, sid: str) -> int:
        """Revoke every access token of session ``sid``; returns how many tokens it held.

        One script reads the session set and deletes what it lists, so a token registered
        meanwhile is either in the set when it runs (and deleted) or registered after it.
        """
        token_prefix = self._keys.access_token(sid, "")
        held = await self._eval(REVOKE_SESSION, [self._keys.session_tokens(sid)], [token_prefix, self._channel, sid])
        self._forget(sid)
        return int(held)

    async def revoke_or_queue(self, sids: list[str]) -> bool:
        """Revoke sessions now, or, if Redis refuses, queue them to be revoked when it accepts
        writes again; True when all were revoked now. For revocations PostgreSQL has committed."""
        for index, sid in enumerate(sids):
            try:
                await self.revoke_session(sid)
            except REDIS_DOWN as exc:
                self._queue(sids[index:], exc)
                return False
        return True

    def _queue(self, sids: list[str], exc: BaseException) -> None:
        self.pending.update(sids)
        log.warning(
            "Redis refused a revocation (%s): %d session(s) queued, revoked when it accepts writes again",
            type(exc).__name__,
            len(self.pending),
        )
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Retry the queued revocations until none is left (one session at a time, oldest first)."""
        while self.pending:
            await asyncio.sleep(RETRY_SECONDS)
            for sid in list(self.pending):
                try:
                    await self.revoke_session(sid)
                except REDIS_DOWN:
                    break
                self.pending.discard(sid)
        log.warning("queued revocations done: Redis accepts writes again")

    async def writable(self) -> None:
        """Raise (one of REDIS_DOWN) unless Redis takes a write now: asked before a change that
        would be spent for nothing if the write after it failed (a refresh token's rotation)."""
        await self._redis.set(self._keys.write_probe(), b"1", px=1000)

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep ``local`` in step with the revocation channel until ``stop`` is set.

        (A stop event, not cancellation: redis-py's get_message can swallow a cancel.)
        """
        local = self.local
        assert local is not None
        outage_logged = False
        attempt = os.getpid()  # the workers spread over a cluster's nodes
        while not stop.is_set():
            pubsub = None
            try:
                pubsub = await subscriber(self._redis, attempt)
                attempt += 1  # the next subscription, after a loss, tries another cluster node
                await pubsub.subscribe(self._channel)
                last_heard = last_ping = time.monotonic()
                next_prune = last_heard + PRUNE_SECONDS
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    now = time.monotonic()
                    if message is not None:
                        last_heard = now
                        kind = message["type"]
                        if kind == "subscribe":
                            # Also after redis-py reconnects by itself: what was published in
                            # between is lost, so start from nothing.
                            if local.subscribed:
                                log.warning("revocation feed reconnected: local cache wiped")
                            local.reset(subscribed=True)
                            if outage_logged:
                                log.warning("revocation feed back: local cache on again")
                                outage_logged = False
                        elif kind == "message":
                            sid, _, jti = message["data"].decode().partition(" ")
                            local.forget(sid, jti or None)
                    if now - last_ping > PING_SECONDS:
                        await pubsub.ping()
                        last_ping = now
                    if now - last_heard > SILENCE_LIMIT:
                        raise TimeoutError("revocation feed silent")
                    if now > next_prune:
                        local.prune(time.time())
                        next_prune = now + PRUNE_SECONDS
            except (*REDIS_DOWN, TimeoutError) as exc:
                local.reset(subscribed=False)
                if not outage_logged:
                    log.warning("revocation feed lost (%s): checking Redis on every request", type(exc).__name__)
                    outage_logged = True
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                local.reset(subscribed=False)
                log.exception("revocation feed failed; resubscribing")
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                local.reset(subscribed=False)
                if pubsub is not None:
                    with contextlib.suppress(*REDIS_DOWN):
                        await pubsub.aclose()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
            log.error(
                "stopping with %d revocation(s) Redis never accepted: their access tokens pass until they expire",
                len(self.pending),
            )
        await close(self._redis)
