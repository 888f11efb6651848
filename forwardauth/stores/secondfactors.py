"""What second factors a user has, and taking them all away (an administrator's reset).

A reset is for a user who lost their factors, or whose account was taken over: it removes the
TOTP secret, the passkeys and the recovery codes, and ends every session, since each of them may
have been opened by whoever holds the lost factor. Functions run in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from forwardauth.stores.audit import record
from forwardauth.stores.backchannel import Notice
from forwardauth.stores.postgres import Connection
from forwardauth.stores.sessions import revoke_user

# Sessions that minted an access token this recently may still hold a live one (see revoke_user);
# a day covers any access-token lifetime.
RECENT_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class Enrolled:
    totp: bool  # a confirmed authenticator app
    passkeys: int
    recovery_codes: int  # unused ones

    @property
    def any(self) -> bool:
        """The user has a second factor (recovery codes alone are a fallback, not one)."""
        return self.totp or self.passkeys > 0


def enrolled(conn: Connection, user_id: str) -> Enrolled:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM totp_secrets WHERE user_id = %s AND secret IS NOT NULL),"
            " (SELECT count(*) FROM passkeys WHERE user_id = %s),"
            " (SELECT count(*) FROM recovery_codes WHERE user_id = %s AND used_at IS NULL)",
            (user_id, user_id, user_id),
        )
        row = cur.fetchone()
    assert row is not None
    return Enrolled(totp=bool(row[0]), passkeys=int(row[1]), recovery_codes=int(row[2]))


@dataclass(frozen=True, slots=True)
class Reset:
    removed: int  # factors removed: TOTP secrets, passkeys and recovery codes (used or not)
    sids: list[str]  # sessions that may hold a live access token: for the caller to revoke in Redis
    notices: tuple[Notice, ...] = ()  # back-channel logouts for the caller to queue (stores.cascade)


def reset(conn: Connection, user_id: str, address: str | None, by: str | None, username: str | None = None) -> Reset:
    """Remove all the user's second factors and end their sessions (PostgreSQL), audited as
    ``mfa_reset`` (``by``: who asked, e.g. "cli"). The caller revokes ``sids`` in Redis."""
    before = enrolled(conn, user_id)
    removed = 0
    with conn.cursor() as cur:
        for table in ("totp_secrets", "passkeys", "recovery_codes"):
            cur.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))  # noqa: S608 (our names)
            removed += cur.rowcount
    ended = revoke_user(conn, user_id, RECENT_SECONDS, address, reason="mfa_reset")
    sids = ended.sids
    record(
        conn,
        "mfa_reset",
        user_id,
        username,  # for `audit tail`, which shows names
        address,
        {
            "by": by,
            "totp": before.totp,
            "passkeys": before.passkeys,
            "recovery_codes": before.recovery_codes,
            "sessions": len(sids),
        },
    )
    return Reset(removed=removed, sids=sids, notices=tuple(ended.notices))
