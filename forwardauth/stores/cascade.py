"""Sessions ending with the browser session they were opened from.

An OIDC client's tokens are a session of their own (a refresh-token family, rotating on its own
chain) whose ``parent_sid`` is the browser session the user authorized it from: one sign-in for
both kinds of app, and one sign-out. Whatever ends a browser session (a logout, RP-initiated
logout, a step-up replacing it, a replayed refresh token, a password change...) ends its
children in the same transaction, here; the caller then revokes every returned session in Redis
and queues the back-channel logouts (``accounts.changes.end_sessions``).

Children that were live tell their client (if it registered a back-channel URI) which browser
session ended: the ``sid`` of the ID tokens it received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from forwardauth.stores.backchannel import Notice
from forwardauth.stores.postgres import Connection


@dataclass(frozen=True, slots=True)
class Ended:
    """Sessions ended in PostgreSQL, for the caller to finish after the commit."""

    sids: list[str] = field(default_factory=list)  # to revoke in Redis (children included)
    notices: list[Notice] = field(default_factory=list)  # back-channel logouts to queue
    revoked: int = 0  # refresh tokens revoked (0: the sessions had ended already)

    def __add__(self, other: Ended) -> Ended:
        return Ended(
            list(dict.fromkeys([*self.sids, *other.sids])),
            list(dict.fromkeys([*self.notices, *other.notices])),
            self.revoked + other.revoked,
        )


def children(conn: Connection, sids: Sequence[str]) -> list[str]:
    """Every session opened from one of ``sids`` (live or not)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT family_id FROM refresh_tokens WHERE parent_sid = ANY(%s) ORDER BY family_id", (list(sids),)
        )
        return [str(row[0]) for row in cur.fetchall()]


def live_children(conn: Connection, sids: Sequence[str]) -> Ended:
    """The live sessions opened from ``sids`` (they may hold access tokens), and the back-channel
    logouts their ending calls for."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT r.family_id, r.client_id, c.backchannel_logout_uri, r.user_id::text, r.parent_sid"
            " FROM refresh_tokens r LEFT JOIN clients c ON c.id = r.client_id"
            " WHERE r.parent_sid = ANY(%s) AND r.revoked_at IS NULL ORDER BY r.family_id",
            (list(sids),),
        )
        rows = cur.fetchall()
    return Ended(
        list(dict.fromkeys(str(row[0]) for row in rows)),
        list(dict.fromkeys(Notice(row[1], row[2], row[3], row[4]) for row in rows if row[1] and row[2])),
    )


def user_notices(conn: Connection, user_id: str, except_sid: str | None = None) -> list[Notice]:
    """The back-channel logouts that ending every session of a user (but ``except_sid`` and its
    children) calls for: one per live child session's client and browser session."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT r.client_id, c.backchannel_logout_uri, r.user_id::text, r.parent_sid"
            " FROM refresh_tokens r JOIN clients c ON c.id = r.client_id"
            " WHERE r.user_id = %s AND r.revoked_at IS NULL AND r.parent_sid IS NOT NULL"
            " AND c.backchannel_logout_uri IS NOT NULL"
            " AND r.parent_sid IS DISTINCT FROM %s AND r.family_id IS DISTINCT FROM %s"
            " ORDER BY r.parent_sid, r.client_id",
            (user_id, except_sid, except_sid),
        )
        return [Notice(row[0], row[1], row[2], row[3]) for row in cur.fetchall()]


def owner(conn: Connection, sid: str) -> tuple[str, str] | None:
    """The id and name of the user whose session ``sid`` is, if it is known."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT r.user_id::text, u.username FROM refresh_tokens r JOIN users u ON u.id = r.user_id"
            " WHERE r.family_id = %s LIMIT 1",
            (sid,),
        )
        row = cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None


def revoke_families(conn: Connection, sids: Sequence[str], reason: str) -> int:
    """Revoke every still-valid refresh token of ``sids`` and of their children; how many."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = %s"
            " WHERE (family_id = ANY(%s) OR parent_sid = ANY(%s)) AND revoked_at IS NULL",
            (reason, list(sids), list(sids)),
        )
        return int(cur.rowcount)


def end(conn: Connection, sids: Sequence[str], reason: str) -> Ended:
    """End sessions ``sids`` and their children in PostgreSQL (no audit: the caller's).

    Their live tokens are locked first, in a statement of their own: a child being opened from
    one of them (``sessions.start`` share-locks its parent) is then committed, and seen below,
    or waits and finds its parent ended."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM refresh_tokens WHERE family_id = ANY(%s) AND revoked_at IS NULL FOR UPDATE", (list(sids),)
        )
    found = live_children(conn, sids)
    revoked = revoke_families(conn, sids, reason)
    return Ended(list(dict.fromkeys([*sids, *found.sids])), found.notices, revoked)


def revoke_client(conn: Connection, user_id: str, client_id: str, recent_seconds: int, reason: str) -> list[str]:
    """End the user's sessions with one client (its consent revoked): their refresh tokens, and
    the sessions that may hold a live access token (minted within ``recent_seconds``) for the
    caller to revoke in Redis. The user's row is locked first (``sessions``: lock order)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = %s"
            " WHERE user_id = %s AND client_id = %s AND revoked_at IS NULL",
            (reason, user_id, client_id),
        )
        cur.execute(
            "SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = %s AND client_id = %s"
            " AND created_at > now() - make_interval(secs => %s) ORDER BY family_id",
            (user_id, client_id, recent_seconds),
        )
        return [str(row[0]) for row in cur.fetchall()]
