"""The account portal's actions: a user's own sessions and password (and the admin console's
list of everyone's sessions).

Ending sessions goes the way a logout does (``changes``): PostgreSQL, then Redis on every worker
and instance, then the back-channel logouts of the OIDC clients' sessions opened from them.

Changing one's password (or e-mail address) asks for the current one, checked like a sign-in (brute-force regulation
on the same counters, a wrong one audited as a failed login) but opening no session: someone
at an unlocked computer must not get the password changed, nor a way to guess it faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from forwardauth.accounts import changes
from forwardauth.accounts.services import AccountServices
from forwardauth.accounts.signin import Throttled
from forwardauth.core.devices import describe
from forwardauth.core.passwords import check_policy
from forwardauth.stores import audit, sessionlist, users


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session as a page shows it."""

    sid: str
    device: str  # "Firefox on Linux", "curl"... (core.devices)
    client_ip: str | None  # of the sign-in or the last renewal
    signed_in: datetime
    last_renewal: datetime
    client_id: str | None  # an OAuth2/OIDC client's session (the app's name on the page)
    amr: tuple[str, ...]
    current: bool  # the session the page is looked at from
    username: str


class WrongPassword(Exception):
    """The current password the portal asked for is wrong (counted as a failed sign-in)."""


def _view(session: sessionlist.LiveSession, current_sid: str | None) -> SessionView:
    return SessionView(
        sid=session.sid,
        device=describe(session.user_agent),
        client_ip=session.client_ip,
        signed_in=session.signed_in,
        last_renewal=session.last_renewal,
        client_id=session.client_id,
        amr=session.amr,
        current=session.sid == current_sid,
        username=session.username,
    )


async def sessions_of(services: AccountServices, user_id: str, current_sid: str | None) -> list[SessionView]:
    """The user's live sessions, the most recently renewed first; ``current_sid`` marked."""
    return [_view(s, current_sid) for s in await services.db.run(sessionlist.of_user, user_id)]


async def all_sessions(
    services: AccountServices, search: str = "", limit: int = 50, offset: int = 0
) -> list[SessionView]:
    """Every user's live sessions, a page at a time (see ``sessionlist.everyone`` for ``search``)."""
    return [_view(s, None) for s in await services.db.run(sessionlist.everyone, search, limit, offset)]


async def end_own_session(services: AccountServices, user_id: str, sid: str, address: str | None) -> bool:
    """End session ``sid`` of the user (with the OIDC clients' sessions opened from it), as a
    logout does; ``False``, and nothing done, when it is not a live session of theirs."""
    if await services.db.run(sessionlist.live_owner, sid) != user_id:
        return False
    await changes.end_sessions(services, [sid], client_ip=address, user_id=user_id)
    return True


async def end_other_sessions(services: AccountServices, user_id: str, keep_sid: str, address: str | None) -> int:
    """ "Sign out everywhere else": every session of the user but ``keep_sid`` (and the OIDC
    clients' sessions opened from it) ends; how many ended."""
    ended, _ = await changes.end_user_sessions(services, user_id, address, "logout_others", keep_sid)
    return ended


async def check_own_password(services: AccountServices, user: users.User, password: str, address: str | None) -> None:
    """``password`` must be the user's, checked as a sign-in is (``Throttled``, ``WrongPassword``)
    but opening no session: what a change of one's password or e-mail address asks first."""
    who = user.username  # stored normalised: the counters a sign-in with this name uses
    verdict = await services.regulation.check(who, address)
    if not verdict.allowed:
        detail = {"retry_after": verdict.retry_after, "for": "portal"}
        await services.db.run(audit.record, "login_throttled", user.id, who, address, detail)
        raise Throttled(verdict.retry_after)
    # Audits a failure as ``login_failure``; a success is audited with the change itself.
    if await services.db.run(users.authenticate, services.passwords, who, password, address, None) is None:
        await services.regulation.failed(who, address, verdict.known)
        raise WrongPassword("the current password is wrong")
    await services.regulation.succeeded(who, address)


async def change_own_password(
    services: AccountServices, user: users.User, current: str, new: str, address: str | None, keep_sid: str
) -> int:
    """Change the user's password, the current one given: every other session ends, ``keep_sid``
    (the one it is done from) stays. ``WrongPassword``, ``Throttled``, ``ValueError`` (with the
    message to show) for a new password the policy refuses, ``changes.AccountError`` when Redis is
    down (nothing changed). How many sessions ended."""
    await check_own_password(services, user, current, address)
    users.check_password(new)
    await services.db.run_blocking(
        check_policy, new, services.settings.password_min_length, (user.username, user.email)
    )
    _, ended = await changes.change_password(services, user.username, new, address, except_sid=keep_sid)
    return ended
