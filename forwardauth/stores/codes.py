"""OAuth2 authorization codes in Redis: single-use, short-lived, bound to what was authorized.

A code is 256 random bits handed to the browser once; Redis keeps what it stands for under its
SHA-256, so a copy of Redis holds no code that could be redeemed. Redeeming reads and deletes at
once (one script: GETDEL, then a "spent" mark), so a code is exchanged once, on whichever
worker gets it first.

A code presented again means it leaked (RFC 6749 4.1.2): what its first redemption issued is
revoked. The spent mark (kept ``SPENT_TTL``) records the session that redemption opened
(``mark_issued``) and whether the code came back (``spent``), in either order: a replay racing
the first exchange, before its session is known, is seen when the session is marked.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import RedisClient

CODE_TTL = 60  # seconds an authorization code may wait for its exchange
SPENT_TTL = 600  # how long a redeemed code is remembered, to catch its replay
CODE_BYTES = 32
MAX_CODE = 128  # a longer code is none of ours: not looked up

# KEYS: the code, its spent mark (one hash tag: one Cluster slot). ARGV: the mark's lifetime.
REDEEM = """
local value = redis.call('GETDEL', KEYS[1])
if value then
    redis.call('HSET', KEYS[2], 'spent', '1')
    redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return value
"""
# KEYS: the spent mark. Returns nil (never redeemed, or long ago), else the session ('' if not yet known).
REPLAYED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return false
end
redis.call('HSET', KEYS[1], 'replayed', '1')
return redis.call('HGET', KEYS[1], 'sid') or ''
"""
# KEYS: the spent mark. ARGV: the session. Returns 1 unless the code was replayed meanwhile.
MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 1
end
redis.call('HSET', KEYS[1], 'sid', ARGV[1])
if redis.call('HGET', KEYS[1], 'replayed') then
    return 0
end
return 1
"""


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """What the user authorized, for the token endpoint to check and honour."""

    client_id: str
    redirect_uri: str
    user_id: str
    username: str
    scope: str
    nonce: str | None
    code_challenge: str | None  # S256 (RFC 7636); None for a confidential client not using PKCE
    sid: str  # the browser session it was issued from (the id_token's sid; the child's parent)
    amr: tuple[str, ...]
    auth_time: int
    issued_at: int


def _encode(code: AuthorizationCode) -> bytes:
    return json.dumps(asdict(code), separators=(",", ":")).encode()


def _decode(raw: bytes | str | None) -> AuthorizationCode | None:
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
        return AuthorizationCode(**{**data, "amr": tuple(data["amr"])})
    except (ValueError, TypeError, KeyError):
        return None


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _could_be_one(code: str) -> bool:
    return bool(code) and len(code) <= MAX_CODE


class Codes:
    """Authorization codes under ``keys.authorization_code``, spent marks under ``keys.spent_code``."""

    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def issue(self, code: AuthorizationCode, ttl: int = CODE_TTL) -> str:
        """Store ``code`` for ``ttl`` seconds; the code to hand out."""
        value = secrets.token_urlsafe(CODE_BYTES)
        await self._client.set(self._keys.authorization_code(_digest(value)), _encode(code), ex=ttl)
        return value

    async def redeem(self, code: str) -> AuthorizationCode | None:
        """What the code stands for, once; ``None`` if unknown, expired or already redeemed
        (then ``spent`` says whether it was redeemed, and into what)."""
        if not _could_be_one(code):
            return None
        digest = _digest(code)
        keys = [self._keys.authorization_code(digest), self._keys.spent_code(digest)]
        raw = await self._client.eval(REDEEM, len(keys), *keys, str(SPENT_TTL))
        return _decode(raw)

    async def spent(self, code: str) -> str | None:
        """For a code ``redeem`` refused: ``None`` if it was never redeemed (or long ago); else
        the session its redemption opened, ``""`` while not yet known (``mark_issued`` will
        then say it was replayed). Marks the code replayed."""
        if not _could_be_one(code):
            return None
        key = self._keys.spent_code(_digest(code))
        raw = await self._client.eval(REPLAYED, 1, key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def mark_issued(self, code: str, family_sid: str) -> bool:
        """Record the session the code's redemption opened; ``False`` when the code was
        presented again meanwhile: the caller revokes that session (and hands nothing out)."""
        key = self._keys.spent_code(_digest(code))
        return bool(int(await self._client.eval(MARK, 1, key, family_sid)))
