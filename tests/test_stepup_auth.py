"""/auth under step-up rules, in process (real Redis for the live-token check): a token whose
sign-in lacks the second factor or recency a rule asks for gets 401 with the RFC 9470 challenge, a
browser is sent to the login page as when signed out, and an allowed user's answer says how they
signed in (X-Auth-AMR). Tokens are minted with the service's own TokenService and registered live."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from forwardauth.core.authn import Authentication
from forwardauth.core.policy import StepUp
from forwardauth.core.tokens import Identity
from forwardauth.http.services import Services

from .test_cli import run
from .test_web import BROWSER, services_of

Client = Any
POLICY = """
default: authenticated
rules:
  - path: /mfa
    policy: authenticated
    second_factor: required
  - path: /recent
    policy: authenticated
    max_auth_age: 15m
  - path: /staff
    roles: [staff]
    second_factor: required
"""
ALICE = Identity(subject="00000000-0000-4000-8000-00000000a11c", username="alice", roles=("staff",))
MALLORY = Identity(subject="00000000-0000-4000-8000-0000000000aa", username="mallory", roles=("user",))
ROBOT = Identity.of_client("robot", ("service",))
MFA_CHALLENGE = StepUp(True, None).challenge()


@pytest.fixture
def env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The conftest environment with the step-up rules above (the ``client`` fixture reads it)."""
    (tmp_path / "stepup.yml").write_text(POLICY)
    return {**env, "FORWARDAUTH_POLICY_FILE": str(tmp_path / "stepup.yml")}


def signed_in(methods: tuple[str, ...], ago: int = 60) -> Authentication:
    return Authentication.of(methods, int(time.time()) - ago)


async def live_token(services: Services, identity: Identity, auth: Authentication | None) -> str:
    """A token as a sign-in issues it: minted, then registered live in Redis."""
    sid = secrets.token_urlsafe(16)
    client_id = identity.client
    minted = services.tokens.mint(identity, sid, client_id=client_id, auth=auth)
    await services.revocations.register(sid, minted.claims.jti, services.settings.access_ttl)
    return minted.token


def traefik(uri: str, token: str | None = None, browser: bool = False) -> dict[str, str]:
    """Traefik's description of a GET for ``uri`` on app.example.test (the test client is trusted)."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.test",
        "X-Forwarded-Uri": uri,
        "X-Forwarded-Method": "GET",
        "Accept": BROWSER["Accept"] if browser else "application/json",
    }
    return {**headers, "Authorization": f"Bearer {token}"} if token else headers


async def test_an_api_client_gets_the_rfc_9470_challenge(client: Client) -> None:
    services = services_of(client)
    before = services.metrics.decisions.step_up
    token = await live_token(services, ALICE, signed_in(("pwd",)))
    response = await client.get("/auth", headers=traefik("/mfa/report", token), allow_redirects=False)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    assert 'error="insufficient_user_authentication"' in MFA_CHALLENGE
    assert response.headers["Cache-Control"] == "no-store"
    assert "Location" not in response.headers and "X-Auth-User" not in response.headers
    assert services.metrics.decisions.step_up == before + 1
    metrics = await (await client.get("/metrics")).text()
    assert 'forwardauth_auth_decisions_total{decision="deny",reason="step_up"} 1.0' in metrics


async def test_a_token_that_does_not_say_how_steps_up(client: Client) -> None:
    """A token minted without amr (before second factors existed) meets no sign-in requirement."""
    token = await live_token(services_of(client), ALICE, None)
    response = await client.get("/auth", headers=traefik("/mfa", token))
    assert response.status == 401 and response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    plain = await client.get("/auth", headers=traefik("/elsewhere", token))
    assert plain.status == 200 and plain.headers["X-Auth-User"] == "alice" and "X-Auth-AMR" not in plain.headers


@pytest.mark.parametrize(
    "headers,status",
    [
        (traefik("/mfa?x=1", browser=True), 302),  # Traefik / Caddy: our 302 goes to the browser as is
        ({**BROWSER, "X-Original-URL": "https://app.example.test/mfa?x=1", "X-Original-Method": "GET"}, 401),
    ],
)
async def test_a_browser_is_sent_to_the_login_page(client: Client, headers: dict[str, str], status: int) -> None:
    token = await live_token(services_of(client), ALICE, signed_in(("pwd",)))
    response = await client.get("/auth", headers={**headers, "Authorization": f"Bearer {token}"}, allow_redirects=False)
    assert response.status == status
    assert (
        response.headers["Location"] == "http://auth.example.test/login?rd=https%3A%2F%2Fapp.example.test%2Fmfa%3Fx%3D1"
    )
    assert response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    assert response.headers["Cache-Control"] == "no-store"


async def test_envoy_gets_the_challenge_and_the_login_location(client: Client) -> None:
    token = await live_token(services_of(client), ALICE, signed_in(("pwd",)))
    response = await client.get(
        "/auth/envoy/mfa",
        headers={**BROWSER, "Host": "app.example.test", "Authorization": f"Bearer {token}"},
        allow_redirects=False,
    )
    assert response.status == 401 and response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    assert response.headers["Location"] == "http://auth.example.test/login?rd=http%3A%2F%2Fapp.example.test%2Fmfa"


async def test_a_second_factor_passes_with_x_auth_amr(client: Client) -> None:
    services = services_of(client)
    for methods, amr in ((("pwd", "otp"), "otp,pwd,mfa"), (("swk", "user"), "swk,user,mfa")):
        token = await live_token(services, ALICE, signed_in(methods))
        response = await client.get("/auth", headers=traefik("/mfa", token))
        assert response.status == 200, response.headers.get("WWW-Authenticate")
        assert response.headers["X-Auth-AMR"] == amr and response.headers["X-Auth-User"] == "alice"
    one_factor = await live_token(services, ALICE, signed_in(("pwd",)))
    response = await client.get("/auth", headers=traefik("/elsewhere", one_factor))
    assert response.status == 200 and response.headers["X-Auth-AMR"] == "pwd"


async def test_a_case_folded_reading_carries_the_requirement(client: Client) -> None:
    """``/MFA`` as sent is no rule's; a backend that folds case serves /mfa: the requirement holds."""
    token = await live_token(services_of(client), ALICE, signed_in(("pwd",)))
    response = await client.get("/auth", headers=traefik("/MFA/x", token))
    assert response.status == 401 and response.headers["WWW-Authenticate"] == MFA_CHALLENGE


async def test_a_sign_in_too_old_steps_up_with_max_age(client: Client) -> None:
    services = services_of(client)
    old = await live_token(services, ALICE, signed_in(("pwd", "otp"), ago=3600))
    response = await client.get("/auth", headers=traefik("/recent", old))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == StepUp(False, 900).challenge()
    assert response.headers["WWW-Authenticate"].endswith(", max_age=900")
    assert (await client.get("/auth", headers=traefik("/mfa", old))).status == 200  # no max age there
    fresh = await live_token(services, ALICE, signed_in(("pwd",), ago=30))
    assert (await client.get("/auth", headers=traefik("/recent", fresh))).status == 200


async def test_roles_are_checked_before_the_sign_in(client: Client) -> None:
    """Someone the rule does not admit gets 403, not a step-up that could never help."""
    services = services_of(client)
    outsider = await live_token(services, MALLORY, signed_in(("pwd", "otp")))
    assert (await client.get("/auth", headers=traefik("/staff", outsider))).status == 403
    staff = await live_token(services, ALICE, signed_in(("pwd",)))
    response = await client.get("/auth", headers=traefik("/staff", staff))
    assert response.status == 401 and response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    staff_mfa = await live_token(services, ALICE, signed_in(("pwd", "otp")))
    assert (await client.get("/auth", headers=traefik("/staff", staff_mfa))).status == 200


async def test_a_clients_own_token_is_denied_not_stepped_up(client: Client) -> None:
    services = services_of(client)
    before = services.metrics.decisions.step_up
    token = await live_token(services, ROBOT, None)
    response = await client.get("/auth", headers=traefik("/mfa", token))
    assert response.status == 403 and "WWW-Authenticate" not in response.headers
    assert services.metrics.decisions.step_up == before
    plain = await client.get("/auth", headers=traefik("/elsewhere", token))
    assert plain.status == 200 and plain.headers["X-Auth-Client"] == "robot" and "X-Auth-AMR" not in plain.headers


def test_policy_explain_shows_the_requirement_and_the_outcome(env: dict[str, str], tmp_path: Path) -> None:
    """``forwardauth policy explain``: the rule's requirement, and with --amr / --auth-age the outcome."""

    def explain(*args: str) -> list[str]:
        result = run(env, "policy", "explain", "--host", "app.example.test", "--path", "/staff/x", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert "sign-in required: a second factor" in explain("--roles", "staff")
    assert explain("--roles", "staff", "--amr", "pwd")[-1].startswith("decision: step up: no second factor (amr pwd)")
    assert explain("--roles", "staff", "--amr", "pwd,otp", "--auth-age", "1h")[-1] == "decision: allow (200)"
    assert explain("--client", "robot")[-1] == "decision: deny (403)"
    wrong = run(env, "policy", "explain", "--host", "h", "--path", "/", "--client", "robot", "--amr", "pwd")
    assert wrong.returncode != 0 and "--amr is for a signed-in user" in wrong.stderr
