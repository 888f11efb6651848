"""Personal access tokens' records in Redis: what /auth needs of a live token, by its digest.

Written at creation (and by ``token sync``) with the token's remaining lifetime, so a record goes
at the token's expiry by itself. A record says who the token is for, not that it is live: that
is the revocation store's ``pat-<id>`` session (``Revocations.is_live``), which every revocation
deletes and announces. A record left behind by a revocation is therefore refused all the same.
"""

from __future__ import annotations

from forwardauth.constants import RedisKeys
from forwardauth.core.pats import PatClaims, from_record, to_record
from forwardauth.stores.redis import RedisClient


class PatRecords:
    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    async def put(self, digest: str, claims: PatClaims, ttl: int, missing_only: bool = False) -> None:
        """Write the record for ``ttl`` seconds; ``missing_only``: keep one that is there."""
        await self.client.set(self.keys.pat_record(digest), to_record(claims), ex=max(1, ttl), nx=missing_only)

    async def get(self, digest: str) -> PatClaims | None:
        """The record's claims; ``None`` when there is none (or it is not a record's shape)."""
        data = await self.client.get(self.keys.pat_record(digest))
        return from_record(data) if isinstance(data, bytes) else None

    async def delete(self, *digests: str) -> None:
        if not digests:
            return
        async with self.client.pipeline(transaction=False) as pipe:  # one DEL a key: a Cluster routes each
            for digest in digests:
                pipe.delete(self.keys.pat_record(digest))
            await pipe.execute()
