"""The pure OpenID Connect core: scopes, PKCE, authorization requests, ID and logout tokens,
userinfo claims, discovery. No servers; ID tokens are checked by joserfc from the JWKS alone."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from forwardauth.config import Settings
from forwardauth.core import oidc
from forwardauth.core.authn import ACR_MULTI_FACTOR, ACR_ONE_FACTOR, OTP, PASSWORD, Authentication
from forwardauth.core.idtokens import (
    BACKCHANNEL_LOGOUT_EVENT,
    IdTokenError,
    IdTokenService,
    access_token_hash,
)
from forwardauth.core.oidc import AuthorizationError, AuthorizationRequest, check_pkce, parse_scope
from forwardauth.core.tokens import Identity, TokenService
from forwardauth.keys import KeyRing, generate_private, hmac_key, key_from_private

# joserfc warns that RFC 9864 deprecates the "EdDSA" name; it is still what the keys publish.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
ISSUER = "https://auth.example.test"
ALICE = Identity(subject="u-1", username="alice", roles=("admin", "ops"), email="alice@example.test")
AUTH = Authentication.of([PASSWORD, OTP], 1_700_000_000)
# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
CALLBACK = "https://app.example.test/callback?tenant=1"


@dataclass(frozen=True)
class FakeClient:
    id: str = "app"
    redirect_uris: tuple[str, ...] = (CALLBACK, "https://app.example.test/other")
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scopes: tuple[str, ...] = oidc.OIDC_SCOPES
    disabled: bool = False
    public: bool = False


def ring_for(alg: str) -> KeyRing:
    key = hmac_key(secrets.token_urlsafe(32)) if alg == "HS256" else key_from_private(generate_private(alg))
    return KeyRing(current=key, by_kid={key.kid: key})


def id_service(alg: str = "RS256", issuer: str = ISSUER) -> IdTokenService:
    return IdTokenService(TokenService(ring_for(alg), issuer, "forwardauth", ttl=900, leeway=0))


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def ids(request: pytest.FixtureRequest) -> IdTokenService:
    return id_service(request.param)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def request_params(**changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": CALLBACK,
        "scope": "openid profile",
        "state": "st-1",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": RFC_CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def parsed(client: FakeClient | None = None, **changes: str | None) -> AuthorizationRequest:
    result = AuthorizationRequest.parse(request_params(**changes), client or FakeClient())
    assert isinstance(result, AuthorizationRequest), result
    return result


def refused(client: FakeClient | None = None, **changes: str | None) -> AuthorizationError:
    result = AuthorizationRequest.parse(request_params(**changes), FakeClient() if client is None else client)
    assert isinstance(result, AuthorizationError), result
    return result


# Scopes, PKCE, redirect URIs


def test_scope_is_deduplicated_in_order() -> None:
    assert parse_scope("openid  profile openid email") == ("openid", "profile", "email")
    assert parse_scope(None) == () and parse_scope("") == ()


@pytest.mark.parametrize("text", ["openid\tprofile", "openid\nprofile", 'openid "x"', "openid a\\b", "a\x7f"])
def test_scope_refuses_what_is_not_a_scope_token(text: str) -> None:
    with pytest.raises(oidc.ScopeError):
        parse_scope(text)


def test_pkce_vector_of_rfc_7636_appendix_b() -> None:
    assert check_pkce(RFC_VERIFIER, RFC_CHALLENGE)
    assert not check_pkce(RFC_VERIFIER[:-1] + "l", RFC_CHALLENGE)
    assert not check_pkce(RFC_VERIFIER, RFC_CHALLENGE[:-1] + "N")
    assert not check_pkce(None, RFC_CHALLENGE) and not check_pkce(RFC_VERIFIER, None)


@pytest.mark.parametrize("verifier", ["a" * 42, "a" * 129, "a" * 42 + "+", "a" * 42 + "/", "é" * 43])
def test_pkce_refuses_verifiers_outside_rfc_7636(verifier: str) -> None:
    """Even when the challenge is the verifier's true hash: a short verifier is guessable."""
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    assert not check_pkce(verifier, challenge)
    assert check_pkce("a" * 43, create_s256_code_challenge("a" * 43))


def test_redirect_uri_matches_exactly() -> None:
    registered = ("https://app.example.test/cb",)
    assert oidc.redirect_uri_registered("https://app.example.test/cb", registered)
    for near in (
        "https://app.example.test/cb/",
        "https://APP.example.test/cb",
        "https://app.example.test/cb?x=1",
        "https://app.example.test/c",
        "https://app.example.test:443/cb",
        "http://app.example.test/cb",
    ):
        assert not oidc.redirect_uri_registered(near, registered), near


# Authorization requests


def test_a_full_request_is_parsed() -> None:
    request = parsed(prompt="login", max_age="0", acr_values=f"{ACR_MULTI_FACTOR} x")
    assert request == AuthorizationRequest(
        client_id="app",
        redirect_uri=CALLBACK,
        scope=("openid", "profile"),
        state="st-1",
        nonce="n-0S6_WzA2Mj",
        code_challenge=RFC_CHALLENGE,
        prompt=frozenset({"login"}),
        max_age=0,
        acr_values=(ACR_MULTI_FACTOR, "x"),
    )
    assert request.openid and request.wants_mfa and request.scope_text == "openid profile"
    assert AuthorizationRequest.parse(request.as_params(), FakeClient()) == request
    assert request.without_prompt().prompt == frozenset() and request.without_prompt().max_age is None


def test_success_url_keeps_the_registered_query_and_adds_iss() -> None:
    url = parsed().success_url("c0de", ISSUER)
    assert url.startswith("https://app.example.test/callback?")
    assert parse_qs(urlsplit(url).query) == {"tenant": ["1"], "code": ["c0de"], "state": ["st-1"], "iss": [ISSUER]}
    assert "state" not in parse_qs(urlsplit(parsed(state=None).success_url("c", ISSUER)).query)


def test_empty_parameters_count_as_omitted() -> None:
    request = parsed(nonce="", state="", prompt="", client=FakeClient())
    assert request.nonce is None and request.state is None and request.prompt == frozenset()


def test_plain_oauth_request_without_openid_may_omit_a_single_redirect_uri() -> None:
    client = FakeClient(redirect_uris=(CALLBACK,))
    request = parsed(client, scope="profile", redirect_uri=None)
    assert request.redirect_uri == CALLBACK and not request.openid
    assert not refused(client, redirect_uri=None).redirectable  # OIDC Core 3.1.2.1: required with openid


def test_missing_scope_means_what_the_client_may_have() -> None:
    assert parsed(FakeClient(scopes=("openid", "email")), scope=None).scope == ("openid", "email")


def test_confidential_client_may_skip_pkce() -> None:
    assert parsed(code_challenge=None, code_challenge_method=None).code_challenge is None


@pytest.mark.parametrize(
    ("client", "changes", "error"),
    [
        (FakeClient(), {"client_id": None}, "invalid_request"),
        (None, {}, "invalid_client"),
        (FakeClient(disabled=True), {}, "invalid_client"),
        (FakeClient(id="other"), {}, "invalid_client"),
        (FakeClient(), {"redirect_uri": "https://evil.example.test/callback?tenant=1"}, "invalid_request"),
        (FakeClient(), {"redirect_uri": "https://app.example.test/callback"}, "invalid_request"),
        (FakeClient(), {"redirect_uri": None}, "invalid_request"),  # two registered, none named
    ],
)
def test_errors_before_the_redirect_uri_is_known_are_not_redirected(
    client: FakeClient | None, changes: dict[str, str | None], error: str
) -> None:
    result = AuthorizationRequest.parse(request_params(**changes), client)
    assert isinstance(result, AuthorizationError)
    assert result.error == error and not result.redirectable
    with pytest.raises(ValueError):
        result.url(ISSUER)


def test_a_repeated_redirect_uri_is_not_redirected() -> None:
    pairs = [*request_params().items(), ("redirect_uri", "https://app.example.test/other")]
    result = AuthorizationRequest.parse(pairs, FakeClient())
    assert isinstance(result, AuthorizationError) and not result.redirectable


@pytest.mark.parametrize(
    ("client", "changes", "error"),
    [
        (FakeClient(), {"response_type": None}, "invalid_request"),
        (FakeClient(), {"response_type": "token"}, "unsupported_response_type"),
        (FakeClient(), {"response_type": "code id_token"}, "unsupported_response_type"),
        (FakeClient(), {"response_mode": "fragment"}, "invalid_request"),
        (FakeClient(), {"code_challenge_method": "plain", "code_challenge": "a" * 43}, "invalid_request"),
        (FakeClient(), {"code_challenge_method": None}, "invalid_request"),  # no method means plain
        (FakeClient(), {"code_challenge": None}, "invalid_request"),  # a method without a challenge
        (FakeClient(), {"code_challenge": "short"}, "invalid_request"),
        (FakeClient(public=True), {"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        (FakeClient(), {"prompt": "none login"}, "invalid_request"),
        (FakeClient(), {"prompt": "select_account"}, "invalid_request"),
        (FakeClient(), {"max_age": "soon"}, "invalid_request"),
        (FakeClient(), {"max_age": "-1"}, "invalid_request"),
        (FakeClient(), {"max_age": "1.5"}, "invalid_request"),
        (FakeClient(), {"max_age": "١٢"}, "invalid_request"),  # Arabic-Indic digits: str.isdigit says yes
        (FakeClient(), {"scope": "openid admin"}, "invalid_scope"),
        (FakeClient(), {"scope": "openid\x00"}, "invalid_scope"),
        (FakeClient(grant_types=("password",)), {}, "unauthorized_client"),
        (FakeClient(), {"request": "eyJ..."}, "request_not_supported"),
        (FakeClient(), {"request_uri": "https://x.test/r"}, "request_uri_not_supported"),
        (FakeClient(), {"nonce": "a\nb"}, "invalid_request"),
        (FakeClient(), {"nonce": "n" * 2049}, "invalid_request"),
    ],
)
def test_errors_after_the_redirect_uri_is_known_go_back_with_state_and_iss(
    client: FakeClient, changes: dict[str, str | None], error: str
) -> None:
    result = refused(client, **changes)
    assert result.error == error and result.redirectable and result.description
    query = parse_qs(urlsplit(result.url(ISSUER)).query)
    assert query["error"] == [error] and query["state"] == ["st-1"] and query["iss"] == [ISSUER]
    assert query["tenant"] == ["1"]


def test_a_repeated_parameter_is_refused() -> None:
    pairs = [*request_params().items(), ("scope", "openid email")]
    result = AuthorizationRequest.parse(pairs, FakeClient())
    assert isinstance(result, AuthorizationError) and result.redirectable
    assert result.error == "invalid_request" and "scope" in result.description


def test_max_age_decides_whether_a_sign_in_is_fresh_enough() -> None:
    now = AUTH.auth_time + 300
    assert parsed(max_age="300").fresh_enough(AUTH, now)
    assert not parsed(max_age="299").fresh_enough(AUTH, now)
    assert parsed().fresh_enough(AUTH, now + 10**9)


def test_request_errors_for_the_client_keep_its_state() -> None:
    error = parsed().error("login_required", "no session")
    assert parse_qs(urlsplit(error.url(ISSUER)).query)["error"] == ["login_required"]
    assert error.state == "st-1"


# Userinfo


def test_userinfo_claims_follow_the_scopes() -> None:
    assert oidc.userinfo_claims(ALICE, ["openid"]) == {"sub": "u-1"}
    assert oidc.userinfo_claims(ALICE, ["openid", "profile", "email", "groups"]) == {
        "sub": "u-1",
        "preferred_username": "alice",
        "name": "alice",
        "email": "alice@example.test",
        "email_verified": False,
        "groups": ["admin", "ops"],
        "roles": ["admin", "ops"],
    }
    assert "email" not in oidc.userinfo_claims(replace(ALICE, email=None), ["email"])


# ID tokens


def test_id_token_validates_from_the_public_jwks_alone(ids: IdTokenService) -> None:
    access = "an.access.token"
    claims = oidc.userinfo_claims(ALICE, ["profile", "email"])
    token = ids.mint_id_token(
        subject="u-1", audience="app", auth=AUTH, sid="s-1", nonce="n-0S6", access_token=access, claims=claims
    )
    published = json.loads(json.dumps(ids.tokens.ring.jwks()))  # what /.well-known/jwks.json serves
    decoded = jose_jwt.decode(token, KeySet.import_key_set(published), algorithms=[ids.tokens.ring.current.alg])
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "app"},
        sub={"essential": True, "value": "u-1"},
        nonce={"essential": True, "value": "n-0S6"},
    ).validate(decoded.claims)
    assert decoded.header["typ"] == "JWT" and decoded.header["kid"] == ids.tokens.ring.current.kid
    payload = decoded.claims
    assert payload["auth_time"] == AUTH.auth_time and payload["amr"] == ["otp", "pwd", "mfa"]
    assert payload["acr"] == ACR_MULTI_FACTOR and payload["sid"] == "s-1"
    assert payload["exp"] - payload["iat"] == 900 and abs(payload["iat"] - time.time()) < 60
    assert payload["preferred_username"] == "alice" and payload["email"] == "alice@example.test"
    assert set(payload) <= set(oidc.ID_TOKEN_CLAIMS + oidc.USERINFO_CLAIMS)


@pytest.mark.parametrize(("alg", "hash_name"), [("RS256", "sha256"), ("ES256", "sha256"), ("EdDSA", "sha512")])
def test_at_hash_is_the_left_half_of_the_access_token_hash(alg: str, hash_name: str) -> None:
    ids = id_service(alg)
    access = TokenService(ids.tokens.ring, ISSUER, "forwardauth", 900, 0).mint(ALICE, "s-1").token
    token = ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s-1", access_token=access)
    digest = hashlib.new(hash_name, access.encode()).digest()
    expected = b64url(digest[: len(digest) // 2])
    assert jwt.decode(token, options={"verify_signature": False})["at_hash"] == expected
    assert access_token_hash(access, alg) == expected


def test_id_token_leaves_out_what_was_not_given() -> None:
    auth = Authentication.of([PASSWORD], 1_700_000_000)
    token = id_service().mint_id_token(subject="u-1", audience="app", auth=auth, sid="s-1")
    payload = jwt.decode(token, options={"verify_signature": False})
    assert "nonce" not in payload and "at_hash" not in payload
    assert payload["acr"] == ACR_ONE_FACTOR and payload["amr"] == ["pwd"]


def test_nonce_round_trips_exactly() -> None:
    nonce = 'ñ 🚀 <x>&y="z" ' + "n" * 100
    token = id_service().mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s", nonce=nonce)
    assert jwt.decode(token, options={"verify_signature": False})["nonce"] == nonce


@pytest.mark.parametrize("claims", [{"iss": "x"}, {"nonce": "x"}, {"aud": "x"}, {"sub": "u-2"}, {"at_hash": "x"}])
def test_extra_claims_cannot_override_the_protocol_claims(claims: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        id_service().mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s", claims=claims)


def test_hs256_signs_no_id_token() -> None:
    ids = id_service("HS256")
    assert not ids.available
    with pytest.raises(IdTokenError):
        ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s")
    with pytest.raises(IdTokenError):
        ids.logout_token("app", "u-1", "s")
    with pytest.raises(ValueError):
        oidc.discovery(Settings(issuer=ISSUER), ids.tokens.ring, ["authorization_code"])


def test_a_reloaded_ring_signs_the_next_id_token() -> None:
    ids = id_service()
    new = ring_for("RS256")
    ids.tokens.ring = KeyRing(current=new.current, by_kid={**ids.tokens.ring.by_kid, **new.by_kid})
    token = ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s")
    assert jwt.get_unverified_header(token)["kid"] == new.current.kid


# id_token_hint


def test_an_expired_id_token_of_ours_is_a_valid_hint(ids: IdTokenService) -> None:
    long_ago = int(time.time()) - 86400
    token = ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s-1", now=long_ago)
    hint = ids.verify_id_token_hint(token)
    assert (hint.subject, hint.audience, hint.client_id, hint.sid) == ("u-1", ("app",), "app", "s-1")
    assert hint.issued_at == long_ago and hint.expires_at == long_ago + 900


def test_other_tokens_are_no_hint() -> None:
    ids = id_service()
    good = ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s-1")
    header, _body, signature = good.split(".")
    forged_body = b64url(json.dumps({**jwt.decode(good, options={"verify_signature": False}), "sub": "u-2"}).encode())
    others = {
        "access token": ids.tokens.mint(ALICE, "s-1").token,
        "logout token": ids.logout_token("app", "u-1", "s-1"),
        "another issuer": IdTokenService(
            TokenService(ids.tokens.ring, "https://other.test", "forwardauth", 900, 0)
        ).mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s-1"),
        "another key": id_service().mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s-1"),
        "forged": f"{header}.{forged_body}.{signature}",
        "garbage": "not-a-jwt",
        "too long": good + "A" * 5000,
    }
    for name, token in others.items():
        with pytest.raises(IdTokenError):
            ids.verify_id_token_hint(token)
            pytest.fail(f"{name} passed as an id_token_hint")


# Back-channel logout tokens


def test_logout_token_follows_back_channel_logout_1_0(ids: IdTokenService) -> None:
    token = ids.logout_token("app", "u-1", "s-1")
    published = KeySet.import_key_set(json.loads(json.dumps(ids.tokens.ring.jwks())))
    decoded = jose_jwt.decode(token, published, algorithms=[ids.tokens.ring.current.alg])
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "app"},
        jti={"essential": True},
    ).validate(decoded.claims)
    claims = decoded.claims
    assert decoded.header["typ"] == "logout+jwt" and decoded.header["kid"] == ids.tokens.ring.current.kid
    assert claims["sub"] == "u-1" and claims["sid"] == "s-1"
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}} and "nonce" not in claims
    assert claims["exp"] - claims["iat"] == 120
    assert (
        jwt.decode(ids.logout_token("app", "u-1", "s-1"), options={"verify_signature": False})["jti"] != claims["jti"]
    )


# Discovery


REQUIRED = (  # OpenID Connect Discovery 1.0 section 3, REQUIRED for a provider with a token endpoint
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "response_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_discovery_has_the_required_fields_and_only_true_values(alg: str) -> None:
    ids = id_service(alg)
    doc = oidc.discovery(Settings(issuer=ISSUER), ids.tokens.ring, ["authorization_code", "refresh_token"])
    assert all(doc.get(name) for name in REQUIRED)
    assert doc["issuer"] == ISSUER
    assert all(v.startswith(ISSUER + "/") for k, v in doc.items() if k.endswith(("_endpoint", "_uri")))
    assert doc["end_session_endpoint"] == f"{ISSUER}/oauth/logout"
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    # What the doc says is what the code does:
    token = ids.mint_id_token(subject="u-1", audience="app", auth=AUTH, sid="s", nonce="n", access_token="a")
    assert doc["id_token_signing_alg_values_supported"] == [jwt.get_unverified_header(token)["alg"]]
    everything = oidc.userinfo_claims(ALICE, oidc.OIDC_SCOPES)
    assert set(jwt.decode(token, options={"verify_signature": False})) | set(everything) == set(doc["claims_supported"])
    assert doc["scopes_supported"] == list(FakeClient().scopes)
    assert doc["response_types_supported"] == ["code"] and doc["response_modes_supported"] == ["query"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    for prompt in doc["prompt_values_supported"]:
        assert parsed(prompt=prompt).prompt == {prompt}
    assert set(doc["acr_values_supported"]) == {Authentication.of(m, 0).acr for m in (["pwd"], ["pwd", "otp"])}
    assert doc["subject_types_supported"] == ["public"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["backchannel_logout_supported"] is True and doc["backchannel_logout_session_supported"] is True
    # Capabilities we lack are stated false where the spec's default would claim them.
    assert refused(request="x").error == "request_not_supported" and doc["request_parameter_supported"] is False
    assert refused(request_uri="x").error == "request_uri_not_supported"
    assert doc["request_uri_parameter_supported"] is False and doc["claims_parameter_supported"] is False
    assert json.loads(json.dumps(doc)) == doc
