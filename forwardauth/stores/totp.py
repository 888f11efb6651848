"""TOTP secrets in PostgreSQL, sealed (forwardauth.sealing) by the caller: this module never sees
a secret in the clear, so nothing here can log or leak one.

A user has at most one confirmed secret (the app in use) and at most one pending (an app being
set up). ``begin`` stores the pending one; the confirmed one keeps working until ``confirm``
replaces it with the pending one, after a code from it was checked. Functions run in a worker
thread, in the caller's transaction.
"""

from __future__ import annotations

from forwardauth.stores.postgres import Connection


def begin(conn: Connection, user_id: str, sealed: bytes) -> None:
    """Store ``sealed`` as the user's secret being set up, replacing any earlier set-up."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO totp_secrets (user_id, pending, pending_at) VALUES (%s, %s, now())"
            " ON CONFLICT (user_id) DO UPDATE SET pending = excluded.pending, pending_at = excluded.pending_at",
            (user_id, sealed),
        )


def confirm(conn: Connection, user_id: str, expected: bytes | None = None) -> bool:
    """Make the secret being set up the one in use; ``False`` when there is none, or (with
    ``expected``, the sealed value whose code was checked) when another set-up replaced it since."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE totp_secrets SET secret = pending, confirmed_at = now(), pending = NULL, pending_at = NULL"
            " WHERE user_id = %s AND pending IS NOT NULL AND (%s::bytea IS NULL OR pending = %s::bytea)",
            (user_id, expected, expected),
        )
        return cur.rowcount == 1


def _column(conn: Connection, user_id: str, column: str) -> bytes | None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {column} FROM totp_secrets WHERE user_id = %s", (user_id,))  # noqa: S608 (ours)
        row = cur.fetchone()
    return bytes(row[0]) if row is not None and row[0] is not None else None


def secret(conn: Connection, user_id: str) -> bytes | None:
    """The sealed secret in use (confirmed), if any."""
    return _column(conn, user_id, "secret")


def pending_secret(conn: Connection, user_id: str) -> bytes | None:
    """The sealed secret being set up (not confirmed yet), if any."""
    return _column(conn, user_id, "pending")


def remove(conn: Connection, user_id: str) -> bool:
    """Forget the user's secrets (in use and being set up); ``True`` if one was in use."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM totp_secrets WHERE user_id = %s RETURNING secret IS NOT NULL", (user_id,))
        row = cur.fetchone()
    return bool(row and row[0])


def all_sealed(conn: Connection, pending: bool = False) -> list[tuple[str, bytes]]:
    """Every user's sealed secret in use (``pending``: being set up), for re-sealing with a new key."""
    column = "pending" if pending else "secret"
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT user_id::text, {column} FROM totp_secrets WHERE {column} IS NOT NULL ORDER BY user_id"  # noqa: S608
        )
        return [(str(user_id), bytes(blob)) for user_id, blob in cur.fetchall()]


def reseal(conn: Connection, user_id: str, sealed: bytes, was: bytes | None = None, pending: bool = False) -> bool:
    """Replace the user's sealed secret in use (``pending``: being set up) by the same secret sealed
    anew; with ``was``, only if it is still that value (not changed by the user meanwhile)."""
    column = "pending" if pending else "secret"
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE totp_secrets SET {column} = %s WHERE user_id = %s AND {column} IS NOT NULL"  # noqa: S608
            f" AND (%s::bytea IS NULL OR {column} = %s::bytea)",
            (sealed, user_id, was, was),
        )
        return cur.rowcount == 1
