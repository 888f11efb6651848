"""Authorization requests waiting for the browser (to sign in, sign in again, step up or consent),
kept in Redis for a few minutes under a random id.

The browser comes back with only the id (``/oauth/authorize?resume=<id>``), so what it was asked
cannot be edited on the way: a ``prompt=login`` the person at the keyboard removed from the URL,
or an older ``reauth_after``, would let a sign-in pass that was never made again. A consent form
posts the id of its own request, bound to the session it was shown to; ``take`` reads and
deletes at once, so a consent is answered once. Ids are never logged.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from forwardauth.constants import RedisKeys
from forwardauth.stores.redis import RedisClient

INTERACTION_TTL = 600  # time to sign in (with a second factor, or enrolling one) and come back
ID_BYTES = 32
MAX_ID = 64


@dataclass(frozen=True, slots=True)
class Interaction:
    """An authorization request as the client sent it, and what answering it has proved so far."""

    params: dict[str, str]  # parsed again on resume (the client may have changed meanwhile)
    reauth_after: int | None = None  # a sign-in at or after this time answers prompt=login and max_age...
    stale_sid: str | None = None  # ...in another session than this one, held when the browser was sent
    sid: str | None = None  # a consent page: the browser session it was shown to
    scopes: tuple[str, ...] = ()  # a consent page: the scopes it listed


def _encode(interaction: Interaction) -> bytes:
    data = {
        "params": interaction.params,
        "reauth_after": interaction.reauth_after,
        "stale_sid": interaction.stale_sid,
        "sid": interaction.sid,
        "scopes": list(interaction.scopes),
    }
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(raw: bytes | str | None) -> Interaction | None:
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
        params = {str(k): str(v) for k, v in data["params"].items()}
        reauth_after = data["reauth_after"]
        stale_sid = data["stale_sid"]
        sid = data["sid"]
        scopes = tuple(str(s) for s in data["scopes"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not (reauth_after is None or isinstance(reauth_after, int)) or not all(
        value is None or isinstance(value, str) for value in (sid, stale_sid)
    ):
        return None
    return Interaction(params, reauth_after, stale_sid, sid, scopes)


def could_be_one(request_id: str) -> bool:
    return bool(request_id) and len(request_id) <= MAX_ID


class Interactions:
    """Waiting authorization requests, each under ``keys.authorize_request(id)`` until taken or expired."""

    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def put(self, interaction: Interaction, ttl: int = INTERACTION_TTL) -> str:
        request_id = secrets.token_urlsafe(ID_BYTES)
        await self._client.set(self._keys.authorize_request(request_id), _encode(interaction), ex=ttl)
        return request_id

    async def get(self, request_id: str) -> Interaction | None:
        """Left in place: the browser may come back to it more than once (a reload, a second tab)."""
        if not could_be_one(request_id):
            return None
        return _decode(await self._client.get(self._keys.authorize_request(request_id)))

    async def take(self, request_id: str) -> Interaction | None:
        """Read and delete at once (GETDEL): a consent form is answered once."""
        if not could_be_one(request_id):
            return None
        return _decode(await self._client.getdel(self._keys.authorize_request(request_id)))
