"""Refresh tokens (login sessions) in PostgreSQL. Functions run in a worker thread.

A refresh token is 256 random bits handed to the client once; only its SHA-256 is stored. Every
use rotates it: the old row is marked replaced and a new one joins the same family (the login
session, ``sid`` in access tokens). Presenting a token that was already replaced means it was
copied, so the whole family is revoked (RFC 6819 5.2.2.3, OAuth 2.0 Security BCP 4.14).

Lock order, so that a revocation and a session being opened or rotated never cross: the client's
row (shared), then the user's (shared), then the token's (for update). A password change, a
disable or "log out everywhere" locks the user's (or client's) row for update before revoking, so
it either waits for a rotation in flight and then revokes the token that rotation wrote, or
commits first and the rotation finds its token revoked.

Each row carries how the session was authenticated (``amr``, ``auth_time``), copied to every
successor: a rotation proves nothing new about the user, so it neither adds nor refreshes them.

An OIDC client's session records the browser session it was opened from (``parent_sid``) and
ends with it: every revocation here goes through ``cascade`` (see there).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from forwardauth.constants import REFRESH_TOKEN_BYTES
from forwardauth.core.authn import PASSWORD, Authentication
from forwardauth.core.devices import kept
from forwardauth.core.tokens import new_id
from forwardauth.stores import cascade, clients
from forwardauth.stores.audit import record
from forwardauth.stores.cascade import Ended
from forwardauth.stores.postgres import Connection
from forwardauth.stores.users import User, get

MAX_REFRESH_TOKEN = 256
# revoke_reason of a rotated token, of one rotated again for a retry, and of a successor it superseded
ROTATED, RETRIED, SUPERSEDED = "rotated", "retried", "superseded"


class ClientDisabled(Exception):
    """The OAuth2 client was disabled while its session was being opened: no session."""


class ParentEnded(Exception):
    """The browser session an OIDC client's session was to be opened from has ended: no session."""


class RefreshError(Exception):
    """The refresh token is unknown, expired, revoked or its user disabled."""

    def __init__(
        self, message: str, reused_family: str | None = None, too_soon: bool = False, ended: Ended | None = None
    ) -> None:
        super().__init__(message)
        # Set when a rotated token came back: the caller revokes that family's access tokens too
        # (``ended``: with its children's, and their back-channel logouts).
        self.reused_family = reused_family
        self.ended = ended or Ended([reused_family] if reused_family else [])
        # Set when the token is younger than ``min_age``: not spent, and nothing revoked.
        self.too_soon = too_soon


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    sid: str
    refresh_token: str
    auth: Authentication  # how and when the user signed in (the tokens' amr, acr, auth_time)
    client_id: str | None = None
    scope: str | None = None


def _could_be_one(token: str) -> bool:
    """Worth looking up: a refresh token we issued is never empty nor over MAX_REFRESH_TOKEN."""
    return bool(token) and len(token) <= MAX_REFRESH_TOKEN


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _auth(amr: list[str], auth_time: int) -> Authentication:
    """A row's authentication (written by us: unknown methods would be a bug, and raise)."""
    return Authentication.of(amr, auth_time)


def _insert(
    conn: Connection,
    user_id: str,
    sid: str,
    ttl: int,
    client_id: str | None,
    scope: str | None,
    auth: Authentication,
    parent_sid: str | None,
    user_agent: str | None,
    client_ip: str | None,
) -> tuple[int, str]:
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    on = (kept(user_agent), client_ip)  # what it was opened or renewed on
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, client_id, scope, amr,"
            " auth_time, parent_sid, user_agent, client_ip)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, %s, %s) RETURNING id",
            (_digest(token), user_id, sid, expires, client_id, scope, list(auth.amr), auth.auth_time, parent_sid, *on),
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), token


def start(
    conn: Connection,
    user: User,
    ttl: int,
    client_id: str | None = None,
    scope: str | None = None,
    auth: Authentication | None = None,
    parent_sid: str | None = None,
    *,
    user_agent: str | None = None,
    client_ip: str | None = None,
) -> Session:
    """A new login session with its first refresh token (the caller has checked the password,
    with the user's row locked: ``users.authenticate``, and any second factor). ``auth``: how the
    user proved who they are; ``None`` is a password, now.

    ``parent_sid``: an OIDC client's session, opened from that browser session of the same user,
    which must still be live (else ``ParentEnded``); its row is share-locked, after the user's, so
    a logout ending it either waits for this session and ends it too, or has ended it first.
    ``user_agent`` (the header, cut to 512 characters; a client's session without one takes its
    browser session's) and ``client_ip``: what the portal shows.
    """
    if client_id is not None and not clients.lock_enabled(conn, client_id):
        raise ClientDisabled(client_id)
    if parent_sid is not None:
        parent = _lock_live(conn, user.id, parent_sid)
        if parent is None:
            raise ParentEnded(parent_sid)
        user_agent = user_agent or parent[0]  # a client's session: the browser's, where the user is
    auth = auth or Authentication.of((PASSWORD,), int(time.time()))
    sid = new_id()
    _, token = _insert(conn, user.id, sid, ttl, client_id, scope, auth, parent_sid, user_agent, client_ip)
    return Session(user=user, sid=sid, refresh_token=token, auth=auth, client_id=client_id, scope=scope)


def _lock_live(conn: Connection, user_id: str, sid: str) -> tuple[str | None] | None:
    """(its User-Agent,) when session ``sid`` of the user is live, else ``None``; its live token
    and the user's row are share-locked until the transaction ends (module docstring: lock order)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s AND NOT disabled FOR SHARE", (user_id,))
        if cur.fetchone() is None:
            return None
        cur.execute(
            "SELECT user_agent FROM refresh_tokens WHERE family_id = %s AND user_id = %s AND revoked_at IS NULL"
            " AND expires_at > now() FOR SHARE",
            (sid, user_id),
        )
        row = cur.fetchone()
        return None if row is None else (row[0],)


def children(conn: Connection, sid: str) -> list[str]:
    """The OIDC clients' sessions opened from browser session ``sid`` (live or not)."""
    return cascade.children(conn, [sid])


def rotate(
    conn: Connection,
    token: str,
    ttl: int,
    client_ip: str | None,
    client_id: str | None = None,
    narrow_scope: Callable[[str | None], str | None] | None = None,
    grace: int = 0,
    min_age: int = 0,
    retry: int = 0,
) -> Session:
    """Exchange a refresh token for its successor in the same session.

    The token must have been issued to ``client_id`` (``None``: our own login, not OAuth2).
    ``narrow_scope`` may reduce the session's scope (RFC 6749 6); it raises to refuse.
    A token replaced less than ``grace`` seconds ago is refused without revoking the session, and
    so is a live token issued less than ``min_age`` seconds ago (``too_soon``: it stays valid).
    A token rotated less than ``retry`` seconds ago, by this ``client_ip``, whose successor is unused,
    may be presented once more: the answer to its rotation was lost, so that successor (which nobody
    received) is superseded and a new one issued. A superseded token presented later did reach
    someone, so the retry was a copy's: that is reuse, and revokes the session.
    The successor keeps the session's User-Agent and records ``client_ip``, where it was renewed.
    """
    if not _could_be_one(token):
        raise RefreshError("malformed refresh token")
    # Locks in the module's order: client, user, a child's parent session, then the token itself.
    if client_id is not None and not clients.lock_enabled(conn, client_id):
        raise RefreshError("client unknown or disabled")
    with conn.cursor() as cur:
        cur.execute("SELECT user_id::text, parent_sid FROM refresh_tokens WHERE token_hash = %s", (_digest(token),))
        owner_row = cur.fetchone()
    if owner_row is None:
        raise RefreshError("unknown refresh token")
    user = get(conn, owner_row[0], lock=True)
    if owner_row[1] is not None:  # an OIDC client's session: its browser session's live token before its own
        _lock_parent(conn, owner_row[1])
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, user_id::text, family_id, expires_at <= now(), revoked_at IS NOT NULL,"
            " replaced_by, client_id, scope, revoked_at > now() - make_interval(secs => %s),"
            " created_at > now() - make_interval(secs => %s), revoke_reason,"
            " revoked_at > now() - make_interval(secs => %s) AND rotated_by IS NOT DISTINCT FROM %s,"
            " amr, extract(epoch FROM auth_time)::bigint, parent_sid, user_agent"
            " FROM refresh_tokens WHERE token_hash = %s FOR UPDATE",
            (grace, min_age, retry, client_ip, _digest(token)),
        )
        row = cur.fetchone()
    if row is None:
        raise RefreshError("unknown refresh token")
    row_id, user_id, sid, expired, revoked, successor, owner, scope, just_revoked, young, reason, same_client = row[:12]
    auth, parent_sid, user_agent = _auth(row[12], row[13]), row[14], row[15]  # a child stays its parent's
    if owner != client_id:
        raise RefreshError("refresh token was issued to another client")
    # A rotated token back, or a superseded one (its successor went to a retry: it reached someone).
    replaced = successor is not None or reason == SUPERSEDED
    retrying = bool(replaced and reason == ROTATED and same_client and _supersede(conn, successor))
    if replaced and not retrying and just_revoked:
        raise RefreshError("refresh token was rotated a moment ago")
    if replaced and not retrying:
        ended = cascade.end(conn, [sid], "reuse")
        record(conn, "refresh_reuse", user_id, None, client_ip, {"sid": sid, "children": len(ended.sids) - 1})
        conn.commit()  # the revocation must stand although we raise (which rolls back)
        raise RefreshError("refresh token reused; session revoked", reused_family=sid, ended=ended)
    if (revoked and not retrying) or expired:
        raise RefreshError("refresh token revoked or expired")
    if young:
        raise RefreshError("refresh token issued a moment ago", too_soon=True)
    if user is None or user.disabled:
        raise RefreshError("user unknown or disabled")
    if narrow_scope is not None:
        scope = narrow_scope(scope)
    new_row, new_token = _insert(conn, user_id, sid, ttl, client_id, scope, auth, parent_sid, user_agent, client_ip)
    with conn.cursor() as cur:
        if retrying:  # keeps its rotation time: the retry window does not start again
            cur.execute(
                "UPDATE refresh_tokens SET revoke_reason = %s, replaced_by = %s WHERE id = %s",
                (RETRIED, new_row, row_id),
            )
        else:
            cur.execute(
                "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = %s, replaced_by = %s, rotated_by = %s"
                " WHERE id = %s",
                (ROTATED, new_row, client_ip, row_id),
            )
    record(conn, "refresh", user_id, user.username, client_ip, {"sid": sid, **({"retry": True} if retrying else {})})
    return Session(user=user, sid=sid, refresh_token=new_token, auth=auth, client_id=client_id, scope=scope)


def _lock_parent(conn: Connection, sid: str) -> None:
    """Share-lock browser session ``sid``'s live tokens: a logout ending it (``cascade.end``) waits
    for this child's rotation and ends its successor too, or has ended the child first."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM refresh_tokens WHERE family_id = %s AND revoked_at IS NULL FOR SHARE", (sid,))


def _supersede(conn: Connection, successor: int) -> bool:
    """Revoke a rotation's successor for a retry, if nobody has used it (nor it ran out)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = %s"
            " WHERE id = %s AND revoked_at IS NULL AND expires_at > now()",
            (SUPERSEDED, successor),
        )
        return cur.rowcount == 1


def discard(conn: Connection, sid: str, client_ip: str | None) -> None:
    """Take back a session just opened whose tokens never reached the client (Redis refused the
    access token): its refresh token is deleted, and the audit says why."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM refresh_tokens WHERE family_id = %s RETURNING user_id::text", (sid,))
        rows = cur.fetchall()
    if rows:
        record(conn, "revoke", rows[0][0], None, client_ip, {"sid": sid, "reason": "not_delivered"})


def logout(
    conn: Connection,
    sid: str,
    user: str | None,
    username: str | None,
    client_ip: str | None,
    detail: dict[str, object] | None = None,
) -> Ended:
    """End session ``sid`` and its children, audited ``logout`` (as the session's user, found
    here); what to finish in Redis and by back-channel."""
    ended = cascade.end(conn, [sid], "logout")
    user, username = cascade.owner(conn, sid) or (user, username)
    children = {"children": len(ended.sids) - 1} if len(ended.sids) > 1 else {}
    record(conn, "logout", user, username, client_ip, {"sid": sid, **children, **(detail or {})})
    return ended


def family_of(conn: Connection, token: str) -> str | None:
    """The session a refresh token belongs to (for logout by refresh token)."""
    if not _could_be_one(token):
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT family_id FROM refresh_tokens WHERE token_hash = %s", (_digest(token),))
        row = cur.fetchone()
    return str(row[0]) if row else None


def revoke_by_token(conn: Connection, token: str, client_id: str | None, client_ip: str | None) -> str | None:
    """Revoke the session of a refresh token issued to ``client_id``; its sid, else ``None``."""
    if not _could_be_one(token):
        return None
    with conn.cursor() as cur:
        cur.execute(
            "SELECT family_id, user_id::text, client_id FROM refresh_tokens WHERE token_hash = %s", (_digest(token),)
        )
        row = cur.fetchone()
    if row is None or row[2] != client_id:
        return None
    sid, user_id = str(row[0]), str(row[1])
    cascade.revoke_families(conn, [sid], "revoked")  # a client's own session: it opens none (no children)
    record(conn, "revoke", user_id, None, client_ip, {"sid": sid, "client_id": client_id})
    return sid


@dataclass(frozen=True, slots=True)
class RefreshInfo:
    """What introspection tells about a live refresh token."""

    user: User
    sid: str
    client_id: str | None
    scope: str | None
    expires_at: int
    issued_at: int
    auth: Authentication  # how and when the user signed in (what a step-up compares against)


def refresh_info(conn: Connection, token: str) -> RefreshInfo | None:
    """A refresh token that is unexpired, unrevoked and whose user is enabled, else ``None``."""
    if not _could_be_one(token):
        return None
    with conn.cursor() as cur:
        cur.execute(
            "SELECT user_id::text, family_id, client_id, scope, extract(epoch FROM expires_at)::bigint,"
            " extract(epoch FROM created_at)::bigint, amr, extract(epoch FROM auth_time)::bigint FROM refresh_tokens"
            " WHERE token_hash = %s AND revoked_at IS NULL AND expires_at > now()",
            (_digest(token),),
        )
        row = cur.fetchone()
    if row is None:
        return None
    user = get(conn, row[0])
    if user is None or user.disabled:
        return None
    return RefreshInfo(
        user=user,
        sid=row[1],
        client_id=row[2],
        scope=row[3],
        expires_at=row[4],
        issued_at=row[5],
        auth=_auth(row[6], row[7]),
    )


def revoke_user(
    conn: Connection,
    user_id: str,
    recent_seconds: int,
    client_ip: str | None,
    reason: str = "logout_all",
    except_sid: str | None = None,
) -> Ended:
    """End every session of a user ("log out everywhere", a password change, a disable).

    Revokes all their refresh tokens, but those of session ``except_sid`` (the one a user changing
    their own password keeps) and of its children, and returns the sessions that may still hold a
    live access token (those that minted one within ``recent_seconds``), for the caller to revoke
    in Redis, with the back-channel logouts to queue. The user's row is locked first (see the
    module's docstring on lock order).
    """
    kept = "(family_id = %s OR parent_sid = %s) IS NOT TRUE"  # all when except_sid is None
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        notices = cascade.user_notices(conn, user_id, except_sid)
        cur.execute(
            "UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = %s"  # noqa: S608 (our text)
            f" WHERE user_id = %s AND revoked_at IS NULL AND {kept}",
            (reason, user_id, except_sid, except_sid),
        )
        cur.execute(
            "SELECT DISTINCT family_id FROM refresh_tokens"  # noqa: S608 (our text)
            f" WHERE user_id = %s AND created_at > now() - make_interval(secs => %s) AND {kept}",
            (user_id, recent_seconds, except_sid, except_sid),
        )
        sids = [str(row[0]) for row in cur.fetchall()]
    detail: dict[str, object] = {"all_sessions": True, "sessions": len(sids), "reason": reason}
    if except_sid is not None:
        detail["kept_sid"] = except_sid
    record(conn, "revoke", user_id, None, client_ip, detail)
    return Ended(sids, notices)
