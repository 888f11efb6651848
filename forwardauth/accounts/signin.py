"""Signing in: who the client is, brute-force regulation around the password check, and a session
that exists only if its tokens reach the client.

The client (``address``, from ``http.common.client_address``) is the one access rules see: behind a trusted proxy
the right-most ``X-Forwarded-For`` hop that is not one of our proxies, else the peer. Throttling by
the peer would count everyone behind the proxy as one client, so one client could lock out all.

A right password for which a second factor is due (see accounts.secondfactor) opens no session:
``sign_in`` answers ``SecondFactorDue`` and the caller goes on to the second factor.

A login writes to PostgreSQL (the session, committed with the audit) and then to Redis (the
access token, the known client). When Redis refuses a write (down, out of memory, a read-only
replica), the client gets a 503 and no tokens, so the session just opened is taken back: nothing
is left that nobody holds.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from forwardauth.accounts.issue import issue_access
from forwardauth.accounts.services import AccountServices
from forwardauth.core.authn import PASSWORD, Authentication
from forwardauth.core.passwords import Passwords
from forwardauth.core.tokens import MintedToken
from forwardauth.core.usernames import MAX_USERNAME, normalise_username
from forwardauth.stores import audit, secondfactors, sessions, users
from forwardauth.stores.postgres import POSTGRES_DOWN, Connection

log = logging.getLogger("forwardauth.signin")

DEVICE_BYTES = 32

# How a failed or throttled sign-in is reported, with the client's own details (the HTTP layer's
# one line for fail2ban and its kind): the normalised username, and the wait when throttled.
FailureReport = Callable[[str, "int | None"], None]


def new_device() -> str:
    """A device cookie value: 256 random bits, only its digest is kept in Redis."""
    return secrets.token_urlsafe(DEVICE_BYTES)


def device_id(cookie: str | None) -> str | None:
    """What Redis keeps of a device cookie: a digest, so a reader of Redis cannot present it."""
    return hashlib.sha256(cookie.encode()).hexdigest()[:32] if cookie else None


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SignedIn:
    session: sessions.Session
    access: MintedToken
    device: str | None = None  # the browser's new device cookie, when it presented one (see sign_in)


@dataclass(frozen=True, slots=True)
class SecondFactorDue:
    """A right password, and a second factor due before any session (see accounts.secondfactor)."""

    user: users.User
    enrolled: secondfactors.Enrolled  # none at all: the user must enrol first (a browser can)
    auth: Authentication  # what the password proved, and when
    device: str | None = None  # as SignedIn.device


def second_factor_due(mode: str, enrolled: secondfactors.Enrolled, wanted: bool) -> bool:
    """Whether a right password is not enough (``mode``: FORWARDAUTH_SECOND_FACTOR): second
    factors are on and the user has one, or every user needs one, or the page asked for
    (``wanted``: its rule) needs one."""
    return mode != "off" and (enrolled.any or mode == "required" or wanted)


def login_in_db(
    conn: Connection,
    passwords: Passwords,
    username: str,
    password: str,
    ip: str | None,
    ttl: int,
    client_id: str | None = None,
    scope: str | None = None,
    mode: str = "off",
    wanted: bool = False,
    user_agent: str | None = None,
) -> sessions.Session | SecondFactorDue | None:
    """Check the password and open a session (or, a second factor due, say so), in one
    transaction in one worker thread. ``mode``: FORWARDAUTH_SECOND_FACTOR; ``wanted``: the page
    asked for needs a second factor; ``user_agent``: the client's header, kept with the session."""
    user = users.authenticate(conn, passwords, username, password, ip, success=None)
    if user is None:
        return None
    if mode != "off":
        enrolled = secondfactors.enrolled(conn, user.id)
        if second_factor_due(mode, enrolled, wanted):  # audited as a password only: no session yet
            audit.record(conn, "login_success", user.id, user.username, ip, {"second_factor": "due"})
            return SecondFactorDue(user, enrolled, Authentication.of((PASSWORD,), int(time.time())))
    audit.record(conn, "login_success", user.id, user.username, ip)
    return sessions.start(conn, user, ttl, client_id, scope, user_agent=user_agent, client_ip=ip)


async def sign_in(
    services: AccountServices,
    username: str,
    password: str,
    address: str | None,
    report: FailureReport,
    client_id: str | None = None,
    scope: str | None = None,
    device: str | None = None,
    second_factor_wanted: bool = False,
    user_agent: str | None = None,
) -> SignedIn | SecondFactorDue | None:
    """Check a password under brute-force regulation and open a session with its first access
    token: the one way in for /login and the password grant. ``device``: the browser's device
    cookie (made by the caller for a browser that has none); ``report``: told of each failure.
    ``None`` for a wrong password; ``SecondFactorDue`` when the password is not enough
    (``second_factor_wanted``: the page asked for needs a second factor). ``user_agent``: the
    request's User-Agent header, which the account portal shows with the session.

    The device cookie a browser presents only ever *asks* to be known; what becomes known on a
    right password is a fresh value of ours (``SignedIn.device``, for the caller to set). Else a
    value planted in the victim's browser (any sibling subdomain can set a cookie) would become
    known for the victim when they sign in, and its planter would be spared the username limit."""
    who = normalise_username(username)[:MAX_USERNAME]
    known_device = device_id(device)
    verdict = await services.regulation.check(who, address, known_device)
    if not verdict.allowed:
        report(who, verdict.retry_after)
        await services.db.run(audit.record, "login_throttled", None, who, address, {"retry_after": verdict.retry_after})
        raise Throttled(verdict.retry_after)
    session = await services.db.run(
        login_in_db,
        services.passwords,
        username,
        password,
        address,
        services.settings.refresh_ttl,
        client_id,
        scope,
        services.settings.second_factor,
        second_factor_wanted,
        user_agent,
    )
    if session is None:
        report(who, None)
        await services.regulation.failed(who, address, verdict.known)
        return None
    fresh = new_device() if device is not None else None
    if isinstance(session, SecondFactorDue):
        await services.regulation.succeeded(who, address, device_id(fresh))
        return SecondFactorDue(session.user, session.enrolled, session.auth, fresh)
    try:
        await services.regulation.succeeded(who, address, device_id(fresh))
        access = await issue_access(services, session)
    except Exception:  # Redis refused a write: the client gets a 503 and no tokens
        await take_back(services, session, address)
        raise
    return SignedIn(session, access, fresh)


async def take_back(services: AccountServices, session: sessions.Session, address: str | None) -> None:
    """Remove a session whose tokens the client will never receive (best effort: PostgreSQL may
    be down too, and then the row stays, its refresh token known to nobody)."""
    try:
        await services.db.run(sessions.discard, session.sid, address)
    except POSTGRES_DOWN as exc:
        log.warning(
            "a session whose tokens could not be handed out stays in PostgreSQL (%s); its refresh token was never sent",
            type(exc).__name__,
        )
