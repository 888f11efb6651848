"""How and when a user authenticated: the ``amr``, ``acr`` and ``auth_time`` a session remembers
and its access tokens carry. Pure, so the step-up rules are decided from the token alone.

``amr`` values are RFC 8176's: ``pwd`` (password), ``otp`` (a TOTP code), ``kba`` (a recovery
code), ``hwk`` / ``swk`` (a passkey bound to one device / synced between devices), ``user`` (the
authenticator verified the user: a passkey's PIN or biometric) and ``mfa`` (more than one factor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PASSWORD, OTP, RECOVERY_CODE, HARDWARE_KEY, SOFTWARE_KEY, USER_VERIFIED, MULTI_FACTOR = (
    "pwd",
    "otp",
    "kba",
    "hwk",
    "swk",
    "user",
    "mfa",
)
# acr: one factor, or more than one (the values a relying party can ask for, e.g. OIDC acr_values)
ACR_ONE_FACTOR = "urn:forwardauth:acr:1fa"
ACR_MULTI_FACTOR = "urn:forwardauth:acr:mfa"

_KNOWN = frozenset((PASSWORD, OTP, RECOVERY_CODE, HARDWARE_KEY, SOFTWARE_KEY, USER_VERIFIED, MULTI_FACTOR))
# What each method proves: something known, something held, or (a passkey with user verification)
# something held and unlocked by something known or being.
_KNOWLEDGE = frozenset((PASSWORD,))
_POSSESSION = frozenset((OTP, RECOVERY_CODE, HARDWARE_KEY, SOFTWARE_KEY))


@dataclass(frozen=True, slots=True)
class Authentication:
    """The methods used (``amr``, in a stable order, ``mfa`` added when they are more than one
    factor) and when the user last proved who they are (``auth_time``, seconds since the epoch)."""

    amr: tuple[str, ...]
    auth_time: int

    @classmethod
    def of(cls, methods: Iterable[str], auth_time: int) -> Authentication:
        """From the methods used, in any order; unknown names refused (they come from our own code)."""
        found = set(methods) - {MULTI_FACTOR}
        unknown = found - _KNOWN
        if unknown:
            raise ValueError(f"unknown authentication methods: {sorted(unknown)}")
        if not found:
            raise ValueError("an authentication needs at least one method")
        knowledge = bool(found & _KNOWLEDGE) or USER_VERIFIED in found
        possession = bool(found & _POSSESSION)
        amr = tuple(sorted(found)) + ((MULTI_FACTOR,) if knowledge and possession else ())
        return cls(amr, int(auth_time))

    @property
    def multi_factor(self) -> bool:
        return MULTI_FACTOR in self.amr

    @property
    def acr(self) -> str:
        return ACR_MULTI_FACTOR if self.multi_factor else ACR_ONE_FACTOR

    def adding(self, methods: Iterable[str]) -> Authentication:
        """This authentication stepped up with more methods (a second factor after the password):
        ``auth_time`` stays, since the first factor was not proved again."""
        return Authentication.of((*self.amr, *methods), self.auth_time)

    def age(self, now: float) -> float:
        return now - self.auth_time
