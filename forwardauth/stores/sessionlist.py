"""Live sessions, listed for the account portal (a user's own) and the admin console (everyone's).

A session is a refresh-token family (``stores.sessions``); it is live while its newest row is
unrevoked, not replaced and unexpired. That row says where it was last renewed from and when;
the family's first row when it was signed in. Read-only: ending one goes through ``sessions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from forwardauth.core.devices import storable
from forwardauth.stores.postgres import Connection

MAX_SEARCH = 200  # a console search longer than any username, address or client id finds nothing more
MAX_LIMIT, MAX_OFFSET = 500, 10**9  # a page's bounds (PostgreSQL refuses a negative or huge one)

_LIVE = "r.revoked_at IS NULL AND r.replaced_by IS NULL AND r.expires_at > now()"
_SELECT = (
    "SELECT r.family_id, r.user_id::text, u.username, r.client_id, r.parent_sid, r.user_agent, r.client_ip,"  # noqa: S608
    " (SELECT min(f.created_at) FROM refresh_tokens f WHERE f.family_id = r.family_id),"
    " r.created_at, r.expires_at, r.amr, extract(epoch FROM r.auth_time)::bigint"
    f" FROM refresh_tokens r JOIN users u ON u.id = r.user_id WHERE {_LIVE}"
)
_NEWEST = " ORDER BY r.created_at DESC, r.id DESC"


@dataclass(frozen=True, slots=True)
class LiveSession:
    sid: str
    user_id: str
    username: str
    client_id: str | None  # an OAuth2/OIDC client's session; None: signed in to forwardauth itself
    parent_sid: str | None  # the browser session an OIDC client's session was opened from
    user_agent: str | None
    client_ip: str | None  # of the sign-in, or of the last renewal
    signed_in: datetime  # first row of the family
    last_renewal: datetime  # the live row's created_at
    expires_at: datetime
    amr: tuple[str, ...]
    auth_time: int


def _session(row: tuple[Any, ...]) -> LiveSession:
    return LiveSession(
        sid=row[0],
        user_id=row[1],
        username=row[2],
        client_id=row[3],
        parent_sid=row[4],
        user_agent=row[5],
        client_ip=row[6],
        signed_in=row[7],
        last_renewal=row[8],
        expires_at=row[9],
        amr=tuple(row[10] or ()),
        auth_time=int(row[11]),
    )


def of_user(conn: Connection, user_id: str) -> list[LiveSession]:
    """The user's live sessions, the most recently renewed first."""
    with conn.cursor() as cur:
        cur.execute(f"{_SELECT} AND r.user_id = %s{_NEWEST}", (user_id,))
        return [_session(row) for row in cur.fetchall()]


def everyone(conn: Connection, search: str = "", limit: int = 50, offset: int = 0) -> list[LiveSession]:
    """Every user's live sessions, the most recently renewed first, a page at a time. ``search``
    (from a form: anything) keeps those whose username or client id contains it (any case), or
    whose address starts with it."""
    text = storable(search).strip()[:MAX_SEARCH].lower()
    with conn.cursor() as cur:
        cur.execute(
            f"{_SELECT} AND (%s = '' OR strpos(lower(u.username), %s) > 0"
            " OR strpos(lower(coalesce(r.client_id, '')), %s) > 0 OR starts_with(coalesce(r.client_ip, ''), %s))"
            f"{_NEWEST} LIMIT %s OFFSET %s",
            (text, text, text, text, max(1, min(limit, MAX_LIMIT)), max(0, min(offset, MAX_OFFSET))),
        )
        return [_session(row) for row in cur.fetchall()]


def live_owner(conn: Connection, sid: str) -> str | None:
    """The id of the user whose live session ``sid`` is, else ``None`` (unknown or ended)."""
    with conn.cursor() as cur:
        query = f"SELECT r.user_id::text FROM refresh_tokens r WHERE r.family_id = %s AND {_LIVE}"  # noqa: S608
        cur.execute(query, (storable(sid),))
        row = cur.fetchone()
    return str(row[0]) if row else None
