"""ID tokens (OpenID Connect Core 2) and back-channel logout tokens (Back-Channel Logout 1.0 2.4),
signed with the access tokens' key ring: the same keys, ``kid`` and published JWKS.

Each kind has its own ``typ`` (``JWT`` here, ``logout+jwt``, the access tokens' ``at+jwt``), and
each verifier accepts only its own, so no token is ever taken for another kind (RFC 8725 3.11).
The ring is read from the ``TokenService`` at each call, so a key reload reaches ID tokens too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from authlib.oidc.core.util import create_half_hash

from forwardauth.constants import MAX_TOKEN_LENGTH
from forwardauth.core.authn import Authentication
from forwardauth.core.tokens import TokenService, new_id
from forwardauth.keys import Key

ID_TOKEN_TYPE = "JWT"  # noqa: S105 (a media type, not a secret)
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120  # a logout token is sent at once (a retry mints a new one)
# Set by mint_id_token itself; ``claims`` given by the caller may not override them.
RESERVED_CLAIMS = frozenset(
    ("iss", "sub", "aud", "azp", "exp", "iat", "nbf", "jti", "auth_time", "nonce", "amr", "acr", "at_hash", "sid")
)


class IdTokenError(Exception):
    """An ID token (hint) we cannot accept, or cannot mint; the message says why (for logs)."""


@dataclass(frozen=True, slots=True)
class IdTokenHint:
    """What an ``id_token_hint`` of ours says (RP-initiated logout): who, for which client, which session."""

    subject: str
    audience: tuple[str, ...]
    sid: str | None
    issued_at: int
    expires_at: int

    @property
    def client_id(self) -> str | None:
        """The client it was issued to (its only audience), if it names exactly one."""
        return self.audience[0] if len(self.audience) == 1 else None


def access_token_hash(access_token: str, alg: str) -> str:
    """``at_hash`` (OIDC Core 3.1.3.6): the left half of the token's hash by ``alg``'s hash function."""
    half: bytes | None = create_half_hash(access_token, alg)  # None for an alg it has no hash for
    if half is None:
        raise IdTokenError(f"no at_hash for {alg}")
    return half.decode("ascii")


class IdTokenService:
    """Mints and checks ID tokens and logout tokens with the access tokens' ring and issuer."""

    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    @property
    def available(self) -> bool:
        """ID tokens need a key clients can check from our JWKS: an HS256 secret is ours alone."""
        return self.tokens.ring.current.public_jwk is not None

    def _signing_key(self) -> Key:
        key = self.tokens.ring.current
        if key.public_jwk is None:
            raise IdTokenError("ID tokens need a public signing key (RS256, ES256 or EdDSA), not HS256")
        return key

    def mint_id_token(
        self,
        *,
        subject: str,
        audience: str,
        auth: Authentication,
        sid: str,
        nonce: str | None = None,
        access_token: str | None = None,
        claims: Mapping[str, Any] | None = None,
        now: int | None = None,
    ) -> str:
        """An ID token for client ``audience`` about user ``subject`` signed in as ``auth`` in
        browser session ``sid``. ``nonce`` is copied exactly when the request had one;
        ``at_hash`` binds the access token issued with it; ``claims`` adds user claims
        (``oidc.userinfo_claims``; its ``sub`` must be ``subject``). Lifetime: the access token's.
        """
        extra = dict(claims or {})
        if extra.pop("sub", subject) != subject:
            raise ValueError("claims name another subject")
        clash = sorted(RESERVED_CLAIMS & extra.keys())
        if clash:
            raise ValueError(f"claims may not set {', '.join(clash)}")
        key = self._signing_key()
        issued = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": self.tokens.issuer,
            "sub": subject,
            "aud": audience,
            "exp": issued + self.tokens.ttl,
            "iat": issued,
            "auth_time": auth.auth_time,
            "amr": list(auth.amr),
            "acr": auth.acr,
            "sid": sid,
        }
        if nonce is not None:
            payload["nonce"] = nonce
        if access_token is not None:
            payload["at_hash"] = access_token_hash(access_token, key.alg)
        payload.update(extra)
        headers = {"kid": key.kid, "typ": ID_TOKEN_TYPE}
        return jwt.encode(payload, key.signing, algorithm=key.alg, headers=headers)

    def verify_id_token_hint(self, token: str) -> IdTokenHint:
        """The claims of an ID token we issued, checked for signature, ``typ`` and ``iss``.

        Expired tokens are accepted: a hint names the session to end, often long after it was
        issued (RP-initiated logout 1.0 2). The audience is returned, not checked: the caller
        compares it with the client the request names.
        """
        payload = self._decode(token, ID_TOKEN_TYPE, ("iss", "sub", "aud", "exp", "iat"))
        aud = payload["aud"]
        audience = (aud,) if isinstance(aud, str) else aud
        sid = payload.get("sid")
        if (
            not isinstance(payload["sub"], str)
            or not payload["sub"]
            or not isinstance(audience, list | tuple)
            or not audience
            or not all(isinstance(a, str) and a for a in audience)
            or not (sid is None or (isinstance(sid, str) and sid))
            or not isinstance(payload["exp"], int)
            or not isinstance(payload["iat"], int)
        ):
            raise IdTokenError("claims of the wrong type")
        return IdTokenHint(payload["sub"], tuple(audience), sid, payload["iat"], payload["exp"])

    def logout_token(self, client_id: str, subject: str, sid: str | None, now: int | None = None) -> str:
        """A back-channel logout token for ``client_id`` (Back-Channel Logout 1.0 2.4): ``sub`` and
        the browser session's ``sid``, the logout event, a fresh ``jti``, no ``nonce`` (forbidden
        there, so it can never pass for an ID token), ``typ`` logout+jwt."""
        key = self._signing_key()
        issued = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": self.tokens.issuer,
            "sub": subject,
            "aud": client_id,
            "iat": issued,
            "exp": issued + LOGOUT_TOKEN_TTL,
            "jti": new_id(),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        if sid is not None:
            payload["sid"] = sid
        return jwt.encode(payload, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": LOGOUT_TOKEN_TYPE})

    def _decode(self, token: str, typ: str, required: tuple[str, ...]) -> dict[str, Any]:
        """Payload of a token of kind ``typ`` signed by a ring key (its own alg), ``iss`` ours, ``exp`` not checked."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise IdTokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdTokenError(f"malformed token: {exc}") from None
        kid = header.get("kid")
        key = self.tokens.ring.by_kid.get(kid) if isinstance(kid, str) else None
        if key is None or key.public_jwk is None:
            raise IdTokenError("unknown key id")
        if header.get("typ") != typ:
            raise IdTokenError(f"not a {typ} token")
        try:
            payload: dict[str, Any] = jwt.PyJWT().decode(
                token,
                key.verifying,
                algorithms=[key.alg],
                issuer=self.tokens.issuer,
                leeway=self.tokens.leeway,
                options={"require": list(required), "verify_exp": False, "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise IdTokenError(str(exc)) from None
        return payload
