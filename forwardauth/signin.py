"""Signing in: who the client is, brute-force regulation around the password check, and a session
that exists only if its tokens reach the client.

The client is the one access rules see (``forwarding.client_address``): behind a trusted proxy
the right-most ``X-Forwarded-For`` hop that is not one of our proxies, else the peer. Throttling by
the peer would count everyone behind the proxy as one client, so one client could lock out all.

A login writes to PostgreSQL (the session, committed with the audit) and then to Redis (the
access token, the known client). When Redis refuses a write (down, out of memory, a read-only
replica), the client gets a 503 and no tokens, so the session just opened is taken back: nothing
is left that nobody holds.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from . import audit, browser, sessions, users
from .connections import POSTGRES_DOWN
from .credentials import AmbiguousToken, cookie_value
from .forwarding import client_address as forwarded_client
from .forwarding import forwarded_for, is_trusted, path_prefix
from .passwords import Passwords
from .regulation import KNOWN_SECONDS
from .tokens import MintedToken

if TYPE_CHECKING:
    from .config import Settings
    from .web import Services

log = logging.getLogger("forwardauth.signin")

DEVICE_COOKIE_SUFFIX = "_device"
DEVICE_BYTES = 32
MAX_DEVICE_COOKIE = 64


def client_address(request: web.Request, settings: Settings) -> str | None:
    """The real client's address, as access rules see it (the peer when it is no trusted proxy)."""
    remote = request.remote
    if not is_trusted(remote, settings.trusted_proxies):
        return remote
    # Every X-Forwarded-For line (a proxy may add its own); an unreadable hop (only a trusted
    # sender can produce one): the proxy is all we know.
    return forwarded_client(forwarded_for(request.headers), remote, settings.trusted_proxies) or remote


# --- the device cookie: a browser that signed in before -------------------------------------------


def device_cookie_name(settings: Settings) -> str:
    return settings.cookie_name + DEVICE_COOKIE_SUFFIX


def device_of(request: web.Request, settings: Settings) -> str | None:
    """The browser's device cookie, if it sent exactly one well-formed value."""
    try:
        value = cookie_value(request.headers.getall(hdrs.COOKIE, ()), device_cookie_name(settings))
    except AmbiguousToken:
        return None
    return value if value and len(value) <= MAX_DEVICE_COOKIE else None


def new_device() -> str:
    """A device cookie value: 256 random bits, only its digest is kept in Redis."""
    return secrets.token_urlsafe(DEVICE_BYTES)


def device_id(cookie: str | None) -> str | None:
    """What Redis keeps of a device cookie: a digest, so a reader of Redis cannot present it."""
    return hashlib.sha256(cookie.encode()).hexdigest()[:32] if cookie else None


def set_device_cookie(response: web.StreamResponse, request: web.Request, settings: Settings, value: str) -> None:
    """Remember this browser (``KNOWN_SECONDS``): host-only, on forwardauth's own paths, like the
    refresh cookie; it only exempts the browser from the per-username login limit."""
    folder = path_prefix(request.headers, request.remote, settings.trusted_proxies) + "/"
    response.set_cookie(device_cookie_name(settings), value, max_age=KNOWN_SECONDS, path=folder, httponly=True,
                        samesite="Lax", secure=settings.cookie_secure)


# --- signing in ----------------------------------------------------------------------------------


class Throttled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SignedIn:
    session: sessions.Session
    access: MintedToken
    device: str | None = None  # the browser's new device cookie, when it presented one (see sign_in)


async def issue_access(services: Services, session: sessions.Session) -> MintedToken:
    """Mint an access token for ``session`` and mark it live in Redis."""
    minted = services.tokens.mint(session.user.identity, session.sid, scope=session.scope,
                                  client_id=session.client_id)
    await services.revocations.register(session.sid, minted.claims.jti, services.settings.access_ttl)
    return minted


def login_in_db(
    conn: users.Connection, passwords: Passwords, username: str, password: str, ip: str | None, ttl: int,
    client_id: str | None = None, scope: str | None = None,
) -> sessions.Session | None:
    """Check the password and open a session, in one transaction in one worker thread."""
    user = users.authenticate(conn, passwords, username, password, ip)
    return sessions.start(conn, user, ttl, client_id, scope) if user else None


async def sign_in(
    services: Services, username: str, password: str, address: str | None, client_id: str | None = None,
    scope: str | None = None, device: str | None = None,
) -> SignedIn | None:
    """Check a password under brute-force regulation and open a session with its first access
    token: the one way in for /login and the password grant. ``device``: the browser's device
    cookie (made by the caller for a browser that has none). ``None`` for a wrong password.

    The device cookie a browser presents only ever *asks* to be known; what becomes known on a
    right password is a fresh value of ours (``SignedIn.device``, for the caller to set). Else a
    value planted in the victim's browser (any sibling subdomain can set a cookie) would become
    known for the victim when they sign in, and its planter would be spared the username limit."""
    who = users.normalise_username(username)[: users.MAX_USERNAME]
    known_device = device_id(device)
    verdict = await services.regulation.check(who, address, known_device)
    if not verdict.allowed:
        browser.log_login_failed(who, verdict.retry_after)  # one INFO line, for fail2ban and its kind
        await services.db.run(audit.record, "login_throttled", None, who, address, {"retry_after": verdict.retry_after})
        raise Throttled(verdict.retry_after)
    session = await services.db.run(login_in_db, services.passwords, username, password, address,
                                    services.settings.refresh_ttl, client_id, scope)
    if session is None:
        browser.log_login_failed(who)
        await services.regulation.failed(who, address, verdict.known)
        return None
    fresh = new_device() if device is not None else None
    try:
        await services.regulation.succeeded(who, address, device_id(fresh))
        access = await issue_access(services, session)
    except Exception:  # Redis refused a write: the client gets a 503 and no tokens
        await take_back(services, session, address)
        raise
    return SignedIn(session, access, fresh)


async def take_back(services: Services, session: sessions.Session, address: str | None) -> None:
    """Remove a session whose tokens the client will never receive (best effort: PostgreSQL may
    be down too, and then the row stays, its refresh token known to nobody)."""
    try:
        await services.db.run(sessions.discard, session.sid, address)
    except POSTGRES_DOWN as exc:
        log.warning("a session whose tokens could not be handed out stays in PostgreSQL (%s); its refresh "
                    "token was never sent", type(exc).__name__)
