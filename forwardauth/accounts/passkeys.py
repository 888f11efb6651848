"""Passkeys (WebAuthn, with py_webauthn): registering one, and signing in with one, either alone
(passwordless: a discoverable credential names its user) or as the second factor after a password.

- The relying party is ``FORWARDAUTH_WEBAUTHN_RP_ID``; a ceremony runs only on a page whose
  origin is HTTPS (or HTTP on a loopback host, which browsers treat as secure) and whose host is
  the rp id or under it, and the browser's ``clientDataJSON`` must name that very origin.
- User verification (a PIN or biometric) is required every time: with it a passkey is two
  factors by itself (amr ``hwk``/``swk`` and ``user``, hence ``mfa``).
- Each challenge is answered once, within five minutes, for the purpose and the user or pending
  sign-in it was issued for. It travels sealed in a cookie (accounts.challenges: nothing is
  stored when options are issued); once an answer verified, a digest of it is marked used.
- A sign counter that did not grow (unless the authenticator keeps none: both 0) means a cloned
  key: refused. The backup flags are stored at each use; a passkey that may be synced between
  devices counts as ``swk``, one bound to its device as ``hwk``.
- Failures are regulated as second-factor codes are (``2fa:<user id>`` and the address), and
  audited; an unknown credential counts against the address only.
"""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    options_to_json_dict,
    parse_authentication_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from forwardauth.accounts import challenges
from forwardauth.accounts.secondfactor import issuer_name, regulated_as
from forwardauth.accounts.services import AccountServices
from forwardauth.accounts.signin import Throttled
from forwardauth.config import Settings
from forwardauth.core.authn import HARDWARE_KEY, SOFTWARE_KEY, USER_VERIFIED
from forwardauth.stores import audit, passkeys, recovery, users
from forwardauth.stores.postgres import Connection

log = logging.getLogger("forwardauth.passkeys")

REGISTER, PASSWORDLESS, SECOND_FACTOR = "register", "passwordless", "second_factor"
TIMEOUT_MS = 120_000  # what the browser is told; the challenge itself lives challenges.TTL
MAX_PASSKEYS = 20
UNKNOWN = "passkey"  # the regulation subject of credentials that are nobody's (address counters only)


class PasskeyError(Exception):
    """The ceremony is refused; the message is for the user (``status``: 400 bad input or page,
    401 not accepted, 403 not allowed here)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Verified:
    """A passkey that signed: whose, and the amr methods it proved."""

    user: users.User
    name: str
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Expected:
    """Whose passkey may answer: ``user_id``'s (a second factor), or anyone's (passwordless,
    ``user_id`` None), and what the challenge was issued for."""

    purpose: str
    bound: str = ""
    user_id: str | None = None
    username: str | None = None


def methods_of(backup_eligible: bool) -> tuple[str, ...]:
    return (SOFTWARE_KEY if backup_eligible else HARDWARE_KEY, USER_VERIFIED)


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_origin(settings: Settings, origin: str | None) -> str:
    """``origin`` (the page's, as the browser sees it) when passkeys work there, else why not."""
    rp_id = settings.webauthn_rp_id
    parts = urlsplit(origin or "")
    host = (parts.hostname or "").lower()
    secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))
    if origin is None or not host or not secure or not (host == rp_id or host.endswith("." + rp_id)):
        raise PasskeyError(
            f"Passkeys are not available on this page: it must be served over HTTPS from {rp_id} "
            "or a host under it (FORWARDAUTH_WEBAUTHN_RP_ID).",
            400,
        )
    return origin


STALE = "This passkey request has expired or was already used. Try again."


def _answering(services: AccountServices, sealed: str, purpose: str, bound: str, origin: str) -> challenges.Challenge:
    """The challenge sealed in the browser's cookie: it must be for this purpose, binding and
    origin, and not expired (whether it was answered already is known only at ``_spend``)."""
    found = challenges.opened(services.sealer, sealed, purpose, bound, origin)
    if found is None:
        raise PasskeyError(STALE, 400)
    return found


async def _spend(services: AccountServices, challenge: challenges.Challenge) -> None:
    """After the answer verified: the challenge's single use (a replayed answer stops here)."""
    if not await challenges.spend(services.onetime, challenge):
        log.info("passkey refused: its challenge was answered already")
        raise PasskeyError(STALE, 400)


def _descriptors(found: list[passkeys.Passkey]) -> list[PublicKeyCredentialDescriptor]:
    known = {t.value for t in AuthenticatorTransport}
    return [
        PublicKeyCredentialDescriptor(
            id=p.credential_id, transports=[AuthenticatorTransport(t) for t in p.transports if t in known] or None
        )
        for p in found
    ]


# --- registering a passkey ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    """A passkey kept: the amr methods it proves, and the user's new recovery codes when they had
    none (to show once), else []."""

    methods: tuple[str, ...]
    recovery_codes: list[str]


async def registration_options(
    services: AccountServices, user_id: str, username: str, origin: str
) -> tuple[dict[str, Any], str]:
    """Options for navigator.credentials.create() (JSON-ready), and the sealed challenge (the cookie's)."""
    settings = services.settings
    origin = checked_origin(settings, origin)
    mine = await services.db.run(passkeys.of_user, user_id)
    if len(mine) >= MAX_PASSKEYS:
        raise PasskeyError(f"You have {MAX_PASSKEYS} passkeys already: remove one first.", 400)
    options = generate_registration_options(
        rp_id=settings.webauthn_rp_id,
        rp_name=issuer_name(settings.issuer),
        user_id=passkeys.user_handle(user_id),
        user_name=username,
        timeout=TIMEOUT_MS,
        exclude_credentials=_descriptors(mine),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED
        ),
    )
    sealed = challenges.seal(services.sealer, options.challenge, REGISTER, user_id, origin)
    return options_to_json_dict(options), sealed


def clean_name(name: str) -> str:
    """A passkey's name as shown: spaces collapsed, no control characters, at most MAX_NAME."""
    name = " ".join(name.split())
    if not name or any(unicodedata.category(c).startswith("C") for c in name):
        raise PasskeyError("Give the passkey a name (letters, digits, spaces).", 400)
    if len(name) > passkeys.MAX_NAME:
        raise PasskeyError(f"A passkey's name is at most {passkeys.MAX_NAME} characters.", 400)
    return name


def _add_in_db(
    conn: Connection,
    user_id: str,
    username: str,
    name: str,
    verified: VerifiedRegistration,
    transports: tuple[str, ...],
    address: str | None,
) -> list[str] | None:
    """Store the passkey (None: that credential is registered already); the first factor of a
    user without recovery codes brings new ones, returned to be shown once."""
    added = passkeys.add(
        conn,
        user_id,
        verified.credential_id,
        name,
        verified.credential_public_key,
        verified.sign_count,
        transports,
        verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        verified.credential_backed_up,
    )
    if added is None:
        return None
    codes = recovery.generate(conn, user_id) if recovery.remaining(conn, user_id) == 0 else []
    audit.record(conn, "mfa_enrol", user_id, username, address, {"method": "passkey", "recovery_codes": bool(codes)})
    return codes


def _transports(credential: dict[str, Any]) -> tuple[str, ...]:
    response = credential.get("response")
    found = response.get("transports") if isinstance(response, dict) else None
    known = {t.value for t in AuthenticatorTransport}
    return tuple(t for t in found if isinstance(t, str) and t in known) if isinstance(found, list) else ()


async def register(
    services: AccountServices,
    user_id: str,
    username: str,
    sealed: str,
    credential: dict[str, Any],
    name: str,
    origin: str,
    address: str | None,
) -> Registered:
    """Verify the browser's new credential and keep it as ``name``."""
    name = clean_name(name)
    origin = checked_origin(services.settings, origin)
    challenge = _answering(services, sealed, REGISTER, user_id, origin)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge.challenge,
            expected_rp_id=services.settings.webauthn_rp_id,
            expected_origin=origin,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError) as exc:
        log.info("passkey registration refused for %s: %s", username, exc)
        detail = {"reason": "passkey registration"}
        await services.db.run(audit.record, "mfa_failure", user_id, username, address, detail)
        raise PasskeyError("The passkey could not be verified.", 400) from None
    await _spend(services, challenge)
    codes = await services.db.run(_add_in_db, user_id, username, name, verified, _transports(credential), address)
    if codes is None:
        raise PasskeyError("This passkey is registered already.", 400)
    return Registered(methods_of(verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE), codes)


# --- signing in with a passkey --------------------------------------------------------------------


async def authentication_options(
    services: AccountServices, origin: str, expected: Expected
) -> tuple[dict[str, Any], str]:
    """Options for navigator.credentials.get(): for ``user_id``'s passkeys (a second factor), or
    any discoverable one (passwordless); and the sealed challenge (the cookie's)."""
    settings = services.settings
    origin = checked_origin(settings, origin)
    allowed: list[PublicKeyCredentialDescriptor] = []
    if expected.user_id is not None:
        allowed = _descriptors(await services.db.run(passkeys.of_user, expected.user_id))
        if not allowed:
            raise PasskeyError("You have no passkey.", 400)
    options = generate_authentication_options(
        rp_id=settings.webauthn_rp_id,
        timeout=TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    sealed = challenges.seal(services.sealer, options.challenge, expected.purpose, expected.bound, origin)
    return options_to_json_dict(options), sealed


async def _refused(
    services: AccountServices, user_id: str | None, username: str | None, address: str | None, reason: str
) -> PasskeyError:
    """Count and audit a failed assertion (against the user when known); the error to raise."""
    if user_id is None:
        await services.regulation.failed(UNKNOWN, address, known=True)
    else:
        await services.regulation.failed(regulated_as(user_id), address)
        await services.db.run(audit.record, "mfa_failure", user_id, username, address, {"reason": f"passkey: {reason}"})
    log.info("passkey refused: %s", reason)
    return PasskeyError("The passkey was not accepted.")


async def _regulate(services: AccountServices, subject: str, address: str | None) -> None:
    verdict = await services.regulation.check(subject, address)
    if not verdict.allowed:
        raise Throttled(verdict.retry_after)


def _used_in_db(
    conn: Connection, found: passkeys.Passkey, sign_count: int, backed_up: bool, address: str | None, alone: bool
) -> users.User | str:
    """Record the use (counter, backup state) and audit it (``alone``: a passwordless sign-in,
    audited as a login): the user, else why it is refused."""
    user = users.get(conn, found.user_id)
    if user is None or user.disabled:
        return "disabled"
    if not passkeys.used(conn, found.credential_id, sign_count, backed_up):
        return "the sign counter went back"
    event = "login_success" if alone else "mfa_success"
    audit.record(conn, event, user.id, user.username, address, {"method": "passkey", "name": found.name})
    return user


async def authenticate(
    services: AccountServices,
    sealed: str,
    credential: dict[str, Any],
    origin: str,
    address: str | None,
    expected: Expected,
) -> Verified:
    """Verify an assertion: the expected user's passkey, or (passwordless) anyone's whose user
    handle names its owner. ``PasskeyError`` when refused, ``Throttled`` when the client must wait."""
    origin = checked_origin(services.settings, origin)
    user_id, username = expected.user_id, expected.username
    await _regulate(services, regulated_as(user_id) if user_id else UNKNOWN, address)
    challenge = _answering(services, sealed, expected.purpose, expected.bound, origin)
    try:
        parsed = parse_authentication_credential_json(credential)
    except (WebAuthnException, ValueError) as exc:
        raise PasskeyError(f"The passkey's answer is malformed: {exc}", 400) from None
    found = await services.db.run(passkeys.find, parsed.raw_id)
    if found is None or (user_id is not None and found.user_id != user_id):
        raise await _refused(services, user_id, username, address, "not a passkey of the user")
    if user_id is None:
        owner = await services.db.run(users.get, found.user_id)
        if owner is None:
            raise await _refused(services, None, None, address, "not a passkey of the user")
        user_id, username = owner.id, owner.username
        if parsed.response.user_handle != passkeys.user_handle(found.user_id):
            raise await _refused(services, user_id, username, address, "the user handle is not the passkey's")
        await _regulate(services, regulated_as(user_id), address)
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge.challenge,
            expected_rp_id=services.settings.webauthn_rp_id,
            expected_origin=origin,
            credential_public_key=found.public_key,
            credential_current_sign_count=found.sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError) as exc:
        raise await _refused(services, user_id, username, address, str(exc)) from None
    await _spend(services, challenge)
    backup_eligible = found.backup_eligible or verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    alone = expected.user_id is None
    counter, backed_up = verified.new_sign_count, verified.credential_backed_up
    user = await services.db.run(_used_in_db, found, counter, backed_up, address, alone)
    if user == "disabled":
        raise PasskeyError("This account is disabled.", 403)
    if isinstance(user, str):
        raise await _refused(services, user_id, username, address, user)
    return Verified(user, found.name, methods_of(backup_eligible))
