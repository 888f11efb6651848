"""Passkeys (WebAuthn credentials) in PostgreSQL: several per user, each named by its user.

Kept per credential: the public key (COSE), the sign counter and the backup flags of its last
use (a counter going back means a cloned authenticator; the flags tell a synced passkey from one
bound to a device). The WebAuthn user handle is the 16 bytes of the user's UUID (``user_handle``),
so a discoverable passkey names its user without any lookup table. Functions run in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forwardauth.stores.postgres import Connection

MAX_NAME = 64
MAX_CREDENTIAL_ID = 1023  # WebAuthn: credential ids are at most 1023 bytes
_COLUMNS = (
    "credential_id, user_id::text, name, public_key, sign_count, transports, backup_eligible, backed_up,"
    " created_at, last_used_at"
)

_INSERT = (
    "INSERT INTO passkeys (credential_id, user_id, name, public_key, sign_count, transports, backup_eligible,"  # noqa: S608
    f" backed_up) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (credential_id) DO NOTHING RETURNING {_COLUMNS}"
)


@dataclass(frozen=True, slots=True)
class Passkey:
    credential_id: bytes
    user_id: str
    name: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    backup_eligible: bool
    backed_up: bool
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle of a user: their UUID's 16 bytes (no personal data in it)."""
    return uuid.UUID(user_id).bytes


def user_of_handle(handle: bytes) -> str | None:
    """The user id a user handle names, or ``None`` for one that is not ours."""
    return str(uuid.UUID(bytes=handle)) if len(handle) == 16 else None


def valid_name(name: str) -> bool:
    """A passkey name the table takes: 1 to MAX_NAME characters, not only spaces."""
    return bool(name.strip()) and len(name) <= MAX_NAME


def _passkey(row: tuple[Any, ...]) -> Passkey:
    credential_id, user_id, name, public_key, sign_count, transports, eligible, backed_up, created, used = row
    return Passkey(
        credential_id=bytes(credential_id),
        user_id=str(user_id),
        name=str(name),
        public_key=bytes(public_key),
        sign_count=int(sign_count),
        transports=tuple(transports),
        backup_eligible=bool(eligible),
        backed_up=bool(backed_up),
        created_at=created,
        last_used_at=used,
    )


def add(
    conn: Connection,
    user_id: str,
    credential_id: bytes,
    name: str,
    public_key: bytes,
    sign_count: int,
    transports: Sequence[str],
    backup_eligible: bool,
    backed_up: bool,
) -> Passkey | None:
    """Register a passkey; ``None`` when that credential is already registered (to anyone).
    ValueError for a name or credential id the table would refuse (check ``valid_name`` first)."""
    if not valid_name(name) or not 0 < len(credential_id) <= MAX_CREDENTIAL_ID:
        raise ValueError("passkey name or credential id out of bounds")
    with conn.cursor() as cur:
        cur.execute(
            _INSERT,
            (credential_id, user_id, name, public_key, sign_count, list(transports), backup_eligible, backed_up),
        )
        row = cur.fetchone()
    return _passkey(row) if row is not None else None


def of_user(conn: Connection, user_id: str) -> list[Passkey]:
    """The user's passkeys, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM passkeys WHERE user_id = %s ORDER BY created_at, credential_id",  # noqa: S608
            (user_id,),
        )
        return [_passkey(row) for row in cur.fetchall()]


def find(conn: Connection, credential_id: bytes) -> Passkey | None:
    if not 0 < len(credential_id) <= MAX_CREDENTIAL_ID:
        return None
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM passkeys WHERE credential_id = %s", (credential_id,))  # noqa: S608
        row = cur.fetchone()
    return _passkey(row) if row is not None else None


def used(conn: Connection, credential_id: bytes, sign_count: int, backed_up: bool) -> bool:
    """Record a successful use: its counter and backup state. ``False`` (nothing recorded) when
    the counter went back meanwhile (another use raced this one, or a cloned authenticator); a
    counter of 0 is an authenticator that keeps none, and stays 0."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE passkeys SET sign_count = %s, backed_up = %s, last_used_at = now()"
            " WHERE credential_id = %s AND (sign_count < %s OR (sign_count = 0 AND %s = 0))",
            (sign_count, backed_up, credential_id, sign_count, sign_count),
        )
        return cur.rowcount == 1


def rename(conn: Connection, user_id: str, credential_id: bytes, name: str) -> bool:
    """Rename one of the user's passkeys; ``False`` if it is not theirs (or the name is not valid)."""
    if not valid_name(name):
        return False
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE passkeys SET name = %s WHERE user_id = %s AND credential_id = %s", (name, user_id, credential_id)
        )
        return cur.rowcount == 1


def remove(conn: Connection, user_id: str, credential_id: bytes) -> bool:
    """Remove one of the user's passkeys; ``False`` if it is not theirs."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM passkeys WHERE user_id = %s AND credential_id = %s", (user_id, credential_id))
        return cur.rowcount == 1
