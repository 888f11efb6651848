"""Recovery codes: ten single-use codes a user keeps on paper, for when their second factor is lost.

Each is 80 random bits shown as four groups of four base32 letters and digits; only its SHA-256
is stored (a fast hash suffices for that much entropy). A code is spent by one atomic UPDATE, so
two requests racing with the same code cannot both pass. Functions run in a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from forwardauth.stores.postgres import Connection

CODES = 10
CODE_BYTES = 10  # 80 bits: 16 base32 characters, no padding
GROUP = 4
_LENGTH = CODE_BYTES * 8 // 5
_SEPARATORS = re.compile(r"[\s\-_.]+")
_BASE32 = re.compile(r"^[a-z2-7]+$")
# Base32 has no 0, 1 or 8: read as the letters they look like.
_LOOKALIKES = str.maketrans({"0": "o", "1": "l", "8": "b"})
MAX_INPUT = 64  # longer input is no code of ours: not even hashed


def _format(raw: bytes) -> str:
    text = base64.b32encode(raw).decode().lower()
    return "-".join(text[i : i + GROUP] for i in range(0, len(text), GROUP))


def normalise(code: str) -> str | None:
    """A code as typed (any case, spaces or dashes, 0/1/8 for o/l/b) in its stored form, or ``None``."""
    if len(code) > MAX_INPUT:
        return None
    text = _SEPARATORS.sub("", code).lower().translate(_LOOKALIKES)
    return text if len(text) == _LENGTH and _BASE32.match(text) else None


def _digest(normalised: str) -> bytes:
    return hashlib.sha256(normalised.encode()).digest()


def generate(conn: Connection, user_id: str) -> list[str]:
    """Ten new codes, replacing the user's previous ones (used or not); shown once, never stored."""
    codes = [_format(secrets.token_bytes(CODE_BYTES)) for _ in range(CODES)]
    with conn.cursor() as cur:
        cur.execute("DELETE FROM recovery_codes WHERE user_id = %s", (user_id,))
        cur.executemany(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (%s, %s)",
            [(user_id, _digest(code.replace("-", ""))) for code in codes],
        )
    return codes


def use(conn: Connection, user_id: str, code: str) -> bool:
    """Spend one of the user's unused codes: ``True`` once per code, ``False`` for anything else."""
    normalised = normalise(code)
    if normalised is None:
        return False
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE recovery_codes SET used_at = now() WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
            (user_id, _digest(normalised)),
        )
        return cur.rowcount == 1


def remaining(conn: Connection, user_id: str) -> int:
    """How many unused codes the user has."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM recovery_codes WHERE user_id = %s AND used_at IS NULL", (user_id,))
        row = cur.fetchone()
    return int(row[0]) if row else 0
