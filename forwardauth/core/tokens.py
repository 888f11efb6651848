"""Access tokens: mint and verify JWTs. Pure: no I/O, so it is tested without servers.

Verification follows RFC 8725: the key is chosen by ``kid`` among our own keys only, the
algorithm is the key's own (never the token's ``alg``), ``typ`` must be ``at+jwt`` so no other
kind of token passes, and ``iss``/``aud``/``exp`` are required.

A user's token says how the user signed in (``amr``, ``acr``, ``auth_time``: see authn), for the
step-up rules to decide from the token alone; a client's own token never does (no user signed in).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from forwardauth.constants import ACCESS_TOKEN_TYPE, MAX_TOKEN_LENGTH
from forwardauth.core.authn import Authentication
from forwardauth.keys import KeyRing

REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid")


class TokenError(Exception):
    """The token is not a valid access token; the message says why (for logs, not clients)."""


# ``sub`` of a token a client got for itself (client_credentials). User ids are UUIDs, so no user's
# ``sub`` can take this form, and a client's id is never put where a username goes.
CLIENT_SUBJECT_PREFIX = "client:"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token speaks for: a user, or a client acting for itself (``client`` set).

    The two never share a field, so a client named ``bob`` is never taken for the user ``bob``.
    """

    subject: str  # a user's stable id, or ``client:<id>``
    username: str  # "" for a client
    roles: tuple[str, ...] = ()  # the user's roles, or the client's
    email: str | None = None
    client: str | None = None  # the client's id when no user is involved

    @classmethod
    def of_client(cls, client_id: str, roles: tuple[str, ...]) -> Identity:
        return cls(subject=CLIENT_SUBJECT_PREFIX + client_id, username="", roles=roles, client=client_id)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    identity: Identity
    jti: str
    sid: str  # login session (refresh-token family)
    expires_at: int
    issued_at: int = 0
    scope: str | None = None  # space-separated (RFC 6749 3.3)
    client_id: str | None = None  # the OAuth2 client it was issued to (RFC 9068)
    auth: Authentication | None = None  # how the user signed in; None for a client, or an older token
    # Every verified claim, for FORWARDAUTH_HEADERS_CLAIMS (read only when that maps some).
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    claims: AccessClaims


def new_id() -> str:
    """A random identifier for ``jti``, ``sid`` and the ids commands take (128 bits). Never with a
    leading ``-``: a command line would read it as an option (``token revoke alice -9J2...``)."""
    while (made := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return made


class TokenService:
    """Mints and verifies access tokens with one key ring and one issuer/audience."""

    def __init__(self, ring: KeyRing, issuer: str, audience: str, ttl: int, leeway: int) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway
        self._jwt = jwt.PyJWT()

    def mint(
        self,
        identity: Identity,
        sid: str,
        now: int | None = None,
        scope: str | None = None,
        client_id: str | None = None,
        auth: Authentication | None = None,
    ) -> MintedToken:
        issued = int(time.time()) if now is None else now
        claims = AccessClaims(
            identity=identity,
            jti=new_id(),
            sid=sid,
            expires_at=issued + self.ttl,
            issued_at=issued,
            scope=scope,
            client_id=client_id,
            auth=auth,
        )
        if identity.client is not None:  # a client's own token: no username, its id in client_id
            if client_id != identity.client or identity.subject != CLIENT_SUBJECT_PREFIX + identity.client:
                raise ValueError("a client's own token must be issued to that client")
            if auth is not None:
                raise ValueError("a client's own token carries no user authentication")
        elif not identity.username or identity.subject.startswith(CLIENT_SUBJECT_PREFIX):
            raise ValueError("a user's token needs a username and a user id")
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": identity.subject,
            "roles": list(identity.roles),
            "iat": issued,
            "nbf": issued,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "sid": sid,
        }
        if identity.client is None:
            payload["preferred_username"] = identity.username
        if identity.email:
            payload["email"] = identity.email
        if scope:
            payload["scope"] = scope
        if client_id:
            payload["client_id"] = client_id
        if auth is not None:
            payload["amr"] = list(auth.amr)
            payload["acr"] = auth.acr
            payload["auth_time"] = auth.auth_time
        key = self.ring.current
        token = jwt.encode(payload, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})
        return MintedToken(token=token, claims=claims)

    def verify(self, token: str, allow_expired: bool = False) -> AccessClaims:
        """Claims of a valid access token, else ``TokenError``.

        ``allow_expired`` accepts an expired but otherwise valid token: logout uses it, so a
        user can still end a session whose access token has run out.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        kid = header.get("kid")
        key = self.ring.by_kid.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("unknown key id")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenError("not an access token")
        try:
            payload = self._jwt.decode(
                token,
                key.verifying,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": not allow_expired},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from None
        return _claims(payload)


def _claims(payload: dict[str, Any]) -> AccessClaims:
    """Typed claims, refusing a token whose claims have the wrong shapes.

    A ``sub`` of the form ``client:<id>`` is a client's own token: it must name the same client in
    ``client_id`` and carries no user (a ``preferred_username`` in it is ignored) nor ``amr``.
    """
    roles = payload.get("roles", [])
    email = payload.get("email")
    scope = payload.get("scope")
    client_id = payload.get("client_id")
    subject = payload["sub"]
    if (
        not all(isinstance(v, str) and v for v in (subject, payload["jti"], payload["sid"]))
        or not isinstance(roles, list)
        or not all(isinstance(r, str) for r in roles)
        or not all(v is None or isinstance(v, str) for v in (email, scope, client_id))
        or not isinstance(payload["exp"], int)
        or not isinstance(payload["iat"], int)
    ):
        raise TokenError("claims of the wrong type")
    auth = _authentication(payload)
    if subject.startswith(CLIENT_SUBJECT_PREFIX):
        if not client_id or subject != CLIENT_SUBJECT_PREFIX + client_id or email is not None or auth is not None:
            raise TokenError("a client's token must name that client in client_id, and no user")
        identity = Identity.of_client(client_id, tuple(roles))
    else:
        username = payload.get("preferred_username")
        if not isinstance(username, str) or not username:
            raise TokenError("a user's token needs preferred_username")
        identity = Identity(subject=subject, username=username, roles=tuple(roles), email=email)
    return AccessClaims(
        identity=identity,
        jti=payload["jti"],
        sid=payload["sid"],
        expires_at=payload["exp"],
        issued_at=payload["iat"],
        scope=scope,
        client_id=client_id,
        auth=auth,
        payload=payload,
    )


AUTH_CLAIMS = ("amr", "acr", "auth_time")


def _authentication(payload: dict[str, Any]) -> Authentication | None:
    """``amr``, ``acr`` and ``auth_time`` as one ``Authentication``, or ``None`` when the token has
    none of them (a client's, or one minted before they existed).

    All three or none; ``amr`` exactly what ``Authentication.of`` makes of its methods (known
    names, ``mfa`` if and only if they are two factors) and ``acr`` the one that follows from it:
    a token claiming more than its methods prove is refused, not read generously.
    """
    present = [name for name in AUTH_CLAIMS if name in payload]
    if not present:
        return None
    if len(present) != len(AUTH_CLAIMS):
        raise TokenError("amr, acr and auth_time go together")
    amr, acr, auth_time = (payload[name] for name in AUTH_CLAIMS)
    if (
        not isinstance(amr, list)
        or not all(isinstance(m, str) for m in amr)
        or len(set(amr)) != len(amr)
        or not isinstance(acr, str)
        or isinstance(auth_time, bool)
        or not isinstance(auth_time, int)
        or auth_time < 0
    ):
        raise TokenError("amr, acr or auth_time of the wrong type")
    try:
        auth = Authentication.of(amr, auth_time)
    except ValueError as exc:
        raise TokenError(str(exc)) from None
    if set(auth.amr) != set(amr) or auth.acr != acr:
        raise TokenError("acr or mfa in amr does not follow from the methods")
    return auth
