"""Per-worker memory that keeps /auth off the CPU and off the network. Pure: no I/O here.

``ClaimsCache`` remembers verified claims by token, so a signature is checked once per token,
not once per request; entries go at the token's expiry, and all of them when keys change. The
same class remembers personal access tokens' records by the token's digest (``PAT_ENTRIES``), so
a token's Redis record is read once per worker: whether it is still live is ``LiveTokens``' answer.

``LiveTokens`` remembers that a token was live in Redis. It may answer only while its worker is
subscribed to the revocation channel: every revocation is published, and the subscriber drops
the entry on receipt. When the subscription is lost the memory is wiped and every check goes to
Redis until it is back. An ``epoch`` that every revocation advances closes the race where a token
is revoked between our Redis read and our remembering it: such a read is not remembered.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from forwardauth.core.pats import PatClaims
from forwardauth.core.tokens import AccessClaims

CLAIMS_ENTRIES = 20_000
PAT_ENTRIES = 20_000
LIVE_ENTRIES = 200_000
DECISION_ENTRIES = 10_000

T = TypeVar("T")


class Memo(dict[Hashable, T]):
    """A bounded memo (oldest entry out first) for pure computations on the hot path.

    A dict, so a hit is the built-in ``get`` and costs no Python call."""

    def __init__(self, max_entries: int = DECISION_ENTRIES) -> None:
        super().__init__()
        self._max = max_entries

    def remember(self, key: Hashable, value: T) -> T:
        if len(self) >= self._max:
            del self[next(iter(self))]
        self[key] = value
        return value


class Expiring(Protocol):
    @property
    def expires_at(self) -> int: ...


C = TypeVar("C", bound=Expiring)


class ExpiringCache(Generic[C]):
    """Claims by token (or by a token's digest), bounded (oldest out first), each gone at its
    expiry (plus ``leeway``)."""

    def __init__(self, leeway: int, max_entries: int = CLAIMS_ENTRIES) -> None:
        self._leeway = leeway
        self._max = max_entries
        self._entries: dict[str, C] = {}
        self.hits = self.misses = 0  # for /metrics; never reset

    def get(self, token: str, now: float) -> C | None:
        claims = self._entries.get(token)
        if claims is None:
            self.misses += 1
        elif claims.expires_at + self._leeway <= now:
            del self._entries[token]
            self.misses += 1
            return None
        else:
            self.hits += 1
        return claims

    def put(self, token: str, claims: C) -> None:
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest entry
        self._entries[token] = claims

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ClaimsCache(ExpiringCache[AccessClaims]):
    """Verified access tokens' claims, by token."""


class PatCache(ExpiringCache[PatClaims]):
    """Personal access tokens' records, by the token's digest (no leeway: they end at expiry)."""

    def __init__(self, max_entries: int = PAT_ENTRIES) -> None:
        super().__init__(0, max_entries)


class LiveTokens:
    def __init__(self, max_entries: int = LIVE_ENTRIES) -> None:
        self._max = max_entries
        self._sessions: dict[str, dict[str, int]] = {}  # sid -> {jti: expires_at}
        self._count = 0
        self.subscribed = False
        self.epoch = 0
        self.hits = 0  # answers given from memory, for /metrics; never reset

    def is_live(self, sid: str, jti: str, now: float) -> bool:
        """True only when known live, unexpired, and the revocation feed is being followed."""
        if not self.subscribed:
            return False
        expires = self._sessions.get(sid, {}).get(jti)
        if expires is not None and expires > now:
            self.hits += 1
            return True
        return False

    def remember(self, sid: str, jti: str, expires_at: int, epoch: int) -> None:
        """Record a live answer read from Redis while ``epoch`` was current."""
        if not self.subscribed or epoch != self.epoch or self._count >= self._max:
            return
        tokens = self._sessions.setdefault(sid, {})
        if jti not in tokens:
            self._count += 1
        tokens[jti] = expires_at

    def forget(self, sid: str, jti: str | None = None) -> None:
        """A revocation arrived: one token, or (``jti`` None) the whole session."""
        self.epoch += 1
        tokens = self._sessions.get(sid)
        if tokens is None:
            return
        if jti is None:
            self._count -= len(tokens)
            del self._sessions[sid]
        elif tokens.pop(jti, None) is not None:
            self._count -= 1

    def reset(self, subscribed: bool) -> None:
        """Subscription gained or lost: start from nothing either way."""
        self.epoch += 1
        self._sessions.clear()
        self._count = 0
        self.subscribed = subscribed

    def prune(self, now: float) -> None:
        """Drop expired entries (called now and then, not per request)."""
        for sid in list(self._sessions):
            tokens = self._sessions[sid]
            for jti in [j for j, exp in tokens.items() if exp <= now]:
                del tokens[jti]
                self._count -= 1
            if not tokens:
                del self._sessions[sid]

    def __len__(self) -> int:
        return self._count
