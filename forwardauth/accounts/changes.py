"""Account changes that end sessions at once: a password change, disabling a user or a client.

Each is one PostgreSQL transaction (the change, the revocation of the refresh tokens and the audit
event together), then the revocation in Redis of the access tokens those sessions still hold.
Redis is asked first: while it is unreachable the change is refused before anything is written,
rather than committed with access tokens that keep passing ``/auth`` until they expire.

Revoked is revoked: enabling a user or a client again restores none of its old tokens.

A user's personal access tokens end with them: disabling the user, a password change, ``user
revoke`` (which a removed role and a deletion also run) revoke them in the same transaction
(``revoke_user_in_db``), and their ``pat-<id>`` sessions are revoked in Redis with the others.
Counts of sessions returned here leave them out.

Ending a browser session ends the OIDC clients' sessions opened from it (``stores.cascade``), and
queues a back-channel logout for each of those clients that registered a URI: every path that
ends sessions finishes through ``finish_ending`` (or ``end_sessions``, which does it all).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from forwardauth.accounts.services import AccountServices
from forwardauth.config import Settings
from forwardauth.core.passwords import Passwords
from forwardauth.core.pats import is_pat_sid
from forwardauth.core.usernames import normalise_username
from forwardauth.stores import cascade, clients, consents, pats, secondfactors, sessions, users
from forwardauth.stores.audit import record
from forwardauth.stores.backchannel import Notice
from forwardauth.stores.cascade import Ended
from forwardauth.stores.postgres import Connection
from forwardauth.stores.redis import REDIS_DOWN

log = logging.getLogger("forwardauth.accounts")


class AccountError(Exception):
    """The change could not be made, or not completely; the message says what to do."""


def recent_seconds(settings: Settings) -> int:
    """How far back a session may have minted an access token that is still live."""
    return settings.access_ttl + settings.leeway + 60


async def _revoke_in_redis(services: AccountServices, sids: list[str], what: str) -> int:
    """Revoke sessions' access tokens after PostgreSQL committed; how many tokens were live."""
    try:
        return sum([await services.revocations.revoke_session(sid) for sid in sids])
    except REDIS_DOWN as exc:
        raise AccountError(
            f"{what} is saved and its refresh tokens are revoked, but Redis became unreachable "
            f"({type(exc).__name__}): access tokens issued in the last {recent_seconds(services.settings)} s "
            "may pass until they expire; run the command again when Redis is back"
        ) from None


async def _queue_notices(services: AccountServices, notices: list[Notice], what: str) -> None:
    """Queue back-channel logouts for a command (which has no worker to keep them in)."""
    if not notices:
        return
    try:
        await services.backchannel.enqueue(notices)
    except REDIS_DOWN as exc:
        raise AccountError(
            f"{what} is done, but Redis became unreachable ({type(exc).__name__}) before the back-channel "
            f"logouts of {len(notices)} client session(s) were queued: those clients are not told"
        ) from None


async def finish_ending(services: AccountServices, ended: Ended) -> bool:
    """After PostgreSQL committed the end of sessions (``ended``, children included): revoke their
    access tokens in Redis, queued in the worker while it refuses, then queue the back-channel
    logouts (kept in the worker while Redis refuses). Whether Redis revoked them now."""
    revoked = await services.revocations.revoke_or_queue(ended.sids)
    if ended.notices:
        await services.backchannel.enqueue_or_keep(ended.notices)
    return revoked


def _end_in_db(
    conn: Connection,
    sids: list[str],
    user_id: str | None,
    username: str | None,
    client_ip: str | None,
    detail: dict[str, object],
) -> Ended:
    ended = Ended()
    for sid in dict.fromkeys(sids):
        ended = ended + sessions.logout(conn, sid, user_id, username, client_ip, detail)
    return ended


async def end_sessions(
    services: AccountServices,
    sids: Sequence[str],
    reason: str = "logout",
    *,
    client_ip: str | None = None,
    user_id: str | None = None,
    username: str | None = None,
    client_id: str | None = None,
) -> bool:
    """End sessions ``sids`` (a logout; RP-initiated by ``client_id``...) with the OIDC clients'
    sessions opened from them: PostgreSQL (audited ``logout`` each, as the session's user, else
    ``user_id``), then Redis, then the back-channel logouts (``finish_ending``). Whether Redis
    revoked them now (else it will when it can)."""
    if not sids:
        return True
    detail: dict[str, object] = {"reason": reason} if reason != "logout" else {}
    if client_id is not None:
        detail["client_id"] = client_id
    ended = await services.db.run(_end_in_db, list(sids), user_id, username, client_ip, detail)
    return await finish_ending(services, ended)


def sessions_in(ended: Ended) -> int:
    """How many sign-in sessions ``ended`` holds (personal access tokens left out)."""
    return sum(not is_pat_sid(sid) for sid in ended.sids)


def revoke_user_in_db(
    conn: Connection,
    user_id: str,
    recent: int,
    client_ip: str | None,
    reason: str,
    except_sid: str | None = None,
) -> Ended:
    """End every session of a user but ``except_sid`` (``sessions.revoke_user``) and revoke all
    their personal access tokens, in one transaction; the caller revokes ``sids`` in Redis after
    the commit (``finish_ending``)."""
    ended = sessions.revoke_user(conn, user_id, recent, client_ip, reason, except_sid)  # locks the user's row first
    return ended + Ended(pats.revoke_user(conn, user_id, reason, client_ip).sids)


async def _redis_up(services: AccountServices) -> None:
    try:
        await services.revocations.ping()
    except REDIS_DOWN as exc:
        raise AccountError(f"Redis is unreachable ({type(exc).__name__}): nothing was changed") from None


async def end_user_sessions(
    services: AccountServices,
    user_id: str,
    client_ip: str | None,
    reason: str = "logout_all",
    except_sid: str | None = None,
) -> tuple[int, bool]:
    """End every session of a user (but ``except_sid``), for a request to the server: PostgreSQL,
    then Redis, where a refused revocation is queued until Redis takes writes again. (How many
    sessions, whether Redis revoked them now.)"""
    ended = await services.db.run(
        sessions.revoke_user, user_id, recent_seconds(services.settings), client_ip, reason, except_sid
    )
    return len(ended.sids), await finish_ending(services, ended)


async def revoke_user(services: AccountServices, username: str) -> tuple[users.User, int]:
    """``forwardauth user revoke``: every session of the user ends (nothing done while Redis is down)."""
    await _redis_up(services)
    user = await services.db.run(users.find, username)
    if user is None:
        raise users.UserError(f"no user {normalise_username(username)!r}")
    ended = await services.db.run(revoke_user_in_db, user.id, recent_seconds(services.settings), None, "revoked")
    what = f"revoking the sessions of {user.username}"
    await _revoke_in_redis(services, ended.sids, what)
    await _queue_notices(services, ended.notices, what)
    return user, sessions_in(ended)


def change_password_in_db(
    conn: Connection,
    passwords: Passwords,
    username: str,
    password: str,
    recent: int,
    client_ip: str | None,
    except_sid: str | None,
) -> tuple[users.User, Ended]:
    user = users.set_password(conn, passwords, username, password)  # the UPDATE locks the user's row
    ended = revoke_user_in_db(conn, user.id, recent, client_ip, "password_change", except_sid)
    record(
        conn,
        "user_change",
        user.id,
        user.username,
        client_ip,
        {"action": "passwd", "sessions_revoked": sessions_in(ended), "kept_session": except_sid is not None},
    )
    return user, ended


async def change_password(
    services: AccountServices,
    username: str,
    password: str,
    client_ip: str | None = None,
    except_sid: str | None = None,
) -> tuple[users.User, int]:
    """Set a user's password and end all their sessions but ``except_sid``.

    ``except_sid`` is for a user changing their own password (a future self-service page): the
    session they do it from may stay. The CLI keeps none.
    """
    await _redis_up(services)
    user, ended = await services.db.run(
        change_password_in_db,
        services.passwords,
        username,
        password,
        recent_seconds(services.settings),
        client_ip,
        except_sid,
    )
    await _revoke_in_redis(services, ended.sids, f"the password of {user.username}")
    await _queue_notices(services, ended.notices, f"the password of {user.username}")
    return user, sessions_in(ended)


def set_user_disabled_in_db(
    conn: Connection, username: str, disabled: bool, recent: int, client_ip: str | None
) -> tuple[users.User, Ended]:
    user = users.set_disabled(conn, username, disabled)  # the UPDATE locks the user's row
    ended = revoke_user_in_db(conn, user.id, recent, client_ip, "user_disabled") if disabled else Ended()
    record(
        conn,
        "user_change",
        user.id,
        user.username,
        client_ip,
        {"action": "disable" if disabled else "enable", "sessions_revoked": sessions_in(ended)},
    )
    return user, ended


async def set_user_disabled(
    services: AccountServices, username: str, disabled: bool, client_ip: str | None = None
) -> tuple[users.User, int]:
    """Disable a user and end all their sessions, or enable them (no old session comes back)."""
    if disabled:
        await _redis_up(services)
    user, ended = await services.db.run(
        set_user_disabled_in_db, username, disabled, recent_seconds(services.settings), client_ip
    )
    await _revoke_in_redis(services, ended.sids, f"disabling {user.username}")
    await _queue_notices(services, ended.notices, f"disabling {user.username}")
    return user, sessions_in(ended)


async def set_client_disabled(
    services: AccountServices, client_id: str, disabled: bool, client_ip: str | None = None
) -> tuple[clients.Client, int]:
    """Disable a client and revoke every token it holds (its users' sessions through it and its
    own client_credentials tokens), or enable it (nothing comes back); how many access tokens
    were live."""
    settings = services.settings
    if disabled:
        await _redis_up(services)
    client, sids = await services.db.run(clients.set_disabled, client_id, disabled, recent_seconds(settings), client_ip)
    if not disabled:
        return client, 0
    own = clients.own_sessions(client.id, recent_seconds(settings))
    return client, await _revoke_in_redis(services, [*sids, *own], f"disabling client {client.id}")


def _revoke_consent_in_db(
    conn: Connection, username: str, client_id: str, recent: int
) -> tuple[users.User, bool, list[str]]:
    user = users.find(conn, username)
    if user is None:
        raise users.UserError(f"no user {normalise_username(username)!r}")
    had = consents.revoke(conn, user.id, client_id, None, user.username)
    return user, had, cascade.revoke_client(conn, user.id, client_id, recent, "consent_revoked")


async def revoke_consent(services: AccountServices, username: str, client_id: str) -> tuple[users.User, bool, int]:
    """``forwardauth user consents NAME --revoke CLIENT``: forget the consent (the next sign-in to
    the client asks again) and end the user's sessions with that client, whose tokens the consent
    let it have. (The user, whether there was a consent, how many sessions ended.)"""
    await _redis_up(services)
    user, had, sids = await services.db.run(
        _revoke_consent_in_db, username, client_id, recent_seconds(services.settings)
    )
    await _revoke_in_redis(services, sids, f"revoking the consent of {user.username} to {client_id}")
    return user, had, len(sids)


def _reset_second_factors_in_db(
    conn: Connection, username: str, by: str, client_ip: str | None
) -> tuple[users.User, secondfactors.Reset]:
    user = users.find(conn, username)
    if user is None:
        raise users.UserError(f"no user {normalise_username(username)!r}")
    return user, secondfactors.reset(conn, user.id, client_ip, by, user.username)


async def reset_second_factors(
    services: AccountServices, username: str, by: str = "cli", client_ip: str | None = None
) -> tuple[users.User, secondfactors.Reset]:
    """Take every second factor of a user away (TOTP, passkeys, recovery codes) and end all their
    sessions, which whoever holds a lost factor may have opened: audited ``mfa_reset``. Nothing is
    done while Redis is down."""
    await _redis_up(services)
    user, done = await services.db.run(_reset_second_factors_in_db, username, by, client_ip)
    what = f"the reset of the second factors of {user.username}"
    await _revoke_in_redis(services, done.sids, what)
    await _queue_notices(services, list(done.notices), what)
    return user, done
