"""Brute-force regulation: failed logins counted in Redis over a sliding window.

Three counters per failure: the (client address, username) pair, the address, and the username.
The pair is the tightest (``max_failures``); the address may fail 4x as often (several users
behind one NAT), the username 10x. Over a limit, login answers 429 with ``Retry-After`` until the
oldest failure in the window ages out. The address is the real client's (behind a trusted proxy,
from ``X-Forwarded-For``), never the proxy's: one client must not lock everyone out.

The username counter stops an attacker spraying one account from many addresses, but on its own it
would let that attacker lock the real user out for as long as the spraying goes on. So it counts
only *unknown* clients, as OWASP's device-cookie design does: an address or a browser (its device
cookie, see http.cookies) that signed in as that user within ``KNOWN_SECONDS`` is exempt from it, and
its failures do not feed it (they still count for its pair and its address). The trade-off: a user
signing in from a new place while their name is being sprayed waits for the window, and an attacker
sharing a known address (an office NAT) is held by the pair and address limits only.

An IPv6 client holds a whole /64 (the smallest prefix a network hands out), so its address
counters are kept per /64: otherwise it would count as 2^64 clients, each with limits of its own.

The counters hash to different Redis Cluster slots; the pipelines are not transactions, so a
cluster client splits them by node (one round trip per node) and nothing needs them together.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import RedisClient

ADDRESS_FACTOR = 4
USERNAME_FACTOR = 10
KNOWN_SECONDS = 30 * 86400  # a client that signed in as a user this recently is known for that user
KNOWN_MAX = 32  # the most recent known clients kept per user


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds, when not allowed
    known: bool = False  # the client signed in as this user lately: the username counter spares it


IPV6_CLIENT_PREFIX = 64


def counted_as(address: str | None) -> str:
    """The client an address counts as: an IPv6 address by its /64, any other as it is."""
    if not address or ":" not in address:
        return address or "unknown"
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(
        ipaddress.IPv6Network((int(ip) >> (128 - IPV6_CLIENT_PREFIX) << (128 - IPV6_CLIENT_PREFIX), IPV6_CLIENT_PREFIX))
    )


def _members(address: str | None, device: str | None) -> list[str]:
    """The known-clients entries that stand for this client."""
    members = [f"ip:{address}"] if address else []
    if device:
        members.append(f"dev:{device}")
    return members


class Regulation:
    def __init__(self, client: RedisClient, keys: RedisKeys, max_failures: int, window: int) -> None:
        self._redis = client
        self._keys = keys
        self._window = window
        self._limits = (max_failures, max_failures * ADDRESS_FACTOR, max_failures * USERNAME_FACTOR)

    def _counters(self, username: str, address: str | None) -> tuple[str, str, str]:
        who = counted_as(address)
        return (
            self._keys.failures(f"pair:{who}:{username}"),
            self._keys.failures(f"ip:{who}"),
            self._keys.failures(f"user:{username}"),
        )

    async def check(self, username: str, address: str | None, device: str | None = None) -> Verdict:
        """May this client (address, and browser ``device`` id if any) try this username now?"""
        now = time.time()
        counters = self._counters(username, address)
        members = _members(address, device)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in counters:
                pipe.zremrangebyscore(key, 0, now - self._window)
                pipe.zcount(key, now - self._window, "+inf")
                pipe.zrange(key, 0, 0, withscores=True)
            for member in members:
                pipe.zscore(self._keys.known_clients(username), member)
            results = await pipe.execute()
        known = any(score is not None and score > now - KNOWN_SECONDS for score in results[len(counters) * 3 :])
        retry = 0
        for index, limit in enumerate(self._limits[:2] if known else self._limits):
            count, oldest = results[index * 3 + 1], results[index * 3 + 2]
            if count >= limit and oldest:
                retry = max(retry, int(oldest[0][1] + self._window - now) + 1)
        return Verdict(allowed=retry == 0, retry_after=retry, known=known)

    async def failed(self, username: str, address: str | None, known: bool = False) -> None:
        """Count a failure; a known client's does not count against the username."""
        now = time.time()
        counters = self._counters(username, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in counters[:2] if known else counters:
                pipe.zadd(key, {f"{now:.6f}": now})
                pipe.expire(key, self._window)
            await pipe.execute()

    async def succeeded(self, username: str, address: str | None, device: str | None = None) -> None:
        """A right password clears the pair's failures (not the address's or the username's), and
        makes this address and browser known for the user."""
        now = time.time()
        known = self._keys.known_clients(username)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._counters(username, address)[0])
            members = _members(address, device)
            if members:
                pipe.zadd(known, dict.fromkeys(members, now))
                pipe.zremrangebyscore(known, 0, now - KNOWN_SECONDS)
                pipe.zremrangebyrank(known, 0, -KNOWN_MAX - 1)
                pipe.expire(known, KNOWN_SECONDS)
            await pipe.execute()
