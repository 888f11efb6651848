"""A stock OAuth2 client library (authlib over httpx) against a live ``forwardauth serve``."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from forwardauth.stores import users

from .support import PASSWORD, Service


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def add_client(env: dict[str, str], client_id: str, *options: str) -> str:
    output = cli(env, "client", "add", client_id, *options)
    match = re.search(r"client secret \(shown once\): (\S+)", output)
    assert match, output
    return match.group(1)


def auth_status(base: str, token: str) -> int:
    return httpx.get(base + "/auth", headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.fixture
def live(service: Callable[..., Service]) -> Service:
    return service(workers=2)


def test_password_refresh_revoke_introspect(
    live: Service, env: dict[str, str], make_user: Callable[..., users.User]
) -> None:
    user = make_user()
    client_id = f"web-{user.username}"
    secret = add_client(env, client_id, "--grant", "password", "--grant", "refresh_token", "--scope", "read")
    token_url = live.base + "/oauth/token"
    with OAuth2Client(client_id, secret, scope="read") as oauth:
        first = oauth.fetch_token(token_url, username=user.username, password=PASSWORD, grant_type="password")
        assert first["token_type"] == "Bearer" and first["scope"] == "read"
        assert auth_status(live.base, first["access_token"]) == 200

        second = oauth.refresh_token(token_url, refresh_token=first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert auth_status(live.base, second["access_token"]) == 200

        info = oauth.introspect_token(live.base + "/oauth/introspect", token=second["access_token"]).json()
        assert info["active"] is True and info["username"] == user.username and info["client_id"] == client_id

        # Reusing the rotated refresh token from elsewhere is theft: the whole family dies.
        with pytest.raises(OAuthError) as reused:
            oauth.refresh_token(
                token_url,
                refresh_token=first["refresh_token"],
                headers={
                    "Accept": "application/json",
                    "X-Forwarded-For": "203.0.113.66",
                    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
                },
            )
        assert reused.value.error == "invalid_grant"
        assert auth_status(live.base, second["access_token"]) == 401

        third = oauth.fetch_token(token_url, username=user.username, password=PASSWORD, grant_type="password")
        revoked = oauth.revoke_token(
            live.base + "/oauth/revoke", token=third["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
        assert auth_status(live.base, third["access_token"]) == 401
        info = oauth.introspect_token(live.base + "/oauth/introspect", token=third["refresh_token"]).json()
        assert info == {"active": False}


def test_client_credentials_and_disabled_client(live: Service, env: dict[str, str]) -> None:
    client_id = "robot-" + secrets.token_hex(4)
    secret = add_client(env, client_id, "--grant", "client_credentials", "--role", "service")
    token_url = live.base + "/oauth/token"
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_post") as oauth:
        tokens = oauth.fetch_token(token_url, grant_type="client_credentials")
        assert "refresh_token" not in tokens
        response = httpx.get(live.base + "/auth", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert response.status_code == 200 and response.headers["X-Auth-Client"] == client_id
        assert "X-Auth-User" not in response.headers  # a client is never taken for a user
    assert "disabled" in cli(env, "client", "disable", client_id)
    assert auth_status(live.base, tokens["access_token"]) == 401  # its tokens are revoked at once
    assert f"{client_id}\tconfidential\tdisabled" in cli(env, "client", "list")
    with OAuth2Client(client_id, secret) as oauth, pytest.raises(OAuthError) as refused:
        oauth.fetch_token(token_url, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"


def test_user_revoke_logs_out_everywhere(
    live: Service, env: dict[str, str], make_user: Callable[..., users.User]
) -> None:
    user = make_user()
    sessions = [
        httpx.post(live.base + "/login", json={"username": user.username, "password": PASSWORD}).json()
        for _ in range(3)
    ]
    assert all(auth_status(live.base, s["access_token"]) == 200 for s in sessions)
    assert "revoked 3 session(s)" in cli(env, "user", "revoke", user.username)
    assert all(auth_status(live.base, s["access_token"]) == 401 for s in sessions)
    for s in sessions:
        assert httpx.post(live.base + "/refresh", json={"refresh_token": s["refresh_token"]}).status_code == 401


def test_metadata_is_usable_by_clients(live: Service) -> None:
    meta = httpx.get(live.base + "/.well-known/oauth-authorization-server").json()
    jwks = httpx.get(live.base + "/.well-known/jwks.json").json()
    assert meta["jwks_uri"].endswith("/.well-known/jwks.json") and jwks["keys"]
