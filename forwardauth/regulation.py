"""Brute-force regulation: failed logins counted in Redis over a sliding window.

Three counters per failure: the (client address, username) pair, the address, and the username.
The pair is the tightest (``max_failures``); the address may fail 4x as often (several users
behind one NAT), the username 10x (so an attacker spraying from many addresses cannot lock the
real user out for long, and never longer than the window). Over a limit, login answers 429 with
``Retry-After`` until the oldest failure in the window ages out.

The three counters hash to different Redis Cluster slots; the pipelines are not transactions, so
a cluster client splits them by node (one round trip per node) and nothing needs them together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .connections import RedisClient
from .constants import RedisKeys

ADDRESS_FACTOR = 4
USERNAME_FACTOR = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds, when not allowed


class Regulation:
    def __init__(self, client: RedisClient, keys: RedisKeys, max_failures: int, window: int) -> None:
        self._redis = client
        self._keys = keys
        self._window = window
        self._limits = (max_failures, max_failures * ADDRESS_FACTOR, max_failures * USERNAME_FACTOR)

    def _counters(self, username: str, address: str | None) -> tuple[str, str, str]:
        who = address or "unknown"
        return (self._keys.failures(f"pair:{who}:{username}"), self._keys.failures(f"ip:{who}"),
                self._keys.failures(f"user:{username}"))

    async def check(self, username: str, address: str | None) -> Verdict:
        """May this address try this username now?"""
        now = time.time()
        counters = self._counters(username, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in counters:
                pipe.zremrangebyscore(key, 0, now - self._window)
                pipe.zcount(key, now - self._window, "+inf")
                pipe.zrange(key, 0, 0, withscores=True)
            results = await pipe.execute()
        retry = 0
        for index, limit in enumerate(self._limits):
            count, oldest = results[index * 3 + 1], results[index * 3 + 2]
            if count >= limit and oldest:
                retry = max(retry, int(oldest[0][1] + self._window - now) + 1)
        return Verdict(allowed=retry == 0, retry_after=retry)

    async def failed(self, username: str, address: str | None) -> None:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._counters(username, address):
                pipe.zadd(key, {f"{now:.6f}": now})
                pipe.expire(key, self._window)
            await pipe.execute()

    async def succeeded(self, username: str, address: str | None) -> None:
        """A right password clears the pair's failures (not the address's or the username's)."""
        await self._redis.delete(self._counters(username, address)[0])
