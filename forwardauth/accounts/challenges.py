"""WebAuthn challenges, held by the browser sealed rather than stored: issuing one writes nothing.

Passwordless options need no sign-in, so a challenge kept server-side per call would let anyone
fill Redis. Instead the challenge, its purpose, what it is bound to (a user, a pending sign-in's
digest, or nothing), the page's origin and its expiry are sealed (sealing.Sealer, AES-GCM) into
the cookie that brings them back; the fixed associated data ``AAD`` keeps any other sealed value
(a TOTP secret) from passing as one. Single use is enforced once an answer verified: ``spend``
marks a digest of the challenge in Redis (stores.onetime) until it expires, so only answers
signed by a registered passkey cost a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from forwardauth.sealing import Sealer, SealError
from forwardauth.stores.onetime import OneTime

TTL = 300  # seconds a challenge may be answered in (and its cookie's Max-Age)
AAD = b"webauthn-challenge"
MAX_SEALED = 1024  # characters of the cookie's value; a real one is about 300


@dataclass(frozen=True, slots=True)
class Challenge:
    """A challenge, what it was issued for and to (``bound``: a user id, a pending sign-in's
    digest, or ""), the page's origin, and when it expires (epoch seconds)."""

    challenge: bytes
    purpose: str
    bound: str
    origin: str
    expires: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(sealer: Sealer, challenge: bytes, purpose: str, bound: str, origin: str, now: float | None = None) -> str:
    """The cookie value carrying ``challenge`` for ``TTL`` seconds from ``now``."""
    expires = int(time.time() if now is None else now) + TTL
    plain = json.dumps([_b64(challenge), purpose, bound, origin, expires], separators=(",", ":"))
    return _b64(sealer.seal(plain.encode(), AAD))


def opened(
    sealer: Sealer, sealed: str, purpose: str, bound: str, origin: str, now: float | None = None
) -> Challenge | None:
    """The challenge in ``sealed`` when it was issued for this purpose, binding and origin and has
    not expired; ``None`` for anything else (altered, not ours, malformed, expired)."""
    if not sealed or len(sealed) > MAX_SEALED:
        return None
    try:
        data: Any = json.loads(sealer.open(_unb64(sealed), AAD))
        raw, found_purpose, found_bound, found_origin, expires = data
        found = Challenge(_unb64(raw), found_purpose, found_bound, found_origin, expires)
    except (SealError, ValueError, TypeError, binascii.Error):
        return None
    if (found.purpose, found.bound, found.origin) != (purpose, bound, origin) or not isinstance(expires, int):
        return None
    return found if (time.time() if now is None else now) < found.expires else None


async def spend(onetime: OneTime, challenge: Challenge, now: float | None = None) -> bool:
    """Mark ``challenge`` answered until it expires: ``True`` the first time, ``False`` after."""
    left = challenge.expires - (time.time() if now is None else now)
    digest = hashlib.sha256(challenge.challenge).hexdigest()
    return await onetime.first_use(onetime.keys.webauthn_challenge(digest), max(1, int(left) + 1))
