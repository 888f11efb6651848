"""Users in PostgreSQL. Functions take a psycopg2 connection and run in a worker thread.

Usernames are normalised (NFKC, case-folded) on the way in, at creation and at login, so
``Alice``, ``ALICE`` and the same name in full-width letters are one account.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from forwardauth.core.passwords import Passwords
from forwardauth.core.tokens import Identity
from forwardauth.core.usernames import MAX_USERNAME, normalise_username
from forwardauth.stores.audit import record
from forwardauth.stores.postgres import Connection

MAX_PASSWORD = 1024
_ROLE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_COLUMNS = "id::text, username, password_hash, roles, email, disabled"


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str
    roles: tuple[str, ...]
    email: str | None
    disabled: bool

    @property
    def identity(self) -> Identity:
        return Identity(subject=self.id, username=self.username, roles=self.roles, email=self.email)


def check_username(name: str) -> str:
    """The normalised name, or ``UserError`` when it cannot be a username."""
    normal = normalise_username(name)
    if not 1 <= len(normal) <= MAX_USERNAME:
        raise UserError(f"username must be 1 to {MAX_USERNAME} characters")
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in normal):
        raise UserError("username must not contain spaces or control characters")
    return normal


def check_roles(roles: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for role in roles:
        if not _ROLE.fullmatch(role):
            raise UserError(f"role {role!r}: use letters, digits and _ . : - (at most 64)")
    return tuple(dict.fromkeys(roles))


def check_password(password: str) -> str:
    if not password:
        raise UserError("password must not be empty")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise UserError(f"password must be at most {MAX_PASSWORD} characters without NUL")
    return password


def _row_to_user(row: tuple[Any, ...] | None) -> User | None:
    if row is None:
        return None
    return User(id=row[0], username=row[1], password_hash=row[2], roles=tuple(row[3]), email=row[4], disabled=row[5])


def find(conn: Connection, username: str) -> User | None:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM users WHERE lower(username) = %s",  # noqa: S608
            (normalise_username(username),),
        )
        return _row_to_user(cur.fetchone())


def get(conn: Connection, user_id: str, lock: bool = False) -> User | None:
    """The user, by id. With ``lock``, its row is share-locked until the transaction ends.

    Logins and refreshes take that lock before they write a session, and a password change or a
    disable locks the row for update before it revokes the sessions: one waits for the other, so
    no session is opened or rotated with the old password or state past the revocation.
    """
    query = f"SELECT {_COLUMNS} FROM users WHERE id = %s" + (" FOR SHARE" if lock else "")  # noqa: S608
    with conn.cursor() as cur:
        cur.execute(query, (user_id,))
        return _row_to_user(cur.fetchone())


def create(
    conn: Connection,
    passwords: Passwords,
    username: str,
    password: str,
    roles: list[str] | tuple[str, ...] = (),
    email: str | None = None,
) -> User:
    name = check_username(username)
    password_hash = passwords.hash_new(check_password(password), name, email)  # the policy, then Argon2id
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO users (username, password_hash, roles, email) VALUES (%s, %s, %s, %s)"  # noqa: S608
                f" RETURNING {_COLUMNS}",
                (name, password_hash, list(check_roles(roles)), check_email(email)),
            )
            user = _row_to_user(cur.fetchone())
    except psycopg2.errors.UniqueViolation:
        raise UserError(f"user {name!r} already exists") from None
    assert user is not None
    return user


def list_all(conn: Connection) -> list[User]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM users ORDER BY username")  # noqa: S608
        return [u for u in map(_row_to_user, cur.fetchall()) if u is not None]


def _update(conn: Connection, username: str, column: Literal["disabled", "password_hash"], value: object) -> User:
    """Set one column of a user; ``UserError`` when there is no such user."""
    query = sql.SQL(
        "UPDATE users SET {} = %s, updated_at = now() WHERE lower(username) = %s RETURNING " + _COLUMNS  # noqa: S608
    ).format(sql.Identifier(column))
    with conn.cursor() as cur:
        cur.execute(query, (value, normalise_username(username)))
        user = _row_to_user(cur.fetchone())
    if user is None:
        raise UserError(f"no user {normalise_username(username)!r}")
    return user


def set_disabled(conn: Connection, username: str, disabled: bool) -> User:
    return _update(conn, username, "disabled", disabled)


def set_password(conn: Connection, passwords: Passwords, username: str, password: str) -> User:
    return _update(conn, username, "password_hash", passwords.hash_new(check_password(password), username))


def authenticate(
    conn: Connection,
    passwords: Passwords,
    username: str,
    password: str,
    client_ip: str | None,
    success: dict[str, object] | None = None,
) -> User | None:
    """The user when the password is right and the account enabled, else ``None``.

    Unknown users are checked against a dummy hash, so all failures take the same time.
    Success and failure are audited (``success``: the success event's detail, or none when the
    caller audits it itself); a hash made with old parameters is replaced.
    """
    user = find(conn, username)
    verdict = passwords.verify(user.password_hash if user else None, password)
    if user is not None and verdict.ok:
        # What was verified must still hold under the lock: a password change or a disable that
        # committed meanwhile makes this a failure, not a session that outlives the change.
        locked = get(conn, user.id, lock=True)
        if locked is None or locked.password_hash != user.password_hash:
            verdict = dataclasses.replace(verdict, ok=False, new_hash=None)
        user = locked or user
    if user is None or not verdict.ok or user.disabled:
        reason = "unknown user" if user is None else "disabled" if verdict.ok else "wrong password"
        record(
            conn,
            "login_failure",
            user.id if user else None,
            normalise_username(username)[:MAX_USERNAME],
            client_ip,
            {"reason": reason},
        )
        return None
    if verdict.new_hash is not None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
                (verdict.new_hash, user.id),
            )
    if success is not None:
        record(conn, "login_success", user.id, user.username, client_ip, success)
    return user


MAX_EMAIL = 254


def check_email(email: str | None) -> str | None:
    """The address (``None`` for none), or ``UserError``: it is sent to apps as ``X-Auth-Email``."""
    if not email:
        return None
    local, at, domain = email.rpartition("@")
    bad = any(c.isspace() or unicodedata.category(c).startswith("C") for c in email)
    if len(email) > MAX_EMAIL or bad or not (at and local and domain):
        raise UserError(f"e-mail must look like name@example.com (at most {MAX_EMAIL} characters, no spaces)")
    return email


def modify(
    conn: Connection,
    username: str,
    edit_roles: Callable[[tuple[str, ...]], Sequence[str]] | None,
    email: str | None,
    set_email: bool,
) -> tuple[User, User]:
    """Change a user's roles (``edit_roles(current)``) and/or e-mail in one transaction; (before, after)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM users WHERE lower(username) = %s FOR UPDATE",  # noqa: S608
            (normalise_username(username),),
        )
        before = _row_to_user(cur.fetchone())
        if before is None:
            raise UserError(f"no user {normalise_username(username)!r}")
        roles = check_roles(tuple(edit_roles(before.roles))) if edit_roles else before.roles
        new_email = check_email(email) if set_email else before.email
        cur.execute(
            f"UPDATE users SET roles = %s, email = %s, updated_at = now() WHERE id = %s"  # noqa: S608
            f" RETURNING {_COLUMNS}",
            (list(roles), new_email, before.id),
        )
        after = _row_to_user(cur.fetchone())
    assert after is not None
    record(
        conn,
        "user_change",
        after.id,
        after.username,
        None,
        {"action": "modify", "roles": list(after.roles), "email_changed": after.email != before.email},
    )
    return before, after


def delete(conn: Connection, username: str) -> User:
    """Remove a user (its refresh tokens go with it; its audit events stay, user id cleared)."""
    with conn.cursor() as cur:
        cur.execute(
            f"DELETE FROM users WHERE lower(username) = %s RETURNING {_COLUMNS}",  # noqa: S608
            (normalise_username(username),),
        )
        user = _row_to_user(cur.fetchone())
    if user is None:
        raise UserError(f"no user {normalise_username(username)!r}")
    record(conn, "user_change", None, user.username, None, {"action": "delete", "user_id": user.id})
    return user
