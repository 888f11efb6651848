"""Issue 12.5 through the shipped nginx, Traefik and Caddy: a client's own token reaches the app
as that client (X-Auth-Client), never as a user, and no client can send X-Auth-Client itself."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from . import http
from .support import MakeClient, Stack
from .test_proxies import PROXIES, MakeUser, bearer, bearer_token, expect, identity, upstream_saw

SPOOFED_CLIENT = {"X-Auth-Client": "robot", "X-Auth-Client-Roles": "admin"}


def client_token(stack: Stack, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = http.request(
        "POST",
        stack.service.base + "/oauth/token",
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        b"grant_type=client_credentials",
    )
    return str(expect(stack, response, 200, "client_credentials grant").json()["access_token"])


@pytest.mark.parametrize("kind", PROXIES)
def test_the_app_tells_a_client_from_a_user_and_client_headers_cannot_be_spoofed(
    proxy_stack: Callable[..., Stack], make_user: MakeUser, make_client: MakeClient, kind: str
) -> None:
    stack = proxy_stack(kind)
    app, secret = make_client(grants=("client_credentials",), roles=("service",))
    assert secret is not None
    spoofed_user = {
        "X-Auth-User": app.id,
        "X-Auth-Roles": "admin",
        "X-Auth-Email": "spoof@evil.test",
        "X-Auth-AMR": "mfa",
    }
    seen = upstream_saw(
        stack,
        http.get(stack.url + "/p", {**bearer(client_token(stack, app.id, secret)), **SPOOFED_CLIENT, **spoofed_user}),
    )
    assert identity(seen) == {  # no X-Auth-AMR: nobody signed in
        "x-auth-client": app.id,
        "x-auth-client-roles": "service",
        "x-auth-subject": f"client:{app.id}",
    }

    user = make_user(email=None)
    seen = upstream_saw(stack, http.get(stack.url + "/p", {**bearer(bearer_token(stack, user)), **SPOOFED_CLIENT}))
    assert identity(seen) == {
        "x-auth-user": user.username,
        "x-auth-roles": "user",
        "x-auth-subject": user.id,
        "x-auth-amr": "pwd",
    }
