"""Sign-ins between their first factor and their second, kept in Redis for a few minutes.

The browser holds only the id (256 random bits, in a cookie); what the password proved stays
here, so nothing the browser sends can change whom it is signing in as. ``take`` reads and
deletes at once (GETDEL): a pending sign-in completes once, on whichever worker gets it first.
Ids are never logged.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import RedisClient

PENDING_TTL = 300
ID_BYTES = 32
MAX_ID = 64  # a longer id is none of ours: not looked up


@dataclass(frozen=True, slots=True)
class Pending:
    """What a pending sign-in has proved so far, and where it goes next."""

    user_id: str
    username: str
    amr: tuple[str, ...]  # the methods already used (a password, or a session's when stepping up)
    auth_time: int  # when the user last proved who they are (seconds since the epoch)
    rd: str = ""  # where to send the browser afterwards (already checked by the caller)
    replaces_sid: str | None = None  # a session stepping up: ended when the new one opens
    must_enrol: bool = False  # a second factor is required and the user has none: enrol first
    new_device: bool = False  # the browser asked for a device cookie (see accounts.signin)
    challenge: str | None = None  # a WebAuthn challenge id issued for this sign-in


def _encode(pending: Pending) -> bytes:
    return json.dumps(asdict(pending), separators=(",", ":")).encode()


def _decode(raw: bytes | str | None) -> Pending | None:
    """A stored pending sign-in; ``None`` for nothing, or anything not written by ``_encode``."""
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
        pending = Pending(**{**data, "amr": tuple(data["amr"])})
    except (ValueError, TypeError, KeyError):
        return None
    return pending


def _could_be_one(pending_id: str) -> bool:
    return bool(pending_id) and len(pending_id) <= MAX_ID


class PendingSignIns:
    """Pending sign-ins in Redis, each under ``keys.pending_signin(id)`` until taken or expired."""

    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def put(self, pending: Pending, ttl: int = PENDING_TTL) -> str:
        """Store ``pending`` for ``ttl`` seconds; returns its new id."""
        pending_id = secrets.token_urlsafe(ID_BYTES)
        await self._client.set(self._keys.pending_signin(pending_id), _encode(pending), ex=ttl)
        return pending_id

    async def get(self, pending_id: str) -> Pending | None:
        """The pending sign-in, left in place (a page showing it); ``None`` if gone or unknown."""
        if not _could_be_one(pending_id):
            return None
        raw = await self._client.get(self._keys.pending_signin(pending_id))
        return _decode(raw)

    async def replace(self, pending_id: str, pending: Pending) -> bool:
        """Update a pending sign-in still there, keeping its expiry; ``False`` if it is gone."""
        if not _could_be_one(pending_id):
            return False
        done = await self._client.set(self._keys.pending_signin(pending_id), _encode(pending), xx=True, keepttl=True)
        return bool(done)

    async def take(self, pending_id: str) -> Pending | None:
        """Read and delete at once: only one caller ever completes a pending sign-in."""
        if not _could_be_one(pending_id):
            return None
        raw = await self._client.getdel(self._keys.pending_signin(pending_id))
        return _decode(raw)
