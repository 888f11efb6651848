"""Live access tokens in Redis: a token passes /auth only while its key exists.

Revocation is deleting the key, so it is immediate for every worker and host, and the check on
the hot path is one ``EXISTS`` whatever the number of tokens. A session's tokens are also kept
in a set, so logout revokes every access token the session ever got, in one transaction.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from .constants import RedisKeys


class Revocations:
    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys

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
            await pipe.execute()

    async def revoke_sessions(self, sids: list[str]) -> None:
        for sid in sids:
            await self.revoke_session(sid)

    async def is_live(self, sid: str, jti: str) -> bool:
        return bool(await self._redis.exists(self._keys.access_token(sid, jti)))

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
            removed = len(keys)

        await self._redis.transaction(revoke, session)
        return removed

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
