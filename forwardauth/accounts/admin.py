"""The admin console's actions on users and sessions: the same account functions the CLI uses,
each audited ``admin`` with the acting administrator (``{"by": ..., "action": ...}``) in the same
transaction as the change, so no change goes unrecorded and no record exists without its change.

Sessions a change ends are ended in PostgreSQL first, then revoked in Redis through
``changes.finish_ending``: a worker queues what Redis refuses and revokes it when Redis is back.

An administrator may not disable themself nor take their own admin role away (``AdminError``):
the console must never lock out the last person able to use it. Clients, keys and the audit
trail are in ``adminclients``; their names are importable from here too.
"""

from __future__ import annotations

import gettext
import secrets
from collections.abc import Callable
from typing import TypeVar

from forwardauth.accounts.adminclients import (
    Actor,
    AdminError,
    KeyInfo,
    audit_admin,
    audit_page,
    create_client,
    list_clients,
    list_keys,
    rotate_client_secret,
    rotate_signing_key,
    set_client_disabled,
)
from forwardauth.accounts.changes import finish_ending, recent_seconds, revoke_user_in_db, set_user_disabled_in_db
from forwardauth.accounts.links import send_welcome, set_password_link_in_db
from forwardauth.accounts.services import AccountServices
from forwardauth.core.usernames import normalise_username
from forwardauth.stores import secondfactors, sessionlist, sessions, users
from forwardauth.stores.cascade import Ended
from forwardauth.stores.postgres import Connection

T = TypeVar("T")
MAX_QUERY = 254
__all__ = [  # the console's actions on clients, keys and the audit trail are in adminclients
    "Actor",
    "AdminError",
    "KeyInfo",
    "audit_page",
    "create_client",
    "create_user",
    "end_session",
    "end_user_sessions",
    "list_clients",
    "list_keys",
    "password_link",
    "reset_second_factors",
    "rotate_client_secret",
    "rotate_signing_key",
    "search_users",
    "set_client_disabled",
    "set_disabled",
    "set_roles",
    "user_detail",
]


def _user(conn: Connection, username: str) -> users.User:
    user = users.find(conn, username) if "\x00" not in username else None
    if user is None:
        raise users.UserError(f"no user {normalise_username(username)!r}")
    return user


def _matches(user: users.User, words: list[str]) -> bool:
    text = f"{user.username} {user.email or ''} {' '.join(user.roles)}".casefold()
    return all(word in text for word in words)


async def search_users(services: AccountServices, query: str, limit: int = 100) -> list[users.User]:
    """Users whose name, e-mail or roles contain every word of ``query`` (all for an empty one), by name."""
    words = normalise_username(query[:MAX_QUERY]).split()
    found = await services.db.run(users.list_all)
    return [user for user in found if _matches(user, words)][:limit]


def _detail(conn: Connection, username: str) -> tuple[users.User, secondfactors.Enrolled] | None:
    user = users.find(conn, username) if "\x00" not in username else None
    return (user, secondfactors.enrolled(conn, user.id)) if user else None


async def user_detail(services: AccountServices, username: str) -> tuple[users.User, secondfactors.Enrolled] | None:
    return await services.db.run(_detail, username)


def _create_in_db(
    conn: Connection,
    services: AccountServices,
    actor: Actor,
    username: str,
    email: str | None,
    roles: list[str],
    delivery: str,
) -> tuple[users.User, str]:
    # Nobody ever knows this password: the user chooses theirs through the link.
    unusable = secrets.token_urlsafe(48)
    user = users.create(conn, services.passwords, username, unusable, roles, email)
    audit_admin(conn, actor, "create_user", user, roles=list(user.roles), delivery=delivery)
    return user, set_password_link_in_db(conn, user, actor.address)


async def create_user(
    services: AccountServices,
    actor: Actor,
    username: str,
    email: str | None,
    roles: list[str],
    send_email: bool,
    link_base: str,
    *,
    translations: gettext.NullTranslations | None = None,
) -> tuple[users.User, str]:
    """A new account without a usable password, and the token of its first-password link (mailed
    to the user with ``send_email``, else for the administrator to hand over)."""
    email = users.check_email(email.strip() if email else None)
    if send_email and not services.mailer.enabled:
        raise AdminError("no mail server is configured (FORWARDAUTH_SMTP_URL): hand the link over yourself")
    if send_email and email is None:
        raise AdminError("the link can only be e-mailed to a user with an e-mail address")
    delivery = "email" if send_email else "link"
    user, token = await services.db.run(_create_in_db, services, actor, username, email, roles, delivery)
    if send_email:
        send_welcome(services, user, token, link_base, translations)
    return user, token


async def _ending(services: AccountServices, work: Callable[[Connection], tuple[T, Ended]]) -> T:
    """Run ``work`` (a change that ends sessions) in one transaction, then revoke those sessions'
    access tokens in Redis (queued in the worker while Redis refuses); its result."""
    result, ended = await services.db.run(work)
    await finish_ending(services, ended)
    return result


def _live(conn: Connection, user_id: str) -> int:
    """How many sessions of the user are live: what the page says ending them all ended (the
    revocation that follows ends whatever is live then, a session opened meanwhile too)."""
    return len(sessionlist.of_user(conn, user_id))


async def set_disabled(services: AccountServices, actor: Actor, username: str, disabled: bool) -> int:
    """Disable a user (every session ends at once) or enable them; how many sessions ended."""

    def work(conn: Connection) -> tuple[int, Ended]:
        target = _user(conn, username)
        if target.id == actor.user_id and disabled:
            raise AdminError("you cannot disable your own account")
        live = _live(conn, target.id) if disabled else 0
        user, ended = set_user_disabled_in_db(
            conn, target.username, disabled, recent_seconds(services.settings), actor.address
        )
        audit_admin(conn, actor, "disable" if disabled else "enable", user, sessions_ended=live)
        return live, ended

    return await _ending(services, work)


async def set_roles(services: AccountServices, actor: Actor, username: str, roles: list[str]) -> users.User:
    """Give a user exactly ``roles``. A role taken away ends the user's sessions (their tokens carry
    the roles); an administrator cannot take their own admin role away."""
    admin_role = services.settings.admin_role

    def work(conn: Connection) -> tuple[users.User, Ended]:
        before, after = users.modify(conn, _user(conn, username).username, lambda _current: roles, None, False)
        removed = sorted(set(before.roles) - set(after.roles))
        if after.id == actor.user_id and admin_role in removed:
            raise AdminError(f"you cannot remove your own {admin_role!r} role")
        live = _live(conn, after.id) if removed else 0
        recent = recent_seconds(services.settings)
        # and the personal access tokens, whose records carry the roles
        ended = revoke_user_in_db(conn, after.id, recent, actor.address, "roles_changed") if removed else Ended()
        audit_admin(conn, actor, "roles", after, roles=list(after.roles), removed=removed, sessions_ended=live)
        return after, ended

    return await _ending(services, work)


async def reset_second_factors(services: AccountServices, actor: Actor, username: str) -> int:
    """Take every second factor of a user away and end their sessions; how many factors were removed."""

    def work(conn: Connection) -> tuple[int, Ended]:
        user = _user(conn, username)
        live = _live(conn, user.id)
        done = secondfactors.reset(conn, user.id, actor.address, actor.username, user.username)
        audit_admin(conn, actor, "mfa_reset", user, removed=done.removed, sessions_ended=live)
        return done.removed, Ended(done.sids, list(done.notices))

    return await _ending(services, work)


async def end_user_sessions(services: AccountServices, actor: Actor, username: str) -> int:
    """End every session of a user; how many."""

    def work(conn: Connection) -> tuple[int, Ended]:
        user = _user(conn, username)
        live = _live(conn, user.id)
        ended = sessions.revoke_user(conn, user.id, recent_seconds(services.settings), actor.address, "admin")
        audit_admin(conn, actor, "end_sessions", user, sessions_ended=live)
        return live, ended

    return await _ending(services, work)


async def end_session(services: AccountServices, actor: Actor, sid: str) -> bool:
    """End one live session (of any user) and the client sessions opened from it; False when
    ``sid`` is no live session."""

    def work(conn: Connection) -> tuple[bool, Ended]:
        owner = sessionlist.live_owner(conn, sid)
        user = users.get(conn, owner) if owner else None
        if user is None:
            return False, Ended()
        ended = sessions.logout(conn, sid, user.id, user.username, actor.address, {"reason": "admin"})
        audit_admin(conn, actor, "end_session", user, sid=sid)
        return True, ended

    return await _ending(services, work)


def _password_link(conn: Connection, actor: Actor, username: str) -> str:
    user = _user(conn, username)
    if user.disabled:
        raise AdminError(f"{user.username} is disabled: enable the account first")
    audit_admin(conn, actor, "password_link", user)
    return set_password_link_in_db(conn, user, actor.address)


async def password_link(services: AccountServices, actor: Actor, username: str) -> str:
    """A new one-time set-password link for a user (earlier ones stop working); its token."""
    return await services.db.run(_password_link, actor, username)
