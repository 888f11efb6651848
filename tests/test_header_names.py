"""Configurable identity header names (issue 18, "Header conventions"): FORWARDAUTH_HEADERS_*, the
Authelia preset, token claims as headers; in /auth and through the shipped nginx configuration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from forwardauth import config
from forwardauth.configparse import HeaderNames
from forwardauth.core.authn import Authentication
from forwardauth.core.principals import identity_headers
from forwardauth.core.tokens import Identity
from forwardauth.dev import demo

from . import http
from .support import Stack
from .test_proxies import MakeUser, bearer, bearer_token, upstream_saw
from .test_web import login

AUTHELIA = {"FORWARDAUTH_HEADERS_PRESET": "authelia"}
ALICE = Identity(subject="u1", username="alice", roles=("user", "admin"), email="alice@example.test")
ROBOT = Identity.of_client("robot", ("service",))


# --- parsing ---------------------------------------------------------------------------------------


def test_defaults_are_the_x_auth_names_and_the_preset_gives_authelias() -> None:
    assert config.load({}).header_names == HeaderNames()
    names = config.load(AUTHELIA).header_names
    assert (names.user, names.roles, names.email, names.name) == (
        "Remote-User",
        "Remote-Groups",
        "Remote-Email",
        "Remote-Name",
    )
    assert names.subject == "X-Auth-Subject" and names.amr == "X-Auth-AMR"


def test_each_variable_overrides_the_preset() -> None:
    names = config.load(
        {
            **AUTHELIA,
            "FORWARDAUTH_HEADERS_ROLES": "X-Groups",
            "FORWARDAUTH_HEADERS_NAME": "none",
            "FORWARDAUTH_HEADERS_CLIENT": "X-Service",
            "FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session, scope=X-Scope",
        }
    ).header_names
    assert (names.user, names.roles, names.name, names.client) == ("Remote-User", "X-Groups", "", "X-Service")
    assert names.claims == (("sid", "X-Session"), ("scope", "X-Scope"))
    assert "Remote-Name" not in names.all and {"X-Session", "X-Scope", "X-Groups"} <= set(names.all)


@pytest.mark.parametrize(
    ("environ", "variable", "words"),
    [
        ({"FORWARDAUTH_HEADERS_USER": "Remote User"}, "FORWARDAUTH_HEADERS_USER", "not a header name"),
        ({"FORWARDAUTH_HEADERS_USER": "Remote_User"}, "FORWARDAUTH_HEADERS_USER", "not a header name"),
        ({"FORWARDAUTH_HEADERS_EMAIL": "Remote.Email"}, "FORWARDAUTH_HEADERS_EMAIL", "not a header name"),
        ({"FORWARDAUTH_HEADERS_ROLES": "Cookie"}, "FORWARDAUTH_HEADERS_ROLES", "already means"),
        ({"FORWARDAUTH_HEADERS_AMR": "X-Forwarded-User"}, "FORWARDAUTH_HEADERS_AMR", "already means"),
        ({"FORWARDAUTH_HEADERS_ROLES": "x-auth-user"}, "FORWARDAUTH_HEADERS_ROLES", "already the header of user"),
        ({**AUTHELIA, "FORWARDAUTH_HEADERS_NAME": "remote-user"}, "FORWARDAUTH_HEADERS_NAME", "header of user"),
        ({"FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Auth-User"}, "FORWARDAUTH_HEADERS_CLAIMS", "header of user"),
        ({"FORWARDAUTH_HEADERS_CLAIMS": "sid=X-A,scope=x-a"}, "FORWARDAUTH_HEADERS_CLAIMS", "the claim sid"),
        ({"FORWARDAUTH_HEADERS_CLAIMS": "sid=X-A,sid=X-B"}, "FORWARDAUTH_HEADERS_CLAIMS", "named twice"),
        ({"FORWARDAUTH_HEADERS_CLAIMS": "sid"}, "FORWARDAUTH_HEADERS_CLAIMS", "claim=Header"),
        ({"FORWARDAUTH_HEADERS_CLAIMS": "s i d=X-A"}, "FORWARDAUTH_HEADERS_CLAIMS", "not a claim name"),
        ({"FORWARDAUTH_HEADERS_PRESET": "oauth3"}, "FORWARDAUTH_HEADERS_PRESET", "not a preset"),
    ],
)
def test_bad_header_settings_name_their_variable(environ: dict[str, str], variable: str, words: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ)
    assert str(caught.value).startswith(variable + ":"), caught.value
    assert words in str(caught.value)


# --- identity_headers ------------------------------------------------------------------------------


def test_identity_headers_use_the_configured_names() -> None:
    names = config.load(AUTHELIA).header_names
    auth = Authentication.of(["pwd"], 1000)
    assert identity_headers(ALICE, auth, names) == {
        "Remote-User": "alice",
        "Remote-Groups": "user,admin",
        "Remote-Email": "alice@example.test",
        "Remote-Name": "alice",  # no display name of its own: the username
        "X-Auth-Subject": "u1",
        "X-Auth-AMR": "pwd",
    }
    # A client is never a user, whatever the names: no Remote-User, no Remote-Name.
    assert identity_headers(ROBOT, None, names) == {
        "X-Auth-Client": "robot",
        "X-Auth-Client-Roles": "service",
        "X-Auth-Subject": "client:robot",
    }
    assert identity_headers(ALICE) == identity_headers(ALICE, None, HeaderNames())  # the default names


def test_claims_become_headers_when_strings_or_lists_of_strings() -> None:
    names = HeaderNames(
        claims=(("sid", "X-Session"), ("aud", "X-Audience"), ("exp", "X-Exp"), ("odd", "X-Odd"), ("email", "X-Mail"))
    )
    payload: Mapping[str, Any] = {"sid": "s1", "aud": ["a", "b"], "exp": 5, "odd": "a\r\nX-Auth-User: root"}
    headers = identity_headers(ALICE, None, names, payload)
    assert headers["X-Session"] == "s1" and headers["X-Audience"] == "a,b"
    assert "X-Exp" not in headers and "X-Odd" not in headers  # a number; a value no header can carry
    assert "X-Mail" not in headers  # the token has no such claim
    client = identity_headers(ROBOT, None, names, {"sid": "s2", "email": "x@evil.test"})
    assert client["X-Session"] == "s2" and "X-Mail" not in client  # a user's claim never read off a client's


# --- the shipped nginx configuration follows the names ------------------------------------------


def test_the_nginx_snippet_renders_the_configured_names() -> None:
    template = (demo.DEPLOY / "nginx" / "forwardauth-protect.conf").read_text()
    default = demo.render(template, demo.header_values(HeaderNames()))
    assert "proxy_set_header X-Auth-User $forwardauth_user;" in default
    assert "$upstream_http_x_auth_client_roles;" in default and "$forwardauth_h0" not in default
    names = config.load({**AUTHELIA, "FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session"}).header_names
    rendered = demo.render(template, demo.header_values(names))
    assert "auth_request_set $forwardauth_user $upstream_http_remote_user;" in rendered
    assert "proxy_set_header Remote-Groups $forwardauth_roles;" in rendered
    assert "proxy_set_header Remote-Name $forwardauth_h0;" in rendered
    assert "auth_request_set $forwardauth_h1 $upstream_http_x_session;" in rendered
    assert "X-Auth-User" not in rendered and "${" not in rendered


# --- /auth in process ------------------------------------------------------------------------------


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, **AUTHELIA, "FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session,scope=X-Scope"}


async def test_auth_answers_with_the_authelia_names(client: Any, make_user: MakeUser) -> None:
    user = make_user(roles=("user", "staff"))
    token = (await login(client, user))["access_token"]
    response = await client.get("/auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert response.headers["Remote-User"] == user.username
    assert response.headers["Remote-Groups"] == "user,staff"
    assert response.headers["Remote-Email"] == user.email
    assert response.headers["Remote-Name"] == user.username
    assert response.headers["X-Auth-Subject"] == str(user.id)
    assert response.headers["X-Session"]  # the token's sid
    assert "X-Auth-User" not in response.headers and "X-Auth-Roles" not in response.headers


# --- through nginx ---------------------------------------------------------------------------------

SPOOFED = {"Remote-User": "root", "Remote.User": "root", "remote_user": "root", "Remote-Groups": "admin"}


def test_nginx_hands_the_app_remote_user_and_never_the_clients(
    proxy_stack: Callable[..., Stack], make_user: MakeUser
) -> None:
    stack = proxy_stack("nginx", AUTHELIA)
    user = make_user(email=None)
    seen = upstream_saw(stack, http.get(stack.url + "/p", {**bearer(bearer_token(stack, user)), **SPOOFED}))
    readings = {k: v for k, v in seen["headers"].items() if k.replace("_", "-").replace(".", "-").startswith("remote-")}
    assert readings == {"remote-user": user.username, "remote-groups": "user", "remote-name": user.username}
    assert "x-auth-user" not in seen["headers"]

    public = http.get(stack.url + "/p", {"Accept": "application/json", **SPOOFED})
    assert public.status == 401  # no token: the spoofed names get nobody in


CLAIMED = {**AUTHELIA, "FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session"}
SPOOFED_CLAIM = {"X-Session": "forged", "x_session": "forged", "X.Session": "forged"}


@pytest.mark.parametrize("kind", ["traefik", "caddy"])
def test_traefik_and_caddy_hand_the_app_remote_user_and_never_the_clients(
    kind: str, proxy_stack: Callable[..., Stack], make_user: MakeUser
) -> None:
    stack = proxy_stack(kind, CLAIMED)
    user = make_user(email=None)
    sent = {**bearer(bearer_token(stack, user)), **SPOOFED, **SPOOFED_CLAIM}
    seen = upstream_saw(stack, http.get(stack.url + "/p", sent))
    readings = {k: v for k, v in seen["headers"].items() if k.replace("_", "-").replace(".", "-").startswith("remote-")}
    assert readings == {"remote-user": user.username, "remote-groups": "user", "remote-name": user.username}
    sessions = {k: v for k, v in seen["headers"].items() if k.replace("_", "-").replace(".", "-") == "x-session"}
    assert list(sessions) == ["x-session"] and sessions["x-session"] not in ("", "forged")  # the token's sid
    assert "x-auth-user" not in seen["headers"] and seen["headers"]["x-auth-subject"] == str(user.id)

    public = http.get(stack.url + "/p", {"Accept": "application/json", **SPOOFED})
    assert public.status == 401  # no token: the spoofed names get nobody in


def test_traefik_and_caddy_files_render_the_default_names_when_unset() -> None:
    default = demo.header_values(HeaderNames())
    traefik = demo.render(
        (demo.DEPLOY / "traefik" / "dynamic.yml").read_text(), {**default, "FORWARDAUTH_ADDR": "a", "APP_ADDR": "b"}
    )
    assert "- X-Auth-Client-Roles\n" in traefik and '"(?i)^x[^a-z0-9]auth[^a-z0-9]"' in traefik
    caddy = demo.render(
        (demo.DEPLOY / "caddy" / "Caddyfile").read_text(),
        {**default, "FORWARDAUTH_ADDR": "a", "APP_ADDR": "b", "LISTEN_HOST": "h", "LISTEN_PORT": "1"},
    )
    assert (
        "copy_headers X-Auth-User X-Auth-Roles X-Auth-Email X-Auth-Subject X-Auth-Client X-Auth-Client-Roles "
        "X-Auth-AMR\n" in caddy
    )
    values = demo.header_values(config.load(CLAIMED).header_names)
    assert "|^remote[^a-z0-9]user$" in values["HEADER_STRIP_TRAEFIK"]
    assert (
        "request_header -Remote.User" in values["HEADER_STRIP_CADDY"]
        and "subject" not in values["HEADER_STRIP_CADDY"].lower()
    )
    assert demo.spellings("Remote-User") == ["Remote-User", "Remote_User", "Remote.User"]
    assert len(demo.spellings("A-B-C")) == 9


def test_renamed_headers_are_warned_of_at_start_since_shipped_configs_strip_only_x_auth() -> None:
    """The Kubernetes manifests strip client copies of X-Auth-* only: renaming is said at start (the
    nginx, Traefik, Caddy and Envoy files follow the names when rendered with them)."""
    from forwardauth.http.browser import startup_warnings

    assert not startup_warnings(config.load({}))
    [warning] = startup_warnings(config.load({"FORWARDAUTH_HEADERS_PRESET": "authelia"}))
    assert "Remote-User" in warning and "strip" in warning and "FORWARDAUTH_HEADERS_" in warning
    assert "Kubernetes manifests (deploy/kubernetes) pass on and strip only X-Auth-*" in warning
    assert "nginx, Traefik, Caddy and Envoy files do" in warning and warning.count("strip only") == 1
    assert "auth-response-headers" in warning and "forwardAuth middleware" in warning
    [claims] = startup_warnings(config.load({"FORWARDAUTH_HEADERS_CLAIMS": "sid=X-Session"}))
    assert "X-Session" in claims
