"""Minting and verifying access tokens: pure, no servers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from forwardauth.core.tokens import Identity, TokenError, TokenService
from forwardauth.keys import KeyRing, generate_private, hmac_key, key_from_private

ISSUER = "https://auth.example.test"
AUDIENCE = "forwardauth"
ALICE = Identity(subject="u-1", username="alice", roles=("admin", "ops"), email="alice@example.test")


def ring_for(alg: str) -> KeyRing:
    key = hmac_key(secrets.token_urlsafe(32)) if alg == "HS256" else key_from_private(generate_private(alg))
    return KeyRing(current=key, by_kid={key.kid: key})


@pytest.fixture(params=["RS256", "ES256", "EdDSA", "HS256"])
def service(request: pytest.FixtureRequest) -> TokenService:
    return TokenService(ring_for(request.param), ISSUER, AUDIENCE, ttl=900, leeway=0)


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_minted_token_has_the_claims(service: TokenService) -> None:
    before = int(time.time())
    minted = service.mint(ALICE, sid="s-1")
    header = jwt.get_unverified_header(minted.token)
    payload = jwt.decode(minted.token, options={"verify_signature": False})
    assert header["kid"] == service.ring.current.kid
    assert header["typ"] == "at+jwt"
    assert header["alg"] == service.ring.current.alg
    assert payload["iss"] == ISSUER and payload["aud"] == AUDIENCE
    assert payload["sub"] == "u-1" and payload["preferred_username"] == "alice"
    assert payload["roles"] == ["admin", "ops"] and payload["email"] == "alice@example.test"
    assert payload["sid"] == "s-1" and payload["jti"] == minted.claims.jti
    assert before <= payload["iat"] == payload["nbf"] <= payload["exp"] - 900


def test_verify_round_trip(service: TokenService) -> None:
    minted = service.mint(ALICE, sid="s-1")
    claims = service.verify(minted.token)
    assert claims == minted.claims
    assert claims.identity == ALICE


def test_jti_is_unique_per_token(service: TokenService) -> None:
    assert service.mint(ALICE, "s").claims.jti != service.mint(ALICE, "s").claims.jti


def test_email_is_left_out_when_unknown(service: TokenService) -> None:
    minted = service.mint(Identity(subject="u-2", username="bob"), sid="s")
    assert "email" not in jwt.decode(minted.token, options={"verify_signature": False})
    assert service.verify(minted.token).identity.email is None


def test_expired_token_is_refused_unless_allowed(service: TokenService) -> None:
    minted = service.mint(ALICE, sid="s", now=int(time.time()) - 901)
    with pytest.raises(TokenError):
        service.verify(minted.token)
    assert service.verify(minted.token, allow_expired=True).sid == "s"


def test_not_yet_valid_token_is_refused(service: TokenService) -> None:
    minted = service.mint(ALICE, sid="s", now=int(time.time()) + 120)
    with pytest.raises(TokenError):
        service.verify(minted.token)


@pytest.mark.parametrize("field,value", [("issuer", "https://evil.example"), ("audience", "other")])
def test_wrong_issuer_or_audience_is_refused(service: TokenService, field: str, value: str) -> None:
    other = TokenService(service.ring, ISSUER, AUDIENCE, 900, 0)
    setattr(other, field, value)
    with pytest.raises(TokenError):
        service.verify(other.mint(ALICE, "s").token)


def test_token_from_an_unknown_key_is_refused(service: TokenService) -> None:
    stranger = TokenService(ring_for("RS256"), ISSUER, AUDIENCE, 900, 0)
    with pytest.raises(TokenError, match="unknown key id"):
        service.verify(stranger.mint(ALICE, "s").token)


def test_token_signed_by_another_key_under_our_kid_is_refused(service: TokenService) -> None:
    impostor_ring = ring_for(service.ring.current.alg)
    forged_key = impostor_ring.current
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    forged = jwt.encode(
        payload,
        forged_key.signing,
        algorithm=forged_key.alg,
        headers={"kid": service.ring.current.kid, "typ": "at+jwt"},
    )
    with pytest.raises(TokenError):
        service.verify(forged)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(service: TokenService, alg: str) -> None:
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    header = {"alg": alg, "typ": "at+jwt", "kid": service.ring.current.kid}
    for signature in ("", "AAAA"):
        with pytest.raises(TokenError):
            service.verify(f"{b64(header)}.{b64(payload)}.{signature}")


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The classic algorithm-confusion attack: the public key used as an HMAC secret."""
    service = TokenService(ring_for("RS256"), ISSUER, AUDIENCE, 900, 0)
    key = service.ring.current
    public_pem = key.verifying.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    forged = signing_input.decode() + "." + signature.rstrip(b"=").decode()
    with pytest.raises(TokenError):
        service.verify(forged)


def test_other_token_types_are_refused(service: TokenService) -> None:
    key = service.ring.current
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    for typ in ("JWT", "refresh+jwt", None):
        headers = {"kid": key.kid, **({"typ": typ} if typ else {})}
        token = jwt.encode(payload, key.signing, algorithm=key.alg, headers=headers)
        if typ is None:  # PyJWT adds typ=JWT by default; drop it entirely
            token = jwt.api_jws.PyJWS().encode(
                json.dumps(payload).encode(), key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": None}
            )
        with pytest.raises(TokenError, match="not an access token"):
            service.verify(token)


@pytest.mark.parametrize("missing", ["iss", "aud", "exp", "jti", "sid", "sub", "nbf", "iat"])
def test_required_claims(service: TokenService, missing: str) -> None:
    key = service.ring.current
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    del payload[missing]
    token = jwt.encode(payload, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"})
    with pytest.raises(TokenError):
        service.verify(token)


@pytest.mark.parametrize("claim,value", [("roles", "admin"), ("roles", [1]), ("sub", 5), ("email", ["x"])])
def test_claims_of_the_wrong_type_are_refused(service: TokenService, claim: str, value: object) -> None:
    key = service.ring.current
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    payload[claim] = value
    token = jwt.encode(payload, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"})
    with pytest.raises(TokenError):
        service.verify(token)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "eyJ.eyJ.sig",
        "\u00e9\u00e9.\u00e9.\u00e9",
        "x" * 9000,
        b64({"kid": ["list"], "alg": "RS256", "typ": "at+jwt"}) + ".e30.sig",
        b64({"kid": "../../etc/passwd", "alg": "RS256", "typ": "at+jwt"}) + ".e30.sig",
    ],
)
def test_garbage_is_refused(service: TokenService, garbage: str) -> None:
    with pytest.raises(TokenError):
        service.verify(garbage)


def test_rotation_keeps_older_keys_verifying() -> None:
    old = key_from_private(generate_private("RS256"))
    new = key_from_private(generate_private("RS256"))
    before = TokenService(KeyRing(current=old, by_kid={old.kid: old}), ISSUER, AUDIENCE, 900, 0)
    after = TokenService(KeyRing(current=new, by_kid={old.kid: old, new.kid: new}), ISSUER, AUDIENCE, 900, 0)
    token = before.mint(ALICE, "s").token
    assert after.verify(token).identity == ALICE
    assert jwt.get_unverified_header(after.mint(ALICE, "s").token)["kid"] == new.kid


# --- a client's own token (client_credentials) is never a user's ------------------------------------

ROBOT = Identity.of_client("bob", ("service",))


def sign(service: TokenService, payload: dict[str, object]) -> str:
    key = service.ring.current
    return jwt.encode(payload, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"})


def test_client_token_carries_no_username_and_reads_back_as_a_client(service: TokenService) -> None:
    minted = service.mint(ROBOT, sid="client.bob.1", client_id="bob")
    payload = jwt.decode(minted.token, options={"verify_signature": False})
    assert payload["sub"] == "client:bob" and payload["client_id"] == "bob" and payload["roles"] == ["service"]
    assert "preferred_username" not in payload and "email" not in payload
    identity = service.verify(minted.token).identity
    assert identity == ROBOT and identity.client == "bob" and identity.username == ""


def test_a_client_token_must_be_issued_to_that_client(service: TokenService) -> None:
    for client_id in (None, "alice"):
        with pytest.raises(ValueError, match="issued to that client"):
            service.mint(ROBOT, sid="s", client_id=client_id)
    with pytest.raises(ValueError, match="username and a user id"):  # a user dressed as a client
        service.mint(Identity(subject="client:bob", username="bob"), sid="s")


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "alice"},  # sub names one client, client_id another
        {"client_id": None},  # a client subject with no client
        {"email": "bob@example.test"},  # a client has no user attributes
    ],
)
def test_inconsistent_client_claims_are_refused(service: TokenService, change: dict[str, object]) -> None:
    payload = jwt.decode(service.mint(ROBOT, "s", client_id="bob").token, options={"verify_signature": False})
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(TokenError, match="client"):
        service.verify(sign(service, payload))


def test_old_client_tokens_with_a_username_read_as_the_client_not_the_user(service: TokenService) -> None:
    """Tokens minted before clients got their own form (sub client:bob, preferred_username bob)."""
    payload = jwt.decode(service.mint(ROBOT, "s", client_id="bob").token, options={"verify_signature": False})
    payload["preferred_username"] = "bob"
    identity = service.verify(sign(service, payload)).identity
    assert identity.client == "bob" and identity.username == ""


def test_a_user_token_needs_a_username(service: TokenService) -> None:
    payload = jwt.decode(service.mint(ALICE, "s").token, options={"verify_signature": False})
    del payload["preferred_username"]
    with pytest.raises(TokenError, match="preferred_username"):
        service.verify(sign(service, payload))


def test_ids_never_start_with_a_dash() -> None:
    """A command line would read ``-9J2...`` as an option (``forwardauth token revoke alice ID``)."""
    from forwardauth.core.tokens import new_id

    made = [new_id() for _ in range(2000)]  # about 31 would start with "-" otherwise
    assert not [m for m in made if m.startswith("-")]
    assert len(set(made)) == len(made) and all(len(m) == 22 for m in made)
