"""Personal access tokens: their text, their digest and the record /auth reads. Pure: no I/O.

A token is ``fa_pat_`` and 256 random bits (so secret scanners recognise a leaked one); only its
SHA-256 is stored, which is enough for a random secret (nothing to guess, so no slow hash). Each
live token has a Redis record (``to_record``) holding what /auth needs, and is registered as the
session ``pat-<id>`` (token id ``<id>``) in the revocation store: a token is then revoked, and
forgotten by every worker, exactly as a session is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TypeGuard

from forwardauth.constants import MAX_TOKEN_LENGTH
from forwardauth.core.problems import Problem
from forwardauth.core.tokens import Identity

PREFIX = "fa_pat_"
TOKEN_BYTES = 32  # 256 bits: 43 URL-safe characters
SID_PREFIX = "pat-"  # a token's session id in the revocation store: "pat-" + its id
MAX_NAME = 100
MAX_SCOPES = 32
_BODY = re.compile(r"[A-Za-z0-9_-]{43}")
_SCOPE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")  # RFC 6749 scope-token characters, narrowed


def new_token() -> str:
    """A fresh token's text (shown once, never stored)."""
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def looks_like(token: str) -> bool:
    """True for a string of a PAT's exact shape: anything else is not looked up at all."""
    return len(token) == len(PREFIX) + 43 and token.startswith(PREFIX) and bool(_BODY.fullmatch(token, len(PREFIX)))


def digest(token: str) -> str:
    """The SHA-256 of the token, hex: the key of its record and of the per-worker memory."""
    return hashlib.sha256(token.encode()).hexdigest()


def sid_of(token_id: str) -> str:
    return SID_PREFIX + token_id


def is_pat_sid(sid: str) -> bool:
    """A session id that is a token's (so not a sign-in's): for counting sessions apart."""
    return sid.startswith(SID_PREFIX)


def check_name(name: str) -> str:
    """The name, stripped, or ``Problem``: 1 to 100 printable characters (it is shown in lists)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise Problem("a token's name must be 1 to %(most)s characters", most=MAX_NAME)
    if any(unicodedata.category(c).startswith(("C", "Z")) and c != " " for c in name):
        raise Problem("a token's name must be printable (no control characters, tabs or line breaks)")
    return name


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes, deduplicated in order, or ``Problem`` (they travel space-separated in a header)."""
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise Problem("scope %(scope)s: use letters, digits and _ . : / - (at most 64)", scope=repr(scope))
    unique = tuple(dict.fromkeys(scopes))
    if len(unique) > MAX_SCOPES:
        raise Problem("at most %(most)s scopes", most=MAX_SCOPES)
    return unique


def check_ttl(ttl: int, max_ttl: int) -> int:
    """A lifetime in seconds, or ``Problem``: every token expires, none later than the maximum."""
    if ttl < 60:
        raise Problem("a token must live at least a minute")
    if ttl > max_ttl:
        raise Problem("a token may live at most %(most)s (FORWARDAUTH_PAT_MAX_TTL)", most=_duration(max_ttl))
    return ttl


def _duration(seconds: int) -> str:
    """``365d``, ``12h``, ``90m`` or ``45s``: the largest unit that says it exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class PatClaims:
    """What a live token stands for: its user (``identity.subject`` is the user id) and scopes."""

    sid: str  # "pat-<id>": its session in the revocation store
    jti: str  # the token's id
    identity: Identity
    scopes: tuple[str, ...]
    expires_at: int

    @property
    def token_id(self) -> str:
        return self.jti


def to_record(claims: PatClaims) -> bytes:
    identity = claims.identity
    return json.dumps(
        {
            "sid": claims.sid,
            "jti": claims.jti,
            "sub": identity.subject,
            "username": identity.username,
            "roles": list(identity.roles),
            "email": identity.email,
            "scopes": list(claims.scopes),
            "exp": claims.expires_at,
        },
        separators=(",", ":"),
    ).encode()


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def from_record(data: bytes) -> PatClaims | None:
    """The claims of a record, ``None`` for anything not of the record's shape (never raises)."""
    try:
        fields = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(fields, dict):
        return None
    sid, jti, sub, username = (_text(fields.get(k)) for k in ("sid", "jti", "sub", "username"))
    roles, scopes, email, exp = (fields.get(k) for k in ("roles", "scopes", "email", "exp"))
    if (
        not (jti and sub and username)
        or sid != sid_of(jti)
        or not _strings(roles)
        or not _strings(scopes)
        or not (email is None or isinstance(email, str))
        or type(exp) is not int
    ):
        return None
    identity = Identity(subject=sub, username=username, roles=tuple(roles), email=email or None)
    return PatClaims(sid=sid, jti=jti, identity=identity, scopes=tuple(scopes), expires_at=exp)


def parse_basic(authorization: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic <base64(user:password)>`` value (RFC 7617),
    ``None`` when it is not one or is malformed (bad base64, not UTF-8, no colon, too long)."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or len(encoded) > MAX_TOKEN_LENGTH:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or any(unicodedata.category(c) == "Cc" for c in decoded):
        return None
    return user, password
