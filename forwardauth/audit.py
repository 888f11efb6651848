"""The audit trail: who logged in, failed, logged out or was revoked, kept in PostgreSQL.

Written in the same transaction as the change it records, so an event is never lost nor
recorded for something that did not happen.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg2.extensions

EVENTS = frozenset(
    {"login_success", "login_failure", "login_throttled", "logout", "refresh", "refresh_reuse", "revoke",
     "user_change"}
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
            "INSERT INTO audit_events (event, user_id, username, client_ip, detail)"
            " VALUES (%s, %s, %s, %s, %s)",
            (event, user_id, username, client_ip, orjson.dumps(detail or {}).decode()),
        )
