"""OAuth2 clients in PostgreSQL. Functions take a psycopg2 connection and run in a worker thread.

A confidential client has a 256-bit random secret, shown once and stored as SHA-256 (a slow
hash buys nothing for a secret that cannot be guessed); a public client has none and may only
use the password and refresh_token grants.

Disabling a client revokes every token it holds, at once and for good: re-enabling it brings none
back. Its client_credentials tokens have no row here; they are grouped in Redis under session ids
derived from the client id and the hour they were issued (``own_session``), so disabling finds
them without a registry that would grow with every token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import psycopg2.errors
import psycopg2.extensions

from forwardauth.stores.audit import record
from forwardauth.stores.postgres import Connection
from forwardauth.stores.users import check_roles

GRANT_TYPES = ("password", "refresh_token", "client_credentials")
PUBLIC_GRANTS = frozenset({"password", "refresh_token"})
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")  # RFC 6749 3.3 scope-token
_COLUMNS = "id, secret_hash, grant_types, scopes, roles, disabled, resource_server"
# client_credentials tokens are grouped in Redis by client and by hour of issue (see own_session).
OWN_SESSION_SECONDS = 3600
OWN_SESSION_PREFIX = "client."  # never in a login session id (URL-safe base64 has no ".")


class ClientError(ValueError):
    """A client cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    secret_hash: bytes | None
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    disabled: bool
    resource_server: bool = False  # may introspect access tokens issued to other clients

    @property
    def public(self) -> bool:
        return self.secret_hash is None

    def check_secret(self, secret: str | None) -> bool:
        """Constant-time check; a public client must present no secret."""
        if self.secret_hash is None or secret is None:
            return self.secret_hash is None and secret is None
        return hmac.compare_digest(self.secret_hash, _digest(secret))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise ClientError(f"scope {scope!r} is not a valid scope token")
    return tuple(dict.fromkeys(scopes))


def _row(row: tuple[Any, ...] | None) -> Client | None:
    if row is None:
        return None
    return Client(
        id=row[0],
        secret_hash=bytes(row[1]) if row[1] is not None else None,
        grant_types=tuple(row[2]),
        scopes=tuple(row[3]),
        roles=tuple(row[4]),
        disabled=row[5],
        resource_server=row[6],
    )


def find(conn: Connection, client_id: str) -> Client | None:
    if not _CLIENT_ID.fullmatch(client_id):
        return None
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients WHERE id = %s", (client_id,))  # noqa: S608
        return _row(cur.fetchone())


def create(
    conn: Connection,
    client_id: str,
    grant_types: list[str],
    scopes: list[str],
    roles: list[str],
    public: bool,
    resource_server: bool = False,
) -> tuple[Client, str | None]:
    """The new client and its secret (``None`` for a public client), shown only now."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise ClientError("client id: 1 to 64 letters, digits, '.', '_' or '-'")
    grants = tuple(dict.fromkeys(grant_types or ["client_credentials"]))
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientError(f"unknown grant type(s): {', '.join(unknown)} (use {', '.join(GRANT_TYPES)})")
    if public and not PUBLIC_GRANTS.issuperset(grants):
        raise ClientError("a public client may only use the password and refresh_token grants")
    secret = None if public else secrets.token_urlsafe(32)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO clients (id, secret_hash, grant_types, scopes, roles, resource_server)"  # noqa: S608
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    client_id,
                    _digest(secret) if secret else None,
                    list(grants),
                    list(check_scopes(scopes)),
                    list(check_roles(roles)),
                    resource_server,
                ),
            )
            client = _row(cur.fetchone())
    except psycopg2.errors.UniqueViolation:
        raise ClientError(f"client {client_id!r} already exists") from None
    assert client is not None
    return client, secret


def list_all(conn: Connection) -> list[Client]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM clients ORDER BY id")  # noqa: S608
        return [c for c in map(_row, cur.fetchall()) if c is not None]


def set_disabled(
    conn: Connection, client_id: str, disabled: bool, recent_seconds: int = 0, client_ip: str | None = None
) -> tuple[Client, list[str]]:
    """Turn a client off or on. Off revokes all its refresh tokens in this transaction, and returns
    the sessions that may still hold a live access token (issued within ``recent_seconds``) for the
    caller to revoke in Redis; on revokes nothing and restores nothing.

    The client's row is locked first, as ``lock_enabled`` does in a login or a refresh, so no
    session of it can be opened or rotated past this transaction.
    """
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE clients SET disabled = %s, updated_at = now() WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
            (disabled, client_id),
        )
        client = _row(cur.fetchone())
        if client is None:
            raise ClientError(f"no client {client_id!r}")
        if not disabled:
            return client, []
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = 'client_disabled'"
            " WHERE client_id = %s AND revoked_at IS NULL",
            (client_id,),
        )
        revoked = cur.rowcount
        cur.execute(
            "SELECT DISTINCT family_id FROM refresh_tokens"
            " WHERE client_id = %s AND created_at > now() - make_interval(secs => %s)",
            (client_id, recent_seconds),
        )
        sids = [str(row[0]) for row in cur.fetchall()]
    record(
        conn,
        "revoke",
        None,
        None,
        client_ip,
        {"client_id": client_id, "reason": "client_disabled", "refresh_tokens": revoked, "sessions": len(sids)},
    )
    return client, sids


def lock_enabled(conn: Connection, client_id: str) -> bool:
    """Whether the client exists and is enabled, its row locked until the transaction ends.

    Taken before a session of the client is opened or rotated: a concurrent ``set_disabled``
    then either waits for that transaction (and revokes what it wrote) or has committed first.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT disabled FROM clients WHERE id = %s FOR SHARE", (client_id,))
        row = cur.fetchone()
    return row is not None and not row[0]


def own_session(client_id: str, now: float | None = None) -> str:
    """The session id of a client_credentials token issued ``now``: one per client and hour."""
    hour = int(time.time() if now is None else now) // OWN_SESSION_SECONDS
    return f"{OWN_SESSION_PREFIX}{client_id}.{hour}"


def own_sessions(client_id: str, lifetime: int, now: float | None = None) -> list[str]:
    """Every session id that may hold a live client_credentials token of the client: the hours of
    the last ``lifetime`` seconds, and the next (for another host's clock running ahead)."""
    at = time.time() if now is None else now
    first = int(at - lifetime) // OWN_SESSION_SECONDS
    last = int(at) // OWN_SESSION_SECONDS + 1
    return [f"{OWN_SESSION_PREFIX}{client_id}.{hour}" for hour in range(first, last + 1)]


def rotate_secret(conn: Connection, client_id: str) -> str:
    """A new secret for a confidential client; the old one stops working at once."""
    client = find(conn, client_id)
    if client is None:
        raise ClientError(f"no client {client_id!r}")
    if client.public:
        raise ClientError(f"client {client_id!r} is public: it has no secret")
    secret = secrets.token_urlsafe(32)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE clients SET secret_hash = %s, updated_at = now() WHERE id = %s", (_digest(secret), client_id)
        )
    return secret
