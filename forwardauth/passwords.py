"""Password hashing with Argon2id (argon2-cffi).

An unknown user is checked against a dummy hash made with the same parameters, so a login for a
name that does not exist costs the same time as a wrong password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .config import Settings


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be replaced (parameters changed)


class Passwords:
    def __init__(self, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> Verdict:
        """Check ``password`` against ``stored`` (``None``: unknown user, same cost, never ok)."""
        try:
            self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(ok=False)
        if stored is None:
            return Verdict(ok=False)
        new_hash = self._hasher.hash(password) if self._hasher.check_needs_rehash(stored) else None
        return Verdict(ok=True, new_hash=new_hash)
