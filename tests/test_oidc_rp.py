"""Stock OpenID Connect relying parties against forwardauth, in Chromium through real nginx.

Two libraries, used as their documentation says and unmodified, complete the authorization code
flow through the login page of the ``deploy/`` chain (nginx ``auth_request``, the echo app,
forwardauth, real PostgreSQL and Redis):

- authlib's OAuth 2.0 client (``OAuth2Session``), a public client: PKCE S256 and a ``nonce``,
  the consent page (the client is not trusted), then ``fetch_token``; joserfc checks the
  ``id_token`` from the JWKS alone, and the ``nonce`` comes back exactly as it was sent.
- pyoidc (``oic``, the OpenID-certified RP library), a confidential client registered with
  ``forwardauth client add`` as the README shows: discovery, its own ``id_token`` checks,
  userinfo. The browser signed in through the header-protected app first, so the flow needs no
  form (single sign-on; a trusted client: no consent). RP-initiated logout returns to the RP with
  its ``state``, makes ``/auth`` refuse the browser's old cookies at once, ends the RP's tokens
  and sends it a back-channel logout token.

The relying party's own web server (``RelyingParty``) is a thread of this test: it records what
the browser and forwardauth send it, as a real RP's callback would see it.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import KeySet
from oic.oic import Client as OicClient
from oic.oic.message import AuthorizationResponse, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD
from playwright.sync_api import BrowserContext, Page, Response, expect

from forwardauth.core.authn import ACR_ONE_FACTOR
from forwardauth.stores import clients, users
from forwardauth.stores.postgres import Database

from .support import PASSWORD, Stack, wait_until
from .test_browser import (
    COOKIE,
    PROTECTED,
    expect_protected_page,
    on_login_page,
    open_protected,
    sign_in,
)
from .test_browser import chromium_browser as chromium_browser
from .test_browser import host_only_cookies as host_only_cookies
from .test_browser import nginx_stack as nginx_stack
from .test_cli import run
from .test_web import audit_events

SCOPE = "openid profile email groups"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Characters a careless client or server would re-encode, trim or fold: the nonce must come back as sent.
AWKWARD = " +/=%&?#~é日本"


@pytest.fixture
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib refuses a plain-HTTP token endpoint unless told it is a test; the stack is http://127.0.0.1."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@dataclass(frozen=True)
class Visit:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]


class RelyingParty:
    """The RP's web server on a free port: records each request and answers a small page."""

    def __init__(self) -> None:
        self.visits: list[Visit] = []
        visits = self.visits

        class Handler(BaseHTTPRequestHandler):
            def _record(self, form: dict[str, list[str]]) -> None:
                parts = urlsplit(self.path)
                visits.append(Visit(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), form))
                body = f"<!doctype html><title>Relying party</title><h1>Relying party: {parts.path}</h1>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._record({})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._record(parse_qs(self.rfile.read(length).decode(), keep_blank_values=True))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.callback = self.base + "/callback"
        self.signed_out = self.base + "/signed-out"
        self.backchannel = self.base + "/backchannel"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait(self, path: str, method: str = "GET", timeout: float = 20) -> Visit:
        """The first request to ``path`` not taken yet (polled), removed from the record."""

        def arrived() -> Visit | None:
            found = next((v for v in self.visits if v.path == path and v.method == method), None)
            if found is not None:
                self.visits.remove(found)
            return found

        return wait_until(arrived, timeout, f"{method} {path} at the relying party")


@pytest.fixture
def rp() -> Iterator[RelyingParty]:
    party = RelyingParty()
    party.thread.start()
    yield party
    party.server.shutdown()
    party.server.server_close()
    party.thread.join(10)


def issuer(stack: Stack) -> str:
    return stack.url + "/forwardauth"


def discovered(stack: Stack) -> dict[str, Any]:
    answer = requests.get(issuer(stack) + "/.well-known/openid-configuration", timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def id_token_claims(token: str, metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """joserfc checks the signature with the provider's JWKS alone (fetched from ``jwks_uri``)."""
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=10).json())
    decoded = jwt.decode(token, keys, algorithms=metadata["id_token_signing_alg_values_supported"])
    return dict(decoded.header), dict(decoded.claims)


def login_answers(page: Page) -> list[str]:
    """The URL of every answer from forwardauth's login or consent page, as they come."""
    seen: list[str] = []

    def record(response: Response) -> None:
        path = urlsplit(response.url).path
        if path.endswith("/login") or path.endswith("/oauth/authorize/consent"):
            seen.append(response.url)

    page.on("response", record)
    return seen


def test_authlib_client_with_pkce_consent_and_nonce(
    context: BrowserContext,
    stack: Stack,
    rp: RelyingParty,
    make_user: Callable[..., users.User],
    database: Database,
    insecure_transport: None,
) -> None:
    """A public client, not trusted: the login form, the consent page, then the tokens; the
    sign-in then holds for the header-protected app, consent is remembered, and a code presented
    again is refused and takes back what it gave."""
    user = make_user(roles=("user", "editor"), email="ada@example.test")
    client_id = f"notes-{secrets.token_hex(4)}"
    database.call(
        clients.create,
        client_id,
        ["authorization_code"],
        SCOPE.split(),
        [],
        True,  # public: no secret, so PKCE is its proof
        redirect_uris=[rp.callback],
    )
    metadata = discovered(stack)
    session = OAuth2Session(
        client_id,
        scope=SCOPE,
        redirect_uri=rp.callback,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(64)
    nonce = secrets.token_urlsafe(16) + AWKWARD
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    assert "code_challenge_method=S256" in url

    page = context.new_page()
    page.goto(url)
    expect(page).to_have_url(on_login_page(stack))
    sign_in(page, user.username, PASSWORD)
    # not trusted: the consent page names the client and what it asks for
    expect(page.get_by_role("heading", name=f"Allow {client_id} to use your account?")).to_be_visible()
    scopes = page.get_by_role("list", name=f"{client_id} asks to:")
    expect(scopes.get_by_role("listitem")).to_have_count(4)
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(re.escape(rp.callback) + r"\?"))
    expect(page.get_by_role("heading", name="Relying party: /callback")).to_be_visible()

    answer = rp.wait("/callback")
    assert answer.query["state"] == [state]
    assert answer.query["iss"] == [metadata["issuer"]]  # RFC 9207
    token = session.fetch_token(
        metadata["token_endpoint"], authorization_response=page.url, state=state, code_verifier=verifier
    )
    assert token["token_type"].lower() == "bearer"
    assert "refresh_token" not in token  # no offline_access asked

    header, claims = id_token_claims(token["id_token"], metadata)
    alg = header["alg"]
    assert header["kid"] and header["alg"] in metadata["id_token_signing_alg_values_supported"]
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": metadata["issuer"]},
        aud={"essential": True, "value": client_id},
        sub={"essential": True, "value": str(user.id)},
        exp={"essential": True},
        iat={"essential": True},
        auth_time={"essential": True},
        sid={"essential": True},
        at_hash={"essential": True, "value": create_half_hash(token["access_token"], alg).decode()},
    )
    registry.validate(claims)  # raises on any claim missing or wrong, and on expiry
    assert claims["nonce"] == nonce  # exactly, byte for byte
    assert (claims["amr"], claims["acr"]) == (["pwd"], ACR_ONE_FACTOR)
    assert claims["iat"] - 60 <= claims["auth_time"] <= claims["iat"]
    assert set(claims) - set(metadata["claims_supported"]) == set()  # discovery lists what it issues
    assert claims["acr"] in metadata["acr_values_supported"]

    info = session.get(metadata["userinfo_endpoint"])
    assert info.status_code == 200, info.text
    assert set(info.json()) <= set(metadata["claims_supported"])
    assert info.json() == {
        "sub": str(user.id),
        "preferred_username": user.username,
        "name": user.username,
        "email": "ada@example.test",
        "email_verified": False,
        "groups": ["user", "editor"],
        "roles": ["user", "editor"],
    }

    # the same sign-in holds for the header-protected apps: no form there
    logins = login_answers(page)
    page.goto(stack.url + PROTECTED)
    expect_protected_page(page, stack, user.username)
    assert logins == []
    events = audit_events(database, user.username)
    assert events[0] == "login_success" and {"consent_granted", "authorize"} <= set(events)

    # a second run of the flow: consent was remembered, the code is new and works once
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce + "2"
    )
    page.goto(url)
    expect(page).to_have_url(re.compile(re.escape(rp.callback) + r"\?"))
    assert logins == []
    second = rp.wait("/callback")
    assert second.query["state"] == [state] and second.query["code"] != answer.query["code"]
    again = requests.post(
        metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": answer.query["code"][0],  # the first code: spent
            "redirect_uri": rp.callback,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert session.get(metadata["userinfo_endpoint"]).status_code == 401  # what the code gave is revoked


def add_client_with_the_cli(env: dict[str, str], rp: RelyingParty) -> tuple[str, str]:
    """``forwardauth client add`` as the README shows it; the client id and its secret."""
    client_id = f"wiki-{secrets.token_hex(4)}"
    added = run(
        env,
        "client",
        "add",
        client_id,
        "--redirect-uri",
        rp.callback,
        "--post-logout-redirect-uri",
        rp.signed_out,
        "--backchannel-logout-uri",
        rp.backchannel,
        "--trusted",
        *[arg for scope in SCOPE.split() for arg in ("--scope", scope)],
    )
    assert added.returncode == 0, added.stderr
    secret = added.stdout.split("client secret (shown once): ", 1)[1].strip()
    return client_id, secret


def pyoidc_client(stack: Stack, client_id: str, secret: str, rp: RelyingParty) -> OicClient:
    """pyoidc configured from discovery; the client's registration given to it statically."""
    client = OicClient(client_authn_method=CLIENT_AUTHN_METHOD)
    client.provider_config(issuer(stack))  # fetches the document and the JWKS, checks the issuer
    client.store_registration_info(
        RegistrationResponse(
            client_id=client_id,
            client_secret=secret,
            redirect_uris=[rp.callback],
            post_logout_redirect_uris=[rp.signed_out],
            token_endpoint_auth_method="client_secret_basic",
        )
    )
    client.redirect_uris = [rp.callback]
    return client


def authorization_url(client: OicClient, rp: RelyingParty, state: str, nonce: str, **extra: str) -> tuple[str, str]:
    """pyoidc's authorization request with PKCE S256; the URL and the code verifier."""
    challenge, verifier = client.add_code_challenge()
    request = client.construct_AuthorizationRequest(
        request_args={
            "client_id": client.client_id,
            "response_type": "code",
            "scope": SCOPE.split(),
            "redirect_uri": rp.callback,
            "state": state,
            "nonce": nonce,
            **challenge,
            **extra,
        }
    )
    return request.request(client.authorization_endpoint), verifier


def test_pyoidc_single_sign_on_and_rp_initiated_logout(
    context: BrowserContext,
    stack: Stack,
    rp: RelyingParty,
    env: dict[str, str],
    make_user: Callable[..., users.User],
    database: Database,
) -> None:
    """Signed in on the header-protected app, then a trusted client's flow without the form; its
    RP-initiated logout ends everything the browser held, at once, and the RP hears of it."""
    user = make_user()
    client_id, secret = add_client_with_the_cli(env, rp)
    client = pyoidc_client(stack, client_id, secret, rp)
    assert client.end_session_endpoint == issuer(stack) + "/oauth/logout"

    # signed in through the header-protected app first
    page = context.new_page()
    open_protected(page, stack)
    sign_in(page, user.username, PASSWORD)
    expect_protected_page(page, stack, user.username)
    browser_sid = jwt.decode(
        next(c["value"] for c in context.cookies(stack.url) if c["name"] == COOKIE),
        KeySet.import_key_set(requests.get(client.provider_info["jwks_uri"], timeout=10).json()),
    ).claims["sid"]

    # the OIDC flow then needs no form and no consent (trusted)
    logins = login_answers(page)
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url, verifier = authorization_url(client, rp, state, nonce)
    page.goto(url)
    expect(page).to_have_url(re.compile(re.escape(rp.callback) + r"\?"))
    assert logins == []
    callback = rp.wait("/callback")
    assert callback.query["iss"] == [issuer(stack)]
    response = client.parse_response(AuthorizationResponse, info=urlsplit(page.url).query, sformat="urlencoded")
    assert response["state"] == state

    tokens = client.do_access_token_request(
        state=state,
        request_args={"code": response["code"], "code_verifier": verifier},
        authn_method="client_secret_basic",
    )
    id_token = tokens["id_token"]  # checked by pyoidc: signature (JWKS), iss, aud, exp, nonce
    assert id_token["nonce"] == nonce and id_token["sub"] == str(user.id)
    assert id_token["sid"] == browser_sid  # one session for both kinds of app
    info = client.do_user_info_request(state=state)
    assert (info["sub"], info["preferred_username"]) == (str(user.id), user.username)

    # RP-initiated logout: pyoidc's end-session request (id_token_hint, registered URI, state)
    before = context.cookies()
    logout_state = secrets.token_urlsafe(16)
    logout = client.construct_EndSessionRequest(
        state=state, request_args={"post_logout_redirect_uri": rp.signed_out, "state": logout_state}
    )
    assert logout["id_token_hint"]
    page.goto(logout.request(client.end_session_endpoint))
    expect(page).to_have_url(re.compile(re.escape(rp.signed_out) + r"\?"))
    assert rp.wait("/signed-out").query["state"] == [logout_state]

    # at once: the cookies the browser held a moment ago open nothing any more
    context.add_cookies(before)  # type: ignore[arg-type]
    page.goto(stack.url + PROTECTED)
    expect(page).to_have_url(on_login_page(stack))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # nor does the session answer the RP silently
    context.add_cookies(before)  # type: ignore[arg-type]
    url, _ = authorization_url(client, rp, "silent", secrets.token_urlsafe(16), prompt="none")
    page.goto(url)
    silent = rp.wait("/callback")
    assert (silent.query["error"], silent.query["state"]) == (["login_required"], ["silent"])
    # the RP's own session, opened from the browser's, ended with it
    userinfo = requests.get(
        client.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert userinfo.status_code == 401

    # and the RP was told on the back channel (OpenID Connect Back-Channel Logout 1.0)
    notice = rp.wait("/backchannel", "POST", timeout=30)
    header, claims = id_token_claims(notice.form["logout_token"][0], discovered(stack))
    assert header["typ"] == "logout+jwt"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer(stack)},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    assert claims["sid"] == browser_sid and claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims
    assert "logout" in audit_events(database, user.username)
