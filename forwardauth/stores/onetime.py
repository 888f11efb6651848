"""Things that may happen once: a TOTP code accepted for a user and time step, and the like.

``SET NX EX`` is atomic, so two requests racing with the same code cannot both win, on any
worker or host; the key expires once the thing could no longer be presented anyway.
"""

from __future__ import annotations

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import RedisClient


class OneTime:
    """Marks in Redis of what was already used (keys from ``keys``, e.g. ``keys.otp_used``)."""

    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    async def first_use(self, key: str, ttl: int) -> bool:
        """Mark ``key`` used for ``ttl`` seconds: ``True`` the first time, ``False`` after."""
        return bool(await self.client.set(key, b"1", nx=True, ex=max(1, int(ttl))))
