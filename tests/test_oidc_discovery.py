"""``/.well-known/openid-configuration`` against OpenID Connect Discovery 1.0, and true to the server.

Section 3 (OpenID Provider Metadata) makes seven members REQUIRED: ``issuer``,
``authorization_endpoint``, ``token_endpoint`` (unless only the implicit flow is used),
``jwks_uri``, ``response_types_supported``, ``subject_types_supported`` and
``id_token_signing_alg_values_supported``, which MUST include RS256. Section 4 puts the document
at the issuer followed by ``/.well-known/openid-configuration``, its ``issuer`` identical to the
one it was fetched with (4.3), with empty lists left out (4.2). authlib's
``OpenIDProviderMetadata`` (a stock validator of the same rules) checks it too.

Beyond the form, each claim is tried: every endpoint listed answers at its URL as written, through
real nginx (not a 404); every grant type, PKCE method, response mode, prompt value and client
authentication method listed is accepted, and what is not listed (or declared unsupported) is
refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.oidc.discovery import OpenIDProviderMetadata

from forwardauth import config
from forwardauth.http.app import create_app
from forwardauth.stores import clients
from forwardauth.stores.postgres import Database

from .support import AppServer, Stack, require_program
from .test_oauth import basic, token

Client = Any
PATH = "/.well-known/openid-configuration"
REQUIRED = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "response_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
)
REDIRECT = "https://app.example.test/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B


async def metadata(client: Client) -> dict[str, Any]:
    response = await client.get(PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    return dict(await response.json())


def every_grant(database: Database) -> tuple[clients.Client, str]:
    """A confidential client allowed every grant and scope there is."""
    client, secret = database.call(
        clients.create,
        f"all-{secrets.token_hex(4)}",
        list(clients.GRANT_TYPES),
        ["openid", "profile", "email", "groups", "offline_access"],
        [],
        False,
        redirect_uris=[REDIRECT],
    )
    assert secret is not None
    return client, secret


async def authorize(client: Client, **params: str) -> tuple[str, dict[str, list[str]]]:
    """An authorization request from a browser without a session: where it is sent, and the query."""
    response = await client.get("/oauth/authorize?" + urlencode(params), allow_redirects=False)
    assert response.status in (302, 303), await response.text()
    location = response.headers["Location"]
    return location.split("?", 1)[0], parse_qs(urlsplit(location).query)


async def to_client(client: Client, **params: str) -> dict[str, list[str]]:
    """The same, for an answer that goes back to the client (an error): its query."""
    where, query = await authorize(client, **params)
    assert where == REDIRECT
    return query


async def test_every_required_member_is_there(client: Client, settings: config.Settings) -> None:
    meta = await metadata(client)
    assert [name for name in REQUIRED if name not in meta] == []
    assert meta["issuer"] == settings.issuer  # 4.3: the one the document was fetched with
    issuer = urlsplit(meta["issuer"])
    assert issuer.scheme in ("https", "http") and issuer.netloc and not issuer.query and not issuer.fragment
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "end_session_endpoint"):
        assert meta[name].startswith(settings.issuer + "/"), name
    assert "code" in meta["response_types_supported"]
    assert set(meta["subject_types_supported"]) <= {"public", "pairwise"} and meta["subject_types_supported"]
    assert "RS256" in meta["id_token_signing_alg_values_supported"]  # 3: "RS256 MUST be included"
    assert "none" not in meta["id_token_signing_alg_values_supported"]
    assert "openid" in meta["scopes_supported"]  # 3: "The server MUST support the openid scope value"
    empty = [name for name, value in meta.items() if value in ([], {}, "", None)]
    assert empty == []  # 4.2: members with zero elements are omitted


async def test_authlib_validates_the_document(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stock validator of every member it knows (RFC 8414 and Discovery 1.0). The test issuer
    is plain HTTP, which it refuses outside a test."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    OpenIDProviderMetadata(await metadata(client)).validate()


async def test_listed_algorithm_is_the_key_id_tokens_are_signed_with(client: Client) -> None:
    meta = await metadata(client)
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert meta["id_token_signing_alg_values_supported"] == [key["alg"] for key in jwks["keys"]][:1]
    assert all(key.get("kid") for key in jwks["keys"])


async def test_listed_grant_types_are_accepted_and_no_others(client: Client, database: Database) -> None:
    meta = await metadata(client)
    app, secret = every_grant(database)
    for grant in meta["grant_types_supported"]:
        status, body = await token(client, {"grant_type": grant}, basic(app.id, secret))
        assert body.get("error") != "unsupported_grant_type", grant  # refused for its missing parameters only
    status, body = await token(client, {"grant_type": "implicit"}, basic(app.id, secret))
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_listed_client_authentication_methods_are_accepted(client: Client, database: Database) -> None:
    """A wrong code, so each call reaches the grant: ``invalid_grant``, never ``invalid_client``."""
    meta = await metadata(client)
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post", "none"}
    app, secret = every_grant(database)
    public, _ = database.call(
        clients.create,
        f"pub-{secrets.token_hex(4)}",
        ["authorization_code"],
        ["openid"],
        [],
        True,
        redirect_uris=[REDIRECT],
    )
    form = {"grant_type": "authorization_code", "code": "no-such-code", "redirect_uri": REDIRECT}
    ways = {
        "client_secret_basic": (form, basic(app.id, secret)),
        "client_secret_post": ({**form, "client_id": app.id, "client_secret": secret}, None),
        "none": ({**form, "client_id": public.id, "code_verifier": "v" * 43}, None),
    }
    for method in meta["token_endpoint_auth_methods_supported"]:
        body, headers = ways[method]
        status, answer = await token(client, body, headers)
        assert (status, answer["error"]) == (400, "invalid_grant"), method
    status, answer = await token(client, form, basic(app.id, "wrong"))
    assert (status, answer["error"]) == (401, "invalid_client")


async def test_pkce_modes_and_prompts_are_as_listed(client: Client, database: Database) -> None:
    """What the authorization endpoint takes is what the document says, and nothing more."""
    meta = await metadata(client)
    app, _ = every_grant(database)
    base = {"client_id": app.id, "redirect_uri": REDIRECT, "response_type": "code", "scope": "openid", "state": "s"}
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_modes_supported"] == ["query"]
    # listed: accepted. Without a session, none answers login_required; login and consent lead
    # to the login page first (the request itself was fine).
    for prompt in meta["prompt_values_supported"]:
        where, sent = await authorize(
            client, **base, prompt=prompt, code_challenge=CHALLENGE, code_challenge_method="S256"
        )
        if prompt == "none":
            assert (where, sent["error"], sent["state"]) == (REDIRECT, ["login_required"], ["s"])
        else:
            assert where == "/login" and sent["rd"][0].startswith("/oauth/authorize?resume="), prompt
    assert (await to_client(client, **base, prompt="none", response_mode="query"))["error"] == ["login_required"]
    # not listed: refused, back to the client with our iss (RFC 9207)
    refusals = {
        "plain": {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
        "fragment": {"response_mode": "fragment"},
        "select_account": {"prompt": "select_account"},
        "token": {"response_type": "token"},
    }
    for name, params in refusals.items():
        sent = await to_client(client, **{**base, **params})
        assert sent["error"][0] in ("invalid_request", "unsupported_response_type"), name
        assert sent["iss"] == [meta["issuer"]] and sent["state"] == ["s"], name
    # declared unsupported: refused with the errors OpenID Connect Core 6 names
    assert meta["request_parameter_supported"] is False and meta["request_uri_parameter_supported"] is False
    assert (await to_client(client, **base, request="e30.e30."))["error"] == ["request_not_supported"]
    assert (await to_client(client, **base, request_uri="https://x.test/r"))["error"] == ["request_uri_not_supported"]


@pytest.fixture
def hs256(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET": secrets.token_urlsafe(48)}


async def test_no_document_while_no_id_token_can_be_checked(aiohttp_client: Any, hs256: dict[str, str]) -> None:
    """HS256: a client could check no ID token (the secret is ours alone), so nothing claims it can."""
    app_client = await aiohttp_client(AppServer(create_app(config.load(hs256))))
    response = await app_client.get(PATH)
    assert response.status == 404
    assert "HS256" in (await response.json())["error_description"]


@pytest.fixture
def stack(proxy_stack: Callable[..., Stack]) -> Stack:
    require_program("nginx")
    return proxy_stack("nginx")


def test_every_listed_endpoint_answers_through_nginx(stack: Stack) -> None:
    """Each URL exactly as the document writes it (the issuer's path included), from outside:
    the proxy routes it to forwardauth, which answers as that endpoint does without credentials."""
    issuer = stack.url + "/forwardauth"
    answer = requests.get(issuer + PATH, timeout=10)
    assert answer.status_code == 200
    meta = answer.json()
    assert meta["issuer"] == issuer
    urls = {name: value for name, value in meta.items() if name.endswith("_endpoint") or name == "jwks_uri"}
    assert set(urls) >= {
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    }
    expected = {  # (method, what a request without credentials gets)
        "authorization_endpoint": ("GET", 400),  # no client_id: a page, no redirect
        "token_endpoint": ("POST", 400),
        "userinfo_endpoint": ("GET", 401),
        "jwks_uri": ("GET", 200),
        "end_session_endpoint": ("GET", 200),  # no session: the signed-out page
        "revocation_endpoint": ("POST", 400),  # no token given
        "introspection_endpoint": ("POST", 400),
    }
    got = {}
    for name, url in urls.items():
        assert url.startswith(issuer + "/"), name
        method, _ = expected.get(name, ("GET", None))
        response = requests.request(method, url, timeout=10, allow_redirects=False)
        got[name] = (method, response.status_code)
        assert response.status_code not in (404, 405) and response.status_code < 500, (name, response.status_code)
    assert got == {name: expected[name] for name in urls}
    assert "Bearer" in requests.get(urls["userinfo_endpoint"], timeout=10).headers["WWW-Authenticate"]
    assert requests.get(urls["jwks_uri"], timeout=10).json()["keys"]


# Discovery 1.0 section 3 wants RS256 among the ID token algorithms whatever else is offered; with
# an ES256 or EdDSA key forwardauth signs ID tokens with that key alone and lists only it (strict
# validators, authlib's among them, then reject the document). Known, for the lead to settle.
RS256_ONLY_WITH_RSA = pytest.mark.xfail(
    strict=True, reason="ID tokens are signed with the configured key alone: RS256 is listed only with an RSA key"
)


@pytest.mark.parametrize(
    "alg", [pytest.param("ES256", marks=RS256_ONLY_WITH_RSA), pytest.param("EdDSA", marks=RS256_ONLY_WITH_RSA)]
)
async def test_rs256_is_listed_whatever_the_key(aiohttp_client: Any, env: dict[str, str], alg: str) -> None:
    app_client = await aiohttp_client(AppServer(create_app(config.load({**env, "FORWARDAUTH_SIGNING_ALG": alg}))))
    meta = await metadata(app_client)
    jwks = await (await app_client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["alg"] == alg  # the key is the one configured
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
