"""What users let OIDC clients have: scopes remembered per user and client, so the consent page
is shown once (and again only for scopes not granted yet). Functions run in a worker thread.

A grant adds to what was granted before (a client asking for ``email`` later keeps ``profile``);
revoking forgets it all, so the next authorization asks again. Both are audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from forwardauth.stores.audit import record
from forwardauth.stores.clients import check_scopes
from forwardauth.stores.postgres import Connection


@dataclass(frozen=True, slots=True)
class Consent:
    client_id: str
    scopes: tuple[str, ...]
    granted_at: dt.datetime  # when it was last granted or widened


def granted(conn: Connection, user_id: str, client_id: str) -> tuple[str, ...]:
    """The scopes the user let the client have; empty when none (or revoked)."""
    with conn.cursor() as cur:
        cur.execute("SELECT scopes FROM consents WHERE user_id = %s AND client_id = %s", (user_id, client_id))
        row = cur.fetchone()
    return tuple(row[0]) if row else ()


def grant(
    conn: Connection,
    user_id: str,
    client_id: str,
    scopes: Sequence[str],
    client_ip: str | None = None,
    username: str | None = None,
) -> tuple[str, ...]:
    """Remember that the user let the client have ``scopes``, on top of what it had; all it has now."""
    asked = check_scopes(tuple(scopes))
    with conn.cursor() as cur:
        # Earlier scopes first, in their order, then the new ones; one statement, so two grants
        # racing both end up in the row.
        cur.execute(
            "INSERT INTO consents (user_id, client_id, scopes) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, client_id) DO UPDATE SET granted_at = now(), scopes ="
            " consents.scopes || ARRAY(SELECT s FROM unnest(EXCLUDED.scopes) WITH ORDINALITY AS n(s, i)"
            " WHERE s <> ALL (consents.scopes) ORDER BY i)"
            " RETURNING scopes",
            (user_id, client_id, list(asked)),
        )
        row = cur.fetchone()
    assert row is not None
    now = tuple(row[0])
    record(conn, "consent_granted", user_id, username, client_ip, {"client_id": client_id, "scopes": list(asked)})
    return now


def revoke(
    conn: Connection, user_id: str, client_id: str, client_ip: str | None = None, username: str | None = None
) -> bool:
    """Forget the user's consent to the client; whether there was one."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM consents WHERE user_id = %s AND client_id = %s RETURNING scopes", (user_id, client_id))
        row = cur.fetchone()
    if row is not None:
        record(conn, "consent_revoked", user_id, username, client_ip, {"client_id": client_id, "scopes": list(row[0])})
    return row is not None


def of_user(conn: Connection, user_id: str) -> list[Consent]:
    """Every consent of the user, by client id."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, scopes, granted_at FROM consents WHERE user_id = %s ORDER BY client_id", (user_id,)
        )
        return [Consent(row[0], tuple(row[1]), row[2]) for row in cur.fetchall()]
