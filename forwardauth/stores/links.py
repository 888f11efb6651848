"""One-time links (table ``account_links``): a password reset, a first password for an account an
administrator made, an e-mail address to confirm. And how often a client may ask for one.

A link's secret is 256 random bits; only its SHA-256 is kept (a slow hash buys nothing for a
secret that cannot be guessed), so a copy of the database opens no account. ``use`` marks a link
used in the same statement that finds it (``UPDATE ... WHERE used_at IS NULL ... RETURNING``): two
requests racing with one link cannot both win. ``peek`` never changes anything: mail scanners
fetch links, and a page shown on GET must not spend one. A new link of a purpose makes the user's
earlier unused ones of that purpose useless: only the newest mail works.

The request counters are sliding windows in Redis (sorted sets, as stores.regulation keeps failed
logins), one per client address and one per login, checked before anything is looked up: the
answer must not depend on whether the account exists, and a victim's mailbox must not be flooded.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.stores.postgres import Connection
from forwardauth.stores.redis import RedisClient
from forwardauth.stores.regulation import counted_as

PURPOSES = ("reset_password", "set_password", "verify_email")
TOKEN_BYTES = 32
MAX_TOKEN = 128  # longer is no token of ours: refused before hashing


@dataclass(frozen=True, slots=True)
class Link:
    user_id: str
    purpose: str
    email: str | None  # the address to confirm (verify_email only)
    expires_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _link(row: tuple[Any, ...] | None) -> Link | None:
    return Link(user_id=row[0], purpose=row[1], email=row[2], expires_at=row[3]) if row else None


def create(conn: Connection, user_id: str, purpose: str, ttl: int, email: str | None = None) -> str:
    """A new link's token (shown or mailed once); the user's unused links of ``purpose`` stop
    working, and every link spent or expired for a week is removed."""
    assert purpose in PURPOSES, purpose
    token = secrets.token_urlsafe(TOKEN_BYTES)
    purge(conn)  # nothing else cleans the table: spent links go as new ones are made
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE account_links SET used_at = now() WHERE user_id = %s AND purpose = %s AND used_at IS NULL",
            (user_id, purpose),
        )
        cur.execute(
            "INSERT INTO account_links (token_hash, user_id, purpose, email, expires_at)"
            " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
            (_digest(token), user_id, purpose, email, ttl),
        )
    return token


def _usable(token: str, purpose: str) -> bool:
    return purpose in PURPOSES and 0 < len(token) <= MAX_TOKEN


def peek(conn: Connection, token: str, purpose: str) -> Link | None:
    """The link if it is valid (of ``purpose``, unused, unexpired), changing nothing."""
    if not _usable(token, purpose):
        return None
    with conn.cursor() as cur:
        cur.execute(
            "SELECT user_id::text, purpose, email, expires_at FROM account_links"
            " WHERE token_hash = %s AND purpose = %s AND used_at IS NULL AND expires_at > now()",
            (_digest(token), purpose),
        )
        return _link(cur.fetchone())


def use(conn: Connection, token: str, purpose: str) -> Link | None:
    """Spend the link: the link if it was valid (and is used now), else ``None``."""
    if not _usable(token, purpose):
        return None
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE account_links SET used_at = now()"
            " WHERE token_hash = %s AND purpose = %s AND used_at IS NULL AND expires_at > now()"
            " RETURNING user_id::text, purpose, email, expires_at",
            (_digest(token), purpose),
        )
        return _link(cur.fetchone())


def discard_unused(conn: Connection, user_id: str, purposes: tuple[str, ...]) -> int:
    """Make every unused link of the user for ``purposes`` useless (e.g. after a password change)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE account_links SET used_at = now() WHERE user_id = %s AND purpose = ANY(%s) AND used_at IS NULL",
            (user_id, list(purposes)),
        )
        return int(cur.rowcount)


def purge(conn: Connection, older_than: int = 7 * 86400) -> int:
    """Remove links expired or used more than ``older_than`` seconds ago (their purpose is served)."""
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM account_links WHERE coalesce(used_at, expires_at) < now() - make_interval(secs => %s)",
            (older_than,),
        )
        return int(cur.rowcount)


class LinkRequests:
    """How often links were asked for lately: per client address (its /64 for IPv6) and per login.

    Every request counts, answered or not, so the limit holds whether or not the account exists.
    """

    def __init__(
        self, client: RedisClient, keys: RedisKeys, per_address: int = 10, per_login: int = 3, window: int = 3600
    ) -> None:
        self._redis = client
        self._keys = keys
        self._limits = (per_address, per_login)
        self.window = window

    def _counters(self, login: str, address: str | None) -> tuple[str, str]:
        digest = hashlib.sha256(login.encode()).hexdigest()[:32]  # no e-mail address in a key name
        return (self._keys.failures(f"links:ip:{counted_as(address)}"), self._keys.failures(f"links:login:{digest}"))

    async def take(self, login: str, address: str | None) -> int:
        """Count this request; 0 when it may go on, else the seconds until one may (not counted then)."""
        now = time.time()
        counters = self._counters(login, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in counters:
                pipe.zremrangebyscore(key, 0, now - self.window)
                pipe.zcount(key, now - self.window, "+inf")
                pipe.zrange(key, 0, 0, withscores=True)
            results = await pipe.execute()
        retry = 0
        for index, limit in enumerate(self._limits):
            count, oldest = results[index * 3 + 1], results[index * 3 + 2]
            if count >= limit and oldest:
                retry = max(retry, int(oldest[0][1] + self.window - now) + 1)
        if retry:
            return retry
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in counters:
                pipe.zadd(key, {member: now})
                pipe.expire(key, self.window)
            await pipe.execute()
        return 0
