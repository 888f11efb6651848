"""Password hashing with Argon2id (argon2-cffi), and the policy a new password must meet.

An unknown user is checked against a dummy hash made with the same parameters, so a login for a
name that does not exist costs the same time as a wrong password.

The policy follows NIST SP 800-63B: a minimum length (15 by default, the figure for a password
that is the only factor) and no composition rules, but a check against what attackers try first:
zxcvbn's lists of common passwords, words and names, with repeats, sequences, keyboard walks,
dates and the user's own name and e-mail, must estimate at least 10^8 guesses (its score 3).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from forwardauth.config import Settings

DEFAULT_MIN_LENGTH = 15  # NIST SP 800-63B-4 3.1.1.2, single-factor passwords
MIN_SCORE = 3  # zxcvbn: 10^8 guesses or more
_ESTIMATED_LENGTH = 72  # zxcvbn refuses longer input (its cost grows fast): the start is judged
_ZXCVBN = threading.Lock()  # zxcvbn keeps the user's own words in a module-global dictionary


class WeakPassword(ValueError):
    """A new password does not meet the policy; the message says why (never the password)."""


def check_policy(password: str, min_length: int, context: tuple[str | None, ...] = ()) -> None:
    """Raise ``WeakPassword`` unless ``password`` is long enough and not easy to guess.

    ``context`` (username, e-mail) counts as known to an attacker.
    """
    if len(password) < min_length:
        raise WeakPassword(f"password must be at least {min_length} characters (a few unrelated words work well)")
    from zxcvbn import zxcvbn  # imported when a password is set, never by the server's hot path

    words = [w for value in context if value for w in (value, *value.replace("@", " ").split())]
    with _ZXCVBN:
        estimate = zxcvbn(password[:_ESTIMATED_LENGTH], user_inputs=words)
    if estimate["score"] < MIN_SCORE:
        warning = str(estimate["feedback"]["warning"] or "").rstrip(".")
        reason = f": {warning[0].lower()}{warning[1:]}" if warning else ""
        raise WeakPassword(f"password is too easy to guess{reason}; choose a longer or less common one")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be replaced (parameters changed)


class Passwords:
    def __init__(
        self, time_cost: int, memory_cost: int, parallelism: int, min_length: int = DEFAULT_MIN_LENGTH
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self.min_length = min_length

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        return cls(
            settings.argon2_time_cost,
            settings.argon2_memory_cost,
            settings.argon2_parallelism,
            settings.password_min_length,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def check(self, password: str, *context: str | None) -> None:
        """Raise ``WeakPassword`` unless ``password`` meets the policy (see the module's docstring)."""
        check_policy(password, self.min_length, context)

    def hash_new(self, password: str, *context: str | None) -> str:
        """The hash of a password being set, once it meets the policy; ``context``: username, e-mail."""
        self.check(password, *context)
        return self.hash(password)

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


def generate_password() -> str:
    """A random password that meets the default policy (22 URL-safe characters, 128 bits)."""
    while True:
        password = secrets.token_urlsafe(16)
        try:
            check_policy(password, DEFAULT_MIN_LENGTH)
        except WeakPassword:  # a random string that happens to look guessable: draw again
            continue
        return password
