"""Step-up rules, pure: ``second_factor`` / ``max_auth_age`` parsed, judged strictly over every
reading, decided from a token's ``amr`` / ``auth_time``; the tokens that carry them, strictly
read; the RFC 9470 challenge; ``policy explain``'s account of it. No servers, no stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from forwardauth.constants import HEADER_AMR
from forwardauth.core.authn import ACR_MULTI_FACTOR, ACR_ONE_FACTOR, Authentication
from forwardauth.core.explain import explain
from forwardauth.core.policy import Effect, Object, Policy, PolicyError, StepUp, Subject, decide, requirements_of
from forwardauth.core.policyfile import from_data, load
from forwardauth.core.principals import identity_headers, subject_of
from forwardauth.core.tokens import Identity, TokenError, TokenService

from .test_tokens import AUDIENCE, ISSUER, ring_for, sign

NOW = 1_700_000_000.0
PWD = Authentication.of(["pwd"], int(NOW) - 60)
MFA = Authentication.of(["pwd", "otp"], int(NOW) - 60)
OLD_MFA = Authentication.of(["pwd", "otp"], int(NOW) - 3600)
ALICE = Identity(subject="u-1", username="alice", roles=("staff",))
ROBOT = Identity.of_client("robot", ("service",))

POLICY = from_data(
    {
        "default": "authenticated",
        "rules": [
            {"path": "/public", "policy": "bypass"},
            {"path": "/closed", "policy": "deny"},
            {"path": "/mfa", "policy": "authenticated", "second_factor": "required"},
            {"path": "/recent", "policy": "authenticated", "max_auth_age": "15m"},
            {"path": "/both", "policy": "authenticated", "second_factor": "required", "max_auth_age": 600},
            {"path": "/staff", "roles": ["staff"], "second_factor": "required"},
            {"path": "/optional", "policy": "authenticated", "second_factor": "optional"},
        ],
    },
    "stepup.yml",
)


def judge(policy: Policy, uri: str, method: str = "GET", ip: str | None = "192.0.2.1") -> Any:
    return policy.judge(Object.of("https", "app.example.test", uri, method), ip)


def user(auth: Authentication | None, roles: tuple[str, ...] = ("staff",)) -> Subject:
    return Subject("alice", roles, auth=auth)


# --- the policy file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,seconds",
    [(900, 900), ("900", 900), ("900s", 900), ("15m", 900), ("1h", 3600), ("2d", 172800), (" 15M ", 900)],
)
def test_max_auth_age_takes_seconds_or_a_duration(value: object, seconds: int) -> None:
    rule = from_data({"rules": [{"policy": "authenticated", "max_auth_age": value}]}, "f").rules[0]
    assert rule.max_auth_age == seconds and not rule.second_factor


@pytest.mark.parametrize("value,required", [("required", True), ("Required", True), ("optional", False)])
def test_second_factor_required_or_optional(value: str, required: bool) -> None:
    rule = from_data({"rules": [{"roles": ["x"], "second_factor": value}]}, "f").rules[0]
    assert rule.second_factor is required and rule.max_auth_age is None and rule.effect is Effect.RESTRICTED


@pytest.mark.parametrize(
    "rule,message",
    [
        ({"path": "/p", "policy": "bypass", "second_factor": "required"}, "second_factor: only for authenticated"),
        ({"path": "/p", "policy": "deny", "max_auth_age": "15m"}, "max_auth_age: only for authenticated"),
        (
            {"policy": "bypass", "max_auth_age": 60, "second_factor": "optional"},
            "max_auth_age and second_factor: only",
        ),
        ({"policy": "authenticated", "second_factor": True}, "second_factor must be required or optional"),
        ({"policy": "authenticated", "second_factor": "yes"}, "second_factor must be required or optional"),
        ({"policy": "authenticated", "second_factor": ["required"]}, "second_factor must be"),
        ({"policy": "authenticated", "max_auth_age": 0}, "max_auth_age 0 must be a positive duration"),
        ({"policy": "authenticated", "max_auth_age": -60}, "max_auth_age -60 must be"),
        ({"policy": "authenticated", "max_auth_age": "0m"}, "max_auth_age '0m' must be"),
        ({"policy": "authenticated", "max_auth_age": "soon"}, "max_auth_age 'soon' must be"),
        ({"policy": "authenticated", "max_auth_age": "1.5h"}, "must be a positive duration"),
        ({"policy": "authenticated", "max_auth_age": 1.5}, "must be a positive duration"),
        ({"policy": "authenticated", "max_auth_age": True}, "must be a positive duration"),
        ({"policy": "authenticated", "max_auth_age": None}, "must be a positive duration"),
        ({"policy": "authenticated", "max_age": "15m"}, "unknown key(s) max_age"),
    ],
)
def test_bad_requirements_name_the_file_and_the_rule(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        from_data({"rules": [{"path": "/ok", "policy": "bypass"}, rule]}, "/etc/forwardauth/policy.yml")
    assert str(raised.value).startswith("/etc/forwardauth/policy.yml: rule 2: ")
    assert message in str(raised.value)


def test_requirements_in_yaml_and_toml_files(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(
        "default: deny\nrules:\n  - path: /a\n    roles: [x]\n    second_factor: required\n    max_auth_age: 15m\n"
    )
    (tmp_path / "p.toml").write_text(
        'default = "deny"\n[[rules]]\npath = "/a"\nroles = ["x"]\nsecond_factor = "required"\nmax_auth_age = 900\n'
    )
    for name in ("p.yml", "p.toml"):
        rule = load(tmp_path / name).rules[0]
        assert (rule.effect, rule.second_factor, rule.max_auth_age) == (Effect.RESTRICTED, True, 900)


# --- the verdict: strictest over every rule some reading matched ------------------------------------


def test_plain_rules_need_no_subject() -> None:
    plain = judge(POLICY, "/anything")
    assert (plain.second_factor, plain.max_auth_age, plain.checks_subject) == (False, None, False)
    optional = judge(POLICY, "/optional")
    assert optional.rules[0].number == 7 and not optional.checks_subject
    assert judge(POLICY, "/mfa").checks_subject and judge(POLICY, "/recent").checks_subject
    staff = judge(POLICY, "/staff/x")
    assert staff.effect is Effect.RESTRICTED and staff.checks_subject and staff.second_factor


def test_a_requirement_matched_by_one_reading_only_still_applies() -> None:
    """``/MFA/x`` as sent matches no rule (the default, no requirement); case-folded it is
    ``/mfa/x``, which asks for a second factor: the verdict asks for it."""
    verdict = judge(POLICY, "/MFA/x")
    assert [r.number for r in verdict.matched] == [0, 3] and verdict.effect is Effect.AUTHENTICATED
    assert verdict.second_factor and verdict.checks_subject
    assert isinstance(decide(verdict, user(PWD), NOW), StepUp)
    assert decide(verdict, user(MFA), NOW) is None


def test_requirements_of_every_candidate_not_only_the_deciding_rules() -> None:
    """HEAD is judged as GET too: the restricted rule (HEAD) decides, the GET rule's max age applies."""
    policy = from_data(
        {
            "default": "deny",
            "rules": [
                {"path": "/r", "methods": ["GET"], "policy": "authenticated", "max_auth_age": "5m"},
                {"path": "/r", "roles": ["staff"], "second_factor": "required", "max_auth_age": "1h"},
            ],
        },
        "f",
    )
    verdict = judge(policy, "/r", "HEAD")
    assert verdict.effect is Effect.RESTRICTED and [r.number for r in verdict.rules] == [2]
    assert (verdict.second_factor, verdict.max_auth_age) == (True, 300)  # any second factor, the shortest age
    assert decide(verdict, user(Authentication.of(["pwd", "otp"], int(NOW) - 400)), NOW) == StepUp(True, 300)
    assert decide(verdict, user(Authentication.of(["pwd", "otp"], int(NOW) - 200)), NOW) is None
    assert decide(verdict, user(MFA, roles=("other",)), NOW) is Effect.DENY
    assert (judge(policy, "/r", "GET").second_factor, judge(policy, "/r", "GET").max_auth_age) == (False, 300)


def test_an_unknown_address_is_judged_with_the_network_rule_requirements() -> None:
    policy = from_data(
        {"rules": [{"networks": ["10.0.0.0/8"], "policy": "authenticated", "second_factor": "required"}]}, "f"
    )
    assert judge(policy, "/", ip="10.1.2.3").second_factor
    assert not judge(policy, "/", ip="192.0.2.1").second_factor  # outside: the default (deny), nothing asked
    assert judge(policy, "/", ip=None).second_factor  # in every network and none: the strictest


# --- decide ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri,subject,expected",
    [
        ("/public", None, None),
        ("/closed", user(MFA), Effect.DENY),
        ("/mfa", None, Effect.AUTHENTICATED),
        ("/mfa", user(PWD), StepUp(True, None)),
        ("/mfa", user(None), StepUp(True, None)),  # a token that does not say how: step up
        ("/mfa", user(MFA), None),
        ("/mfa", user(OLD_MFA), None),  # no max age on this rule
        ("/mfa", user(Authentication.of(["kba", "pwd"], int(NOW))), None),  # a recovery code is a factor
        ("/mfa", user(Authentication.of(["hwk", "user"], int(NOW))), None),  # a passkey with UV: two
        ("/mfa", user(Authentication.of(["hwk"], int(NOW))), StepUp(True, None)),  # without UV: one
        ("/recent", user(PWD), None),
        ("/recent", user(OLD_MFA), StepUp(False, 900)),
        ("/recent", user(None), StepUp(False, 900)),
        ("/recent", user(Authentication.of(["pwd"], int(NOW) - 900)), None),  # exactly 15m: still in time
        ("/recent", user(Authentication.of(["pwd"], int(NOW) - 901)), StepUp(False, 900)),
        ("/both", user(PWD), StepUp(True, 600)),
        ("/both", user(OLD_MFA), StepUp(True, 600)),  # the whole requirement, for the new sign-in to meet
        ("/both", user(MFA), None),
        ("/staff", user(PWD, roles=("user",)), Effect.DENY),  # not allowed at all: no step-up would help
        ("/staff", user(PWD), StepUp(True, None)),
        ("/staff", user(MFA), None),
        ("/anything", user(None), None),
        ("/optional", user(PWD), None),
    ],
)
def test_decide(uri: str, subject: Subject | None, expected: object) -> None:
    assert decide(judge(POLICY, uri), subject, NOW) == expected


def test_a_clients_own_token_is_denied_where_a_sign_in_is_asked() -> None:
    """No user signed in: it can never step up, so it is not told to."""
    robot = subject_of(ROBOT, MFA)  # whatever it is handed, a client has no sign-in
    assert robot.auth is None and robot.client == "robot"
    for uri in ("/mfa", "/recent", "/both"):
        assert decide(judge(POLICY, uri), robot, NOW) is Effect.DENY
    assert decide(judge(POLICY, "/anything"), robot, NOW) is None
    staff_clients = from_data({"rules": [{"client_roles": ["service"], "second_factor": "required"}]}, "f")
    assert decide(judge(staff_clients, "/"), robot, NOW) is Effect.DENY


def test_decide_reads_the_clock_when_not_given_one() -> None:
    now = int(time.time())
    assert decide(judge(POLICY, "/recent"), user(Authentication.of(["pwd"], now - 10))) is None
    assert decide(judge(POLICY, "/recent"), user(Authentication.of(["pwd"], now - 1000))) == StepUp(False, 900)


# --- the challenge (RFC 9470 section 3) and the login page's question ---------------------------------


def test_challenges() -> None:
    assert StepUp(True, None).challenge() == (
        'Bearer error="insufficient_user_authentication", error_description="A second factor is required", '
        f'acr_values="{ACR_MULTI_FACTOR}"'
    )
    assert StepUp(False, 900).challenge() == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A more recent sign-in is required", max_age=900'
    )
    assert StepUp(True, 600).challenge() == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A recent sign-in with a second factor is required", '
        'acr_values="urn:forwardauth:acr:mfa", max_age=600'
    )


@pytest.mark.parametrize(
    "scheme,host,uri,expected",
    [
        ("https", "app.example.test", "/mfa/page?x=1", (True, None)),
        ("https", "APP.example.test:8443", "/MFA", (True, None)),  # case-folded reading
        ("https", "app.example.test", "/both", (True, 600)),
        ("https", "app.example.test", "/recent", (False, 900)),
        ("https", "app.example.test", "/staff", (True, None)),
        ("https", "app.example.test", "/anything", (False, None)),
        ("https", "app.example.test", "/public/mfa", (False, None)),  # bypass: no sign-in at all
        ("https", "app.example.test", "/closed", (False, None)),  # denied whatever the sign-in
        ("https", "app.example.test", "/public/../mfa", (False, None)),  # refused by /auth (400)
        ("https", "app.example.test", "/mfa/%2e%2e/x", (False, None)),
    ],
)
def test_requirements_of(scheme: str, host: str, uri: str, expected: tuple[bool, int | None]) -> None:
    assert requirements_of(POLICY, scheme, host, uri) == expected


# --- tokens: amr, acr, auth_time ---------------------------------------------------------------------


@pytest.fixture(params=["ES256", "HS256"])
def tokens(request: pytest.FixtureRequest) -> TokenService:
    return TokenService(ring_for(request.param), ISSUER, AUDIENCE, ttl=900, leeway=0)


def payload_of(tokens: TokenService, auth: Authentication | None = MFA, identity: Identity = ALICE) -> dict[str, Any]:
    client_id = identity.client
    token = tokens.mint(identity, "s", client_id=client_id, auth=auth).token
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_a_user_token_carries_how_the_user_signed_in(tokens: TokenService) -> None:
    minted = tokens.mint(ALICE, "s-1", auth=MFA)
    payload = jwt.decode(minted.token, options={"verify_signature": False})
    assert payload["amr"] == ["otp", "pwd", "mfa"] and payload["acr"] == ACR_MULTI_FACTOR
    assert payload["auth_time"] == int(NOW) - 60
    claims = tokens.verify(minted.token)
    assert claims == minted.claims and claims.auth == MFA and claims.auth.multi_factor
    one = tokens.verify(tokens.mint(ALICE, "s-2", auth=PWD).token)
    assert one.auth == PWD and one.auth.acr == ACR_ONE_FACTOR


def test_a_token_without_them_reads_as_not_known(tokens: TokenService) -> None:
    payload = payload_of(tokens, auth=None)
    assert not {"amr", "acr", "auth_time"} & set(payload)
    assert tokens.verify(tokens.mint(ALICE, "s").token).auth is None


def test_a_clients_own_token_never_carries_them(tokens: TokenService) -> None:
    with pytest.raises(ValueError, match="no user authentication"):
        tokens.mint(ROBOT, "s", client_id="robot", auth=MFA)
    payload = payload_of(tokens, auth=None, identity=ROBOT)
    assert tokens.verify(sign(tokens, payload)).auth is None
    payload.update(amr=["pwd"], acr=ACR_ONE_FACTOR, auth_time=int(NOW))  # as if a user had signed in
    with pytest.raises(TokenError, match="client"):
        tokens.verify(sign(tokens, payload))


@pytest.mark.parametrize(
    "change",
    [
        {"amr": "pwd"},  # not a list
        {"amr": []},  # no method
        {"amr": ["mfa"]},  # mfa alone
        {"amr": ["pwd", 1]},
        {"amr": ["sms", "pwd", "mfa"]},  # an unknown method
        {"amr": ["otp", "pwd"]},  # two factors, mfa left out
        {"amr": ["pwd", "mfa"], "acr": ACR_MULTI_FACTOR},  # mfa claimed on one factor
        {"amr": ["otp", "otp", "pwd", "mfa"]},  # a duplicate
        {"acr": ACR_ONE_FACTOR},  # acr disagrees with amr
        {"acr": "urn:other:acr"},
        {"acr": None},  # missing: all three or none
        {"amr": None},
        {"auth_time": None},
        {"acr": 2},
        {"auth_time": "1700000000"},
        {"auth_time": 1_700_000_000.5},
        {"auth_time": True},
        {"auth_time": -1},
    ],
)
def test_tampered_shapes_are_refused(tokens: TokenService, change: dict[str, object]) -> None:
    payload = payload_of(tokens)
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    with pytest.raises(TokenError):
        tokens.verify(sign(tokens, payload))


def test_amr_order_does_not_matter_but_its_content_does(tokens: TokenService) -> None:
    payload = payload_of(tokens)
    payload["amr"] = ["mfa", "pwd", "otp"]
    assert tokens.verify(sign(tokens, payload)).auth == MFA


# --- headers and explain ---------------------------------------------------------------------------


def test_identity_headers_say_how_a_user_signed_in() -> None:
    assert identity_headers(ALICE, MFA)[HEADER_AMR] == "otp,pwd,mfa"
    assert identity_headers(ALICE, PWD)[HEADER_AMR] == "pwd"
    assert HEADER_AMR not in identity_headers(ALICE)
    assert HEADER_AMR not in identity_headers(ROBOT, MFA)  # no user signed in for a client
    assert subject_of(ALICE, MFA) == Subject("alice", ("staff",), auth=MFA)


def test_explain_shows_the_requirement_and_the_step_up() -> None:
    def lines(uri: str, subject: Subject | None) -> list[str]:
        return explain(POLICY, "https", "app.example.test", uri, "GET", None, subject, NOW)

    assert "sign-in required: a second factor and a sign-in at most 10m old" in lines("/both", None)
    assert lines("/both", None)[-1] == "decision: a valid token is needed (401 / login)"
    assert lines("/both", user(PWD))[-1] == (
        "decision: step up: no second factor (amr pwd) "
        "(401 insufficient_user_authentication; a browser goes to the login page)"
    )
    assert "step up: signed in 1h ago (over 10m)" in lines("/both", user(OLD_MFA))[-1]
    assert "step up: the token does not say how the user signed in" in lines("/both", user(None))[-1]
    assert lines("/both", user(MFA))[-1] == "decision: allow (200)"
    assert lines("/both", subject_of(ROBOT))[-1] == "decision: deny (403)"
    assert not any(line.startswith("sign-in required") for line in lines("/anything", user(PWD)))
    assert not any(line.startswith("sign-in required") for line in lines("/public", None))
