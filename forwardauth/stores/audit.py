"""The audit trail: who logged in, failed, logged out or was revoked, kept in PostgreSQL.

Written in the same transaction as the change it records, so an event is never lost nor
recorded for something that did not happen. Read back, newest last, by ``forwardauth audit tail``,
and searched, newest first, on the admin console.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg2.extensions

from forwardauth.core.devices import storable
from forwardauth.safetext import row

EVENTS = frozenset(
    {"login_success", "login_failure", "login_throttled", "logout", "refresh", "refresh_reuse", "revoke", "user_change"}
    # second factors: a code or passkey accepted (a recovery code's use too) or refused, one set up
    # or removed by its user, all removed by an administrator
    | {"mfa_success", "mfa_failure", "mfa_enrol", "mfa_remove", "mfa_reset"}
    # OpenID Connect: a user let a client have scopes, or took that back
    | {"consent_granted", "consent_revoked"}
    # OpenID Connect: a code issued to a client for a user (or the user denied it)
    | {"authorize"}
    # the portal: a one-time link made (password reset, first password, address to confirm; the
    # purpose in the detail), a password set through one, an e-mail address confirmed through one
    | {"link_sent", "password_reset", "email_change"}
    # the admin console: an administrator's action (detail: "by" the acting administrator, "action")
    | {"admin"}
    # personal access tokens: made, revoked, used from an address not seen before for that token
    | {"pat_created", "pat_revoked", "pat_new_address"}
)


def record(
    conn: psycopg2.extensions.connection,
    event: str,
    user_id: str | None,
    username: str | None,
    client_ip: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    assert event in EVENTS, event
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO audit_events (event, user_id, username, client_ip, detail) VALUES (%s, %s, %s, %s, %s)",
            (event, user_id, username, client_ip, orjson.dumps(detail or {}).decode()),
        )


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    event: str
    user_id: str | None
    username: str | None
    client_ip: str | None
    detail: dict[str, Any]

    def line(self) -> str:
        """One line for a terminal: time, event, who, from where, detail.

        Usernames of failed logins come straight from the request: every field is escaped, so no
        value can start a new line, shift a field or send the terminal a control sequence.
        """
        detail = orjson.dumps(self.detail, option=orjson.OPT_SORT_KEYS).decode() if self.detail else None
        return row(
            self.at.isoformat(timespec="seconds"), self.event, self.username or None, self.client_ip or None, detail
        )


MAX_PAGE = 500
_COLUMNS = "SELECT id, at, event, user_id::text, username, client_ip, detail FROM audit_events"


def recent(conn: psycopg2.extensions.connection, limit: int) -> list[Event]:
    """The last ``limit`` events, oldest first (as ``tail`` shows them)."""
    with conn.cursor() as cur:
        cur.execute(f"{_COLUMNS} ORDER BY id DESC LIMIT %s", (limit,))
        return [Event(*row) for row in reversed(cur.fetchall())]


def latest_id(conn: psycopg2.extensions.connection) -> int:
    """The id of the newest event (0 when there is none): where following starts."""
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM audit_events")
        row = cur.fetchone()
        return int(row[0]) if row else 0


def after(conn: psycopg2.extensions.connection, last_id: int, limit: int = 1000) -> list[Event]:
    """Events recorded after event ``last_id``, oldest first: what ``tail --follow`` prints next."""
    with conn.cursor() as cur:
        cur.execute(f"{_COLUMNS} WHERE id > %s ORDER BY id LIMIT %s", (last_id, limit))
        return [Event(*row) for row in cur.fetchall()]


def search(
    conn: psycopg2.extensions.connection,
    *,
    username: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Event]:
    """Events matching every filter given, newest first (the console's audit page): ``username``
    exactly but in any case, ``event`` one of EVENTS, ``since`` <= at < ``until``, and only those
    older than event ``before_id`` (the next page). Bounds a form may send are kept in range."""
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    if username is not None:
        where.append("lower(username) = lower(%s)")
        args.append(storable(username))  # from a form
    for clause, value in (("event = %s", event), ("at >= %s", since), ("at < %s", until), ("id < %s", before_id)):
        if value is not None:
            where.append(clause)
            args.append(value)
    with conn.cursor() as cur:
        cur.execute(
            f"{_COLUMNS} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
            (*args, max(1, min(limit, MAX_PAGE))),
        )
        return [Event(*row) for row in cur.fetchall()]
