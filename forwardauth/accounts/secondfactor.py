"""Second factors after the password: TOTP and recovery codes checked under regulation, TOTP
enrolment, and ``complete``, the one way a pending sign-in becomes a session.

A second factor is *due* after a right password when second factors are not off and the user has
one, or they are required, or the page asked for needs one (a ``second_factor`` rule). Then no
session is opened until it is given: a password alone is never the whole account.

Codes are checked like passwords: each failure counts against the client address and against
``2fa:<user id>`` (the pair of both too), so guessing 6 digits is as slow as guessing a password.
A TOTP code is accepted once (Redis remembers the user and time step), one step either side.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyotp

from forwardauth.accounts.changes import finish_ending
from forwardauth.accounts.issue import issue_access
from forwardauth.accounts.services import AccountServices
from forwardauth.accounts.signin import SecondFactorDue, SignedIn, Throttled, take_back
from forwardauth.core.authn import OTP, RECOVERY_CODE, Authentication
from forwardauth.stores import audit, cascade, recovery, secondfactors, sessions, totp, users
from forwardauth.stores.pending import Pending
from forwardauth.stores.postgres import Connection

TOTP_DIGITS = 6
TOTP_STEP = 30
VALID_WINDOW = 1  # steps either side of now: a clock a little off, a code typed as it changed
REPLAY_TTL = TOTP_STEP * (2 * VALID_WINDOW + 2)  # a used step is kept until it can no longer match
RECENT_AUTH = 15 * 60  # changing one's factors needs a sign-in this recent
MAX_CODE = 64
_DIGITS = re.compile(rf"[0-9]{{{TOTP_DIGITS}}}")


class SecondFactorRequired(Exception):
    """A right password, but a second factor is due and none (or a wrong one) was given."""


class SignInExpired(Exception):
    """The user was disabled or removed while the sign-in was pending: start again."""


def regulated_as(user_id: str) -> str:
    """The regulation subject of a user's second-factor attempts (never a username's counters)."""
    return f"2fa:{user_id}"


def normalise_code(code: str) -> str:
    """A typed code without the spaces and dashes people add (``123 456``)."""
    return re.sub(r"[\s-]", "", code)


def looks_like_totp(code: str) -> bool:
    return bool(_DIGITS.fullmatch(normalise_code(code)))


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is (within VALID_WINDOW of now), else None; every
    candidate is compared in constant time, none skipped."""
    code = normalise_code(code)
    if not _DIGITS.fullmatch(code):
        return None
    otp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP)
    current = otp.timecode(now)
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(otp.generate_otp(step), code):
            found = step
    return found


# --- checking a code ---------------------------------------------------------------------------


async def _regulate(services: AccountServices, user_id: str, address: str | None) -> None:
    verdict = await services.regulation.check(regulated_as(user_id), address)
    if not verdict.allowed:
        raise Throttled(verdict.retry_after)


async def _failed(services: AccountServices, user_id: str, username: str, address: str | None, reason: str) -> None:
    await services.regulation.failed(regulated_as(user_id), address)
    await services.db.run(audit.record, "mfa_failure", user_id, username, address, {"reason": reason})


def _secret(services: AccountServices, user_id: str, sealed: bytes) -> str:
    return services.sealer.open(sealed, user_id.encode()).decode()


async def _totp_step(
    services: AccountServices, user_id: str, code: str, confirmed: bool = True
) -> tuple[bytes | None, str]:
    """(the sealed secret, "") when ``code`` is the user's current TOTP code (of the app in use,
    or with ``confirmed=False`` the one being set up), used for the first time; else (None, why not)."""
    sealed = await services.db.run(totp.secret if confirmed else totp.pending_secret, user_id)
    if sealed is None:
        return None, "no authenticator app"
    step = matching_step(_secret(services, user_id, sealed), code, time.time())
    if step is None:
        return None, "wrong code"
    if not await services.onetime.first_use(services.onetime.keys.otp_used(user_id, step), REPLAY_TTL):
        return None, "code already used"
    return sealed, ""


def _use_recovery_in_db(conn: Connection, user_id: str, username: str, code: str, address: str | None) -> bool:
    if not recovery.use(conn, user_id, code):
        return False
    left = recovery.remaining(conn, user_id)
    audit.record(conn, "mfa_success", user_id, username, address, {"method": "recovery_code", "left": left})
    return True


async def check_code(services: AccountServices, user_id: str, username: str, code: str, address: str | None) -> str:
    """The amr method a code proves (``otp`` for a TOTP code, ``kba`` for a recovery code), or ""
    when it proves nothing. Regulated: ``Throttled`` when the client must wait."""
    await _regulate(services, user_id, address)
    code = code.strip()
    if not code or len(code) > MAX_CODE:
        await _failed(services, user_id, username, address, "malformed code")
        return ""
    if looks_like_totp(code):
        _, problem = await _totp_step(services, user_id, code)
        if not problem:
            await services.db.run(audit.record, "mfa_success", user_id, username, address, {"method": "totp"})
            return OTP
        await _failed(services, user_id, username, address, problem)
        return ""
    if await services.db.run(_use_recovery_in_db, user_id, username, code, address):
        return RECOVERY_CODE
    await _failed(services, user_id, username, address, "wrong recovery code")
    return ""


# --- from a right password to a session ----------------------------------------------------------


def pending_of(due: SecondFactorDue, rd: str = "", replaces_sid: str | None = None) -> Pending:
    """What a right password proved, for the second-factor step (or enrolment, with none)."""
    return Pending(
        user_id=due.user.id,
        username=due.user.username,
        amr=due.auth.amr,
        auth_time=due.auth.auth_time,
        rd=rd,
        replaces_sid=replaces_sid,
        must_enrol=not due.enrolled.any,
    )


async def with_code(
    services: AccountServices,
    due: SecondFactorDue,
    code: str,
    address: str | None,
    client_id: str | None = None,
    scope: str | None = None,
    user_agent: str | None = None,
) -> SignedIn:
    """JSON sign-in and the password grant: the ``otp`` field given beside the password."""
    if not due.enrolled.any:
        raise SecondFactorRequired("a second factor is required: set one up in the browser (the /mfa page) first")
    if not code:
        raise SecondFactorRequired("a second factor is due: give a TOTP or recovery code as otp")
    method = await check_code(services, due.user.id, due.user.username, code, address)
    if not method:
        raise SecondFactorRequired("the code (otp) is wrong or was already used")
    return await complete(services, pending_of(due), (method,), address, client_id, scope, user_agent)


def _open_in_db(
    conn: Connection,
    pending: Pending,
    auth: Authentication,
    ttl: int,
    address: str | None,
    client_id: str | None,
    scope: str | None,
    user_agent: str | None,
) -> tuple[sessions.Session, cascade.Ended] | None:
    """The new session, with the one it replaces (a step-up) ended in the same transaction (and
    the OIDC clients' sessions opened from it: what to finish in Redis and by back-channel)."""
    user = users.get(conn, pending.user_id, lock=True)
    if user is None or user.disabled:
        return None
    session = sessions.start(conn, user, ttl, client_id, scope, auth=auth, user_agent=user_agent, client_ip=address)
    ended = cascade.Ended()
    if pending.replaces_sid is not None:
        ended = cascade.end(conn, [pending.replaces_sid], "step_up")
        if ended.revoked:
            audit.record(conn, "revoke", user.id, None, address, {"sid": pending.replaces_sid, "reason": "step_up"})
    return session, ended


async def complete(
    services: AccountServices,
    pending: Pending,
    methods: tuple[str, ...],
    address: str | None,
    client_id: str | None = None,
    scope: str | None = None,
    user_agent: str | None = None,
) -> SignedIn:
    """Open the session of a pending sign-in once ``methods`` were proved (TOTP, recovery code,
    passkey): amr = what the pending sign-in had plus ``methods``; auth_time stays (a step-up of
    an old session did not prove the password again). A replaced session ends, in PostgreSQL and
    then Redis. ``SignInExpired`` when the user was disabled meanwhile. ``user_agent``: the
    completing request's header, kept with the session."""
    auth = Authentication.of((*pending.amr, *methods), pending.auth_time)
    ttl = services.settings.refresh_ttl
    opened = await services.db.run(_open_in_db, pending, auth, ttl, address, client_id, scope, user_agent)
    if opened is None:
        raise SignInExpired("the account was disabled or removed")
    session, ended = opened
    try:
        access = await issue_access(services, session)
    except Exception:  # Redis refused a write: the client gets a 503 and no tokens
        await take_back(services, session, address)
        raise
    if pending.replaces_sid is not None:
        await finish_ending(services, ended)
    return SignedIn(session, access)


# --- enrolment ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A TOTP secret not yet confirmed, as the user's app takes it (text, or a QR of ``uri``)."""

    secret: str
    uri: str


def issuer_name(issuer_url: str) -> str:
    """What authenticator apps show beside the username: our issuer's host."""
    return urlsplit(issuer_url).hostname or "forwardauth"


def _setup(services: AccountServices, username: str, secret: str) -> TotpSetup:
    uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP).provisioning_uri(
        name=username, issuer_name=issuer_name(services.settings.issuer)
    )
    return TotpSetup(secret, uri)


async def enrolled(services: AccountServices, user_id: str) -> secondfactors.Enrolled:
    return await services.db.run(secondfactors.enrolled, user_id)


async def start_totp(services: AccountServices, user_id: str, username: str) -> TotpSetup:
    """A new secret, stored sealed and unconfirmed (an app already set up keeps working until the
    new one is confirmed)."""
    secret = pyotp.random_base32()
    await services.db.run(totp.begin, user_id, services.sealer.seal(secret.encode(), user_id.encode()))
    return _setup(services, username, secret)


async def pending_totp(services: AccountServices, user_id: str, username: str) -> TotpSetup | None:
    """The set-up in progress (the page reloaded), if any."""
    sealed = await services.db.run(totp.pending_secret, user_id)
    return None if sealed is None else _setup(services, username, _secret(services, user_id, sealed))


def _confirm_in_db(
    conn: Connection, user_id: str, username: str, sealed: bytes, address: str | None
) -> list[str] | None:
    """Activate the set-up secret whose code was checked (``sealed``), if no other replaced it;
    a user's first factor comes with new recovery codes (any older ones are of no use)."""
    before = secondfactors.enrolled(conn, user_id)
    if not totp.confirm(conn, user_id, sealed):
        return None
    codes = recovery.generate(conn, user_id) if not before.any or before.recovery_codes == 0 else []
    audit.record(conn, "mfa_enrol", user_id, username, address, {"method": "totp", "recovery_codes": bool(codes)})
    return codes


async def confirm_totp(
    services: AccountServices, user_id: str, username: str, code: str, address: str | None
) -> list[str] | None:
    """Activate the set-up secret if ``code`` is its current code (regulated as a sign-in):
    ``None`` when not; else the new recovery codes, when the user had none (shown once), or []."""
    await _regulate(services, user_id, address)
    sealed, problem = await _totp_step(services, user_id, code, confirmed=False)
    if sealed is not None:
        codes = await services.db.run(_confirm_in_db, user_id, username, sealed, address)
        if codes is not None:
            return codes
        problem = "set-up replaced"
    await _failed(services, user_id, username, address, f"enrolment: {problem}")
    return None


def _regenerate_in_db(conn: Connection, user_id: str, username: str, address: str | None) -> list[str]:
    codes = recovery.generate(conn, user_id)
    audit.record(conn, "mfa_enrol", user_id, username, address, {"method": "recovery_codes"})
    return codes


async def regenerate_recovery(services: AccountServices, user_id: str, username: str, address: str | None) -> list[str]:
    """New recovery codes; the old ones stop working."""
    return await services.db.run(_regenerate_in_db, user_id, username, address)


def _remove_in_db(conn: Connection, user_id: str, username: str, address: str | None) -> bool:
    if not totp.remove(conn, user_id):
        return False
    audit.record(conn, "mfa_remove", user_id, username, address, {"method": "totp"})
    return True


async def remove_totp(services: AccountServices, user_id: str, username: str, address: str | None) -> bool:
    return await services.db.run(_remove_in_db, user_id, username, address)
