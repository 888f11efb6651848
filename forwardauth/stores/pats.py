"""Personal access tokens in PostgreSQL, the truth about them (Redis holds copies for /auth:
``stores.patrecords``). Functions take a psycopg2 connection and run in a worker thread.

Only the SHA-256 of a token is stored. Revoking sets ``revoked_at`` (the row stays, for the list
and the audit trail); the caller then revokes the token's ``pat-<id>`` session in Redis. The
functions that revoke return the session ids of every unexpired token concerned, revoked now or
before, so a command run again after Redis refused revokes them in Redis again.

Lock order, as in ``sessions``: the user's row first. Creating a token share-locks it, and every
revocation of a user's tokens (a disable, a password change) locks it for update first, so a
token is never created for a user past their disable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.errors

from forwardauth.core.pats import sid_of
from forwardauth.core.problems import Problem
from forwardauth.core.tokens import Identity, new_id
from forwardauth.stores.audit import record
from forwardauth.stores.postgres import Connection
from forwardauth.stores.users import User

MAX_KNOWN_ADDRESSES = 20  # per token: a use from an address not among them is audited
_COLUMNS = "id, user_id::text, name, scopes, created_at, expires_at, created_by, last_used_at, last_used_ip, revoked_at"


class PatError(Problem):
    """A token cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class PatInfo:
    """What may be shown of a token (never the token: it is not kept)."""

    id: str
    user_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None
    last_used_ip: str | None
    revoked_at: dt.datetime | None

    @property
    def sid(self) -> str:
        return sid_of(self.id)

    def state(self, now: dt.datetime) -> str:
        """``live``, ``revoked`` or ``expired``."""
        return "revoked" if self.revoked_at is not None else "expired" if self.expires_at <= now else "live"


def _info(row: tuple[Any, ...]) -> PatInfo:
    return PatInfo(row[0], row[1], row[2], tuple(row[3]), *row[4:10])


def create(
    conn: Connection,
    user: User,
    name: str,
    digest: str,
    scopes: Sequence[str],
    ttl: int,
    created_by: str,
    client_ip: str | None,
) -> PatInfo:
    """Store a token for ``user`` (whose row the caller share-locked), audited ``pat_created``."""
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO personal_tokens (id, user_id, name, token_hash, scopes, expires_at, created_by)"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s)"
                f" RETURNING {_COLUMNS}",
                (new_id(), user.id, name, bytes.fromhex(digest), list(scopes), ttl, created_by),
            )
            row = cur.fetchone()
    except psycopg2.errors.UniqueViolation:
        raise PatError("%(user)s already has a token named %(name)s", user=user.username, name=repr(name)) from None
    assert row is not None
    info = _info(row)
    detail = {"token_id": info.id, "name": name, "scopes": list(scopes), "expires_at": info.expires_at.isoformat()}
    record(conn, "pat_created", user.id, user.username, client_ip, {**detail, "by": created_by})
    return info


def of_user(conn: Connection, user_id: str) -> list[PatInfo]:
    """Every token of the user, revoked and expired ones too, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM personal_tokens WHERE user_id = %s ORDER BY created_at, id",  # noqa: S608
            (user_id,),
        )
        return [_info(row) for row in cur.fetchall()]


def revoke(conn: Connection, user: User, token_id: str, by: str, client_ip: str | None) -> tuple[PatInfo, str] | None:
    """Revoke one token of ``user``, audited ``pat_revoked`` (once: not again when it was revoked
    already): the token and its digest, for the caller to revoke in Redis (again); ``None`` when
    the user has no such token."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE personal_tokens SET revoked_at = coalesce(revoked_at, now()),"  # noqa: S608 (our text)
            " revoke_reason = coalesce(revoke_reason, %s)"
            " WHERE id = %s AND user_id = %s"
            f" RETURNING {_COLUMNS}, revoked_at = now(), encode(token_hash, 'hex')",
            ("revoked", token_id, user.id),
        )
        row = cur.fetchone()
    if row is None:
        return None
    info = _info(row)
    if row[10]:  # revoked by this statement
        detail = {"token_id": info.id, "name": info.name, "by": by}
        record(conn, "pat_revoked", user.id, user.username, client_ip, detail)
    return info, str(row[11])


@dataclass(frozen=True, slots=True)
class Revoked:
    """A user's tokens revoked in PostgreSQL, for the caller to revoke in Redis after the commit."""

    sids: list[str]  # every unexpired token's session (revoked now or before)
    digests: list[str]  # their records' keys
    count: int  # tokens revoked now


def revoke_user(conn: Connection, user_id: str, reason: str, client_ip: str | None = None) -> Revoked:
    """Revoke every token of a user (a disable, a password change...), audited ``pat_revoked``
    once with how many (when any were live). The caller has locked the user's row for update."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE personal_tokens SET revoked_at = now(), revoke_reason = %s"
            " WHERE user_id = %s AND revoked_at IS NULL AND expires_at > now()",
            (reason, user_id),
        )
        count = cur.rowcount
        cur.execute(
            "SELECT id, encode(token_hash, 'hex') FROM personal_tokens WHERE user_id = %s AND expires_at > now()"
            " ORDER BY id",
            (user_id,),
        )
        found = cur.fetchall()
    if count:
        record(conn, "pat_revoked", user_id, None, client_ip, {"reason": reason, "tokens": count})
    return Revoked([sid_of(row[0]) for row in found], [str(row[1]) for row in found], count)


@dataclass(frozen=True, slots=True)
class LiveToken:
    """A live token as ``token sync`` writes it to Redis again."""

    id: str
    digest: str
    identity: Identity
    scopes: tuple[str, ...]
    expires_at: int  # epoch seconds


def live(conn: Connection, ids: Sequence[str] | None = None) -> list[LiveToken]:
    """Every live token (unrevoked, unexpired, its user enabled), or those of ``ids`` still live."""
    where = "" if ids is None else " AND p.id = ANY(%s)"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT p.id, encode(p.token_hash, 'hex'), p.scopes, extract(epoch FROM p.expires_at)::bigint,"  # noqa: S608
            " u.id::text, u.username, u.roles, u.email"
            " FROM personal_tokens p JOIN users u ON u.id = p.user_id"
            " WHERE p.revoked_at IS NULL AND p.expires_at > now() AND NOT u.disabled" + where + " ORDER BY p.id",
            () if ids is None else (list(ids),),
        )
        rows = cur.fetchall()
    return [
        LiveToken(row[0], row[1], Identity(row[4], row[5], tuple(row[6]), row[7]), tuple(row[2]), int(row[3]))
        for row in rows
    ]


def revoked_digests(conn: Connection) -> list[str]:
    """The digests of the revoked tokens that have not expired yet: their records, left in Redis
    by a revocation of all of a user's tokens (harmless: not live), are deleted by ``sync``."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT encode(token_hash, 'hex') FROM personal_tokens WHERE revoked_at IS NOT NULL AND expires_at > now()"
        )
        return [str(row[0]) for row in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Use:
    """The uses of one token a worker saw since its last flush."""

    digest: str
    at: float  # the latest, epoch seconds
    address: str | None  # of the latest
    addresses: tuple[str, ...]  # every address seen


def note_uses(conn: Connection, uses: Sequence[Use]) -> int:
    """Record last-used times and addresses (one UPDATE per token); a use from an address not
    seen before for that token is audited ``pat_new_address``. How many new addresses."""
    new_count = 0
    with conn.cursor() as cur:
        for use in uses:
            cur.execute(
                "SELECT p.id, p.user_id::text, u.username, p.name, p.known_ips FROM personal_tokens p"
                " JOIN users u ON u.id = p.user_id WHERE p.token_hash = %s FOR UPDATE OF p",
                (bytes.fromhex(use.digest),),
            )
            row = cur.fetchone()
            if row is None:  # deleted with its user meanwhile
                continue
            token_id, user_id, username, name, known = row
            new = [a for a in dict.fromkeys(use.addresses) if a not in known]
            cur.execute(
                "UPDATE personal_tokens SET last_used_at = greatest(last_used_at, to_timestamp(%s)),"
                " last_used_ip = CASE WHEN last_used_at > to_timestamp(%s) THEN last_used_ip ELSE %s END,"
                " known_ips = %s WHERE id = %s",
                (use.at, use.at, use.address, [*known, *new][-MAX_KNOWN_ADDRESSES:], token_id),
            )
            for address in new:
                record(conn, "pat_new_address", user_id, username, address, {"token_id": token_id, "name": name})
            new_count += len(new)
    return new_count
