"""Live access tokens in Redis: a token passes /auth only while its key exists.

Revocation is deleting the key, so it holds for every worker and host, and the check is one
``EXISTS`` whatever the number of tokens. A session's tokens are also kept in a set, so logout
revokes every access token the session ever got, in one transaction.

Every revocation is also published. A worker that follows the channel may answer "live" from
memory (``cache.LiveTokens``) and drops an entry the moment its revocation arrives; while it is
not subscribed it asks Redis every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from .cache import LiveTokens
from .connections import REDIS_DOWN
from .constants import RedisKeys

log = logging.getLogger("forwardauth.revocation")

PING_SECONDS = 1.0  # the subscription is probed this often...
SILENCE_LIMIT = 3.0  # ...and given up (memory wiped) after this long without an answer
RETRY_SECONDS = 0.5
PRUNE_SECONDS = 60.0


class Revocations:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys, local: LiveTokens | None = None) -> None:
        self._redis = client
        self._keys = keys
        self._channel = keys.revocations_channel()
        self.local = local

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
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.access_token(sid, jti))
            pipe.srem(self._keys.session_tokens(sid), jti)
            pipe.publish(self._channel, f"{sid} {jti}")
            await pipe.execute()

    async def revoke_sessions(self, sids: list[str]) -> None:
        for sid in sids:
            await self.revoke_session(sid)

    async def is_live(self, sid: str, jti: str, expires_at: int) -> bool:
        local = self.local
        if local is not None and local.is_live(sid, jti, time.time()):
            return True
        epoch = local.epoch if local is not None else 0
        live = bool(await self._redis.exists(self._keys.access_token(sid, jti)))
        if live and local is not None:
            local.remember(sid, jti, expires_at, epoch)
        return live

    async def revoke_session(self, sid: str) -> int:
        """Revoke every access token of session ``sid``; returns how many tokens it held.

        The session set is WATCHed, so a token registered meanwhile makes the transaction
        retry instead of surviving the revocation.
        """
        session = self._keys.session_tokens(sid)
        removed = 0

        async def revoke(pipe: Pipeline) -> None:
            nonlocal removed
            members = await pipe.smembers(session)
            keys = [self._keys.access_token(sid, m.decode() if isinstance(m, bytes) else m) for m in members]
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(session, *keys)
            pipe.publish(self._channel, sid)
            removed = len(keys)

        await self._redis.transaction(revoke, session)
        return removed

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep ``local`` in step with the revocation channel until ``stop`` is set.

        (A stop event, not cancellation: redis-py's get_message can swallow a cancel.)
        """
        local = self.local
        assert local is not None
        outage_logged = False
        while not stop.is_set():
            pubsub = self._redis.pubsub()
            try:
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
                with contextlib.suppress(*REDIS_DOWN):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
