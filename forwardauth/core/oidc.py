"""OpenID Connect, the pure part: scopes, PKCE, redirect URIs, authorization requests, userinfo
claims and the discovery document. No I/O, so every rule here is tested without servers.

The authorization request is checked in RFC 6749 4.1.2.1's order: until the client and its
``redirect_uri`` are known good, an error is shown to the user and never redirected (an open
redirector otherwise); after that, errors go back to the client with its ``state`` and our ``iss``
(RFC 9207).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from forwardauth.config import Settings
from forwardauth.core.authn import ACR_MULTI_FACTOR, ACR_ONE_FACTOR, Authentication
from forwardauth.core.tokens import Identity
from forwardauth.keys import KeyRing

OPENID, PROFILE, EMAIL, GROUPS, OFFLINE_ACCESS = "openid", "profile", "email", "groups", "offline_access"
OIDC_SCOPES = (OPENID, PROFILE, EMAIL, GROUPS, OFFLINE_ACCESS)
PROMPT_NONE, PROMPT_LOGIN, PROMPT_CONSENT = "none", "login", "consent"
PROMPT_VALUES = (PROMPT_NONE, PROMPT_LOGIN, PROMPT_CONSENT)  # select_account: one account, nothing to select
PKCE_METHOD = "S256"  # "plain" protects nothing against a code seen on its way (RFC 7636 7.2)
RESPONSE_TYPE = "code"
RESPONSE_MODE = "query"
AUTHORIZATION_CODE = "authorization_code"
# Claims the ID token and userinfo may carry (discovery's claims_supported).
ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "acr", "at_hash", "sid")
USERINFO_CLAIMS = ("preferred_username", "name", "email", "email_verified", "groups", "roles")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

# RFC 6749 3.3 scope-token, RFC 7636 4.1 code_verifier (and 4.2's challenge alphabet).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # base64url of 32 bytes, no padding
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PARAM_LENGTH = 2048  # state, nonce, acr_values, ...: passed on, so bounded
MAX_AGE_DIGITS = 10


class ScopeError(ValueError):
    """A scope parameter that is not a space-separated list of RFC 6749 scope tokens."""


def parse_scope(text: str | None) -> tuple[str, ...]:
    """The scope tokens in order, duplicates dropped; control characters, quotes and backslashes refused."""
    if text is None:
        return ()
    tokens = [t for t in text.split(" ") if t]
    bad = [t for t in tokens if not _SCOPE_TOKEN.fullmatch(t)]
    if bad or _CONTROL.search(text):
        raise ScopeError("scope must be space-separated scope tokens (RFC 6749 3.3)")
    return tuple(dict.fromkeys(tokens))


def check_pkce(verifier: str | None, challenge: str | None) -> bool:
    """Whether ``verifier`` answers an S256 ``challenge`` (RFC 7636 4.6), compared in constant time.

    A verifier outside RFC 7636's 43-128 unreserved characters is refused before hashing, so a
    client cannot pass with a short, guessable one.
    """
    if not verifier or not challenge or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(create_s256_code_challenge(verifier).encode(), challenge.encode())


def redirect_uri_registered(uri: str, registered: Iterable[str]) -> bool:
    """Exact string comparison (OAuth 2.0 Security BCP 4.1.3): no prefix, no normalisation."""
    return any(hmac.compare_digest(uri.encode(), r.encode()) for r in registered)


def response_url(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` added to its query, which is kept (RFC 6749 3.1.2)."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


class ClientView(Protocol):
    """What an authorization request needs of a client (stores.clients.Client has it)."""

    @property
    def id(self) -> str: ...
    @property
    def redirect_uris(self) -> tuple[str, ...]: ...
    @property
    def grant_types(self) -> tuple[str, ...]: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def disabled(self) -> bool: ...
    @property
    def public(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class AuthorizationError:
    """A refused authorization request. ``redirect_uri`` is set only once the client and its
    redirect URI were checked: then the error goes to the client (``url``); otherwise the user
    sees an error page and nothing is redirected."""

    error: str
    description: str
    redirect_uri: str | None = None
    state: str | None = None

    @property
    def redirectable(self) -> bool:
        return self.redirect_uri is not None

    def url(self, issuer: str) -> str:
        if self.redirect_uri is None:
            raise ValueError("this error must not be redirected")
        params = {"error": self.error, "error_description": self.description, "state": self.state, "iss": issuer}
        return response_url(self.redirect_uri, params)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A well-formed authorization request of a known client to one of its registered URIs."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()

    @property
    def openid(self) -> bool:
        """An OpenID Connect request (an ID token is issued); without ``openid``, plain OAuth 2.0."""
        return OPENID in self.scope

    @property
    def scope_text(self) -> str:
        return " ".join(self.scope)

    @property
    def wants_mfa(self) -> bool:
        """The client asked for a second factor (``acr_values``); any other acr is met by any sign-in."""
        return ACR_MULTI_FACTOR in self.acr_values

    def fresh_enough(self, auth: Authentication, now: float) -> bool:
        """Whether a sign-in at ``auth.auth_time`` satisfies ``max_age`` (OIDC Core 3.1.2.1)."""
        return self.max_age is None or auth.age(now) <= self.max_age

    def error(self, error: str, description: str) -> AuthorizationError:
        """An error for the client (login_required, consent_required, access_denied...)."""
        return AuthorizationError(error, description, self.redirect_uri, self.state)

    def success_url(self, code: str, issuer: str) -> str:
        """The authorization response: code, state and ``iss`` (RFC 9207)."""
        return response_url(self.redirect_uri, {"code": code, "state": self.state, "iss": issuer})

    def without_prompt(self) -> AuthorizationRequest:
        """The same request once the prompt was answered (a re-login must not ask again and again)."""
        return replace(self, prompt=frozenset(), max_age=None)

    def as_params(self) -> dict[str, str]:
        """The request as parameters again, to come back to the endpoint (after login, in a form)."""
        params: dict[str, str | None] = {
            "response_type": RESPONSE_TYPE,
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope_text,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.code_challenge,
            "code_challenge_method": PKCE_METHOD if self.code_challenge else None,
            "prompt": " ".join(p for p in PROMPT_VALUES if p in self.prompt) or None,
            "max_age": None if self.max_age is None else str(self.max_age),
            "acr_values": " ".join(self.acr_values) or None,
        }
        return {k: v for k, v in params.items() if v is not None}

    @classmethod
    def parse(
        cls, params: Mapping[str, str] | Iterable[tuple[str, str]], client: ClientView | None
    ) -> AuthorizationRequest | AuthorizationError:
        """Check a request against ``client`` (found by the caller from ``client_id``; ``None`` if unknown).

        ``params`` may repeat names (an aiohttp MultiDict does): a repeated parameter is refused
        (RFC 6749 3.1). Unknown parameters are ignored (RFC 6749 3.1); ``request`` and
        ``request_uri`` are refused since we do not support them (OIDC Core 6).
        """
        pairs = list(params.items() if isinstance(params, Mapping) else params)
        values: dict[str, str] = {}
        repeated: set[str] = set()
        for name, value in pairs:
            if value == "":  # sent without a value: as if omitted (RFC 6749 3.1)
                continue
            if name in values:
                repeated.add(name)
            values[name] = value
        return _parse(values, repeated, client)


def _parse(
    values: dict[str, str], repeated: set[str], client: ClientView | None
) -> AuthorizationRequest | AuthorizationError:
    def shown(description: str, error: str = "invalid_request") -> AuthorizationError:
        return AuthorizationError(error, description)

    client_id = values.get("client_id")
    if not client_id or "client_id" in repeated:
        return shown("client_id is required, once")
    if client is None or client.disabled or client.id != client_id:
        return shown("unknown or disabled client", "invalid_client")
    if "redirect_uri" in repeated:
        return shown("redirect_uri appears more than once")
    redirect_uri = values.get("redirect_uri")
    if redirect_uri is None:
        # OIDC Core 3.1.2.1 makes it required; plain OAuth lets one registered URI stand in (RFC 6749 3.1.2.3).
        if OPENID in values.get("scope", "").split(" ") or len(client.redirect_uris) != 1:
            return shown("redirect_uri is required")
        redirect_uri = client.redirect_uris[0]
    elif not redirect_uri_registered(redirect_uri, client.redirect_uris):
        return shown("redirect_uri is not registered for this client")

    # From here on, errors go back to the client.
    state = values.get("state") if "state" not in repeated else None
    if state is not None and len(state) > MAX_PARAM_LENGTH:
        state = None

    def sent(description: str, error: str = "invalid_request") -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri, state)

    if repeated:
        return sent(f"parameters given more than once: {', '.join(sorted(repeated))}")
    if "state" in values and state is None:
        return sent(f"state is longer than {MAX_PARAM_LENGTH} characters")
    if "request" in values:
        return sent("request objects are not supported", "request_not_supported")
    if "request_uri" in values:
        return sent("request_uri is not supported", "request_uri_not_supported")
    response_type = values.get("response_type")
    if not response_type:
        return sent("response_type is required")
    if response_type != RESPONSE_TYPE:
        return sent("only response_type=code is supported", "unsupported_response_type")
    if values.get("response_mode", RESPONSE_MODE) != RESPONSE_MODE:
        return sent("only response_mode=query is supported")
    if AUTHORIZATION_CODE not in client.grant_types:
        return sent("this client may not use the authorization code grant", "unauthorized_client")
    too_long = sorted(k for k, v in values.items() if len(v) > MAX_PARAM_LENGTH)
    if too_long:
        return sent(f"parameters longer than {MAX_PARAM_LENGTH} characters: {', '.join(too_long)}")
    try:
        scope = parse_scope(values.get("scope")) or client.scopes  # RFC 6749 3.3: a default
    except ScopeError as exc:
        return sent(str(exc), "invalid_scope")
    if not scope or any(s not in client.scopes for s in scope):
        return sent("the requested scope is not allowed for this client", "invalid_scope")
    challenge, refusal = _pkce(values, client)
    if refusal is not None:
        return sent(refusal)
    prompt = frozenset(p for p in values.get("prompt", "").split(" ") if p)
    if prompt - set(PROMPT_VALUES):
        return sent(f"prompt may only hold {', '.join(PROMPT_VALUES)}")
    if PROMPT_NONE in prompt and len(prompt) > 1:
        return sent("prompt=none cannot be combined with other values")
    max_age = values.get("max_age")
    if max_age is not None and not (max_age.isascii() and max_age.isdigit() and len(max_age) <= MAX_AGE_DIGITS):
        return sent("max_age must be a non-negative number of seconds")
    nonce = values.get("nonce")
    if nonce is not None and _CONTROL.search(nonce):
        return sent("nonce must be text without control characters")
    return AuthorizationRequest(
        client_id=client.id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        nonce=nonce,
        code_challenge=challenge,
        prompt=prompt,
        max_age=None if max_age is None else int(max_age),
        acr_values=tuple(dict.fromkeys(a for a in values.get("acr_values", "").split(" ") if a)),
    )


def _pkce(values: dict[str, str], client: ClientView) -> tuple[str | None, str | None]:
    """The S256 code challenge (``None`` when a confidential client sent none) and why it is refused,
    if it is. RFC 7636 4.3: no method means "plain", which we do not accept."""
    challenge = values.get("code_challenge")
    method = values.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            return None, "code_challenge_method without code_challenge"
        if client.public:
            return None, "a public client must use PKCE (code_challenge with S256)"
        return None, None
    if method != PKCE_METHOD:
        return None, "code_challenge_method must be S256 (plain is not supported)"
    if not _S256_CHALLENGE.fullmatch(challenge):
        return None, "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)"
    return challenge, None


def userinfo_claims(identity: Identity, scopes: Iterable[str], email_verified: bool = False) -> dict[str, Any]:
    """The claims of a user that ``scopes`` release (OIDC Core 5.4), ``sub`` always.

    ``email_verified`` is false unless the caller knows better: forwardauth records an address an
    administrator typed, and never checks that the user receives mail there.
    """
    granted = set(scopes)
    claims: dict[str, Any] = {"sub": identity.subject}
    if PROFILE in granted:
        claims["preferred_username"] = identity.username
        claims["name"] = identity.username  # no display names are kept: the name is the username
    if EMAIL in granted and identity.email:
        claims["email"] = identity.email
        claims["email_verified"] = email_verified
    if GROUPS in granted:
        claims["groups"] = list(identity.roles)
        claims["roles"] = list(identity.roles)  # the name some apps (Grafana's role mapping...) look for
    return claims


def discovery(settings: Settings, ring: KeyRing, grant_types: Sequence[str]) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 section 3 metadata, every value true to this server.

    ``grant_types`` are the grants the token endpoint takes (stores.clients.GRANT_TYPES). Members
    whose spec default would be untrue are stated: ``request_uri_parameter_supported`` defaults to
    true, ``response_modes_supported`` to query and fragment. An HS256 key signs nothing a client
    could check (its secret is ours alone): ``ValueError`` then, as no ID token can be issued.
    """
    if ring.current.public_jwk is None:
        raise ValueError("ID tokens need a public signing key (RS256, ES256 or EdDSA), not HS256")
    base = settings.issuer
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "end_session_endpoint": f"{base}/oauth/logout",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "scopes_supported": list(OIDC_SCOPES),
        "response_types_supported": [RESPONSE_TYPE],
        "response_modes_supported": [RESPONSE_MODE],
        "grant_types_supported": list(grant_types),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ring.current.alg],
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": list(ID_TOKEN_CLAIMS + USERINFO_CLAIMS),
        "claim_types_supported": ["normal"],
        "code_challenge_methods_supported": [PKCE_METHOD],
        "prompt_values_supported": list(PROMPT_VALUES),
        "acr_values_supported": [ACR_ONE_FACTOR, ACR_MULTI_FACTOR],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
