"""Rules on the credential, pure (issue 17): ``token_types``, ``scopes`` and ``challenge: basic``
parsed with errors naming the rule, judged strictly over every reading and method, decided by
``decide`` alone; the credential /auth reads; a token's headers; ``policy explain``'s account of
it all. No servers, no stores."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from forwardauth import cli, config
from forwardauth.clisupport import CommandError
from forwardauth.config import Settings
from forwardauth.constants import HEADER_AMR, HEADER_SCOPES, HEADER_USER
from forwardauth.core.authn import Authentication
from forwardauth.core.credentials import AmbiguousToken, credential
from forwardauth.core.explain import explain
from forwardauth.core.pats import new_token
from forwardauth.core.policy import CLIENT, PAT, SESSION, Effect, Object, Policy, PolicyError, Subject, decide
from forwardauth.core.policyfile import from_data
from forwardauth.core.principals import pat_headers, subject_of, subject_of_claims
from forwardauth.core.tokens import AccessClaims, Identity
from forwardauth.dev import demo

ALICE = Identity(subject="u-1", username="alice", roles=("dev",))
ROBOT = Identity.of_client("robot", ("service",))
NOW = 1_700_000_000.0
MFA = Authentication.of(["pwd", "otp"], int(NOW) - 60)

RULES = {
    "default": "authenticated",
    "rules": [
        {"path": "/public", "policy": "bypass"},
        {"path": "/git", "policy": "authenticated", "token_types": ["pat"], "challenge": "basic"},
        {"path": "/push", "policy": "authenticated", "token_types": ["pat", "client"], "scopes": ["repo:write"]},
        {"path": "/both", "policy": "authenticated", "scopes": ["a", "b"]},
        {"path": "/web", "policy": "authenticated", "token_types": "session"},
        {"path": "/devs", "roles": ["dev"], "token_types": ["pat"]},
        {"path": "/mfa", "policy": "authenticated", "second_factor": "required"},
        {"path": "/x", "methods": ["HEAD"], "policy": "authenticated", "token_types": ["pat", "session"]},
        {"path": "/x", "methods": ["GET"], "policy": "authenticated", "token_types": ["pat", "client"]},
        {"path": "/y", "methods": ["GET"], "policy": "authenticated", "challenge": "basic", "scopes": "s"},
    ],
}
POLICY = from_data(RULES, "pats.yml")


def judge(uri: str, method: str = "GET", policy: Policy = POLICY) -> Any:
    return policy.judge(Object.of("https", "git.example.test", uri, method), "192.0.2.1")


def pat(scopes: tuple[str, ...] = (), roles: tuple[str, ...] = ("dev",)) -> Subject:
    return Subject("alice", roles, token_type=PAT, scopes=scopes)


SESSION_USER = Subject("alice", ("dev",), auth=MFA)


# --- the policy file -------------------------------------------------------------------------------


def test_defaults_take_every_token_and_ask_no_scope() -> None:
    rule = from_data({"rules": [{"policy": "authenticated"}]}, "f").rules[0]
    assert rule.token_types == {SESSION, PAT, CLIENT} and rule.scopes == frozenset() and not rule.basic_challenge
    verdict = judge("/anything")
    assert not verdict.checks_subject and not verdict.basic_challenge  # nothing to look at: the fast path stays
    assert judge("/git").checks_subject and judge("/both").checks_subject


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"policy": "authenticated", "token_types": ["pat", "apikey"]}, "token_types: unknown apikey"),
        ({"policy": "authenticated", "token_types": []}, "token_types must be a non-empty string or list"),
        ({"policy": "authenticated", "scopes": ["repo read"]}, "scopes: 'repo read' is not a scope"),
        ({"policy": "authenticated", "scopes": [""]}, "scopes must be a non-empty string or list"),
        ({"policy": "authenticated", "challenge": "digest"}, "challenge must be basic or bearer"),
        ({"policy": "bypass", "token_types": ["pat"]}, "token_types: only for authenticated or restricted rules"),
        ({"policy": "deny", "challenge": "basic"}, "challenge: only for authenticated or restricted rules"),
        ({"policy": "bypass", "scopes": ["a"]}, "scopes: only for authenticated or restricted rules"),
        ({"policy": "authenticated", "token_types": ["session"], "scopes": ["a"]}, "a session's token has none"),
        ({"policy": "authenticated", "token_types": "pat", "second_factor": "required"}, "no token could pass"),
        ({"policy": "authenticated", "tokens": ["pat"]}, "unknown key(s) tokens"),
    ],
)
def test_bad_rules_are_named(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        from_data({"rules": [{"path": "/ok", "policy": "bypass"}, rule]}, "pats.yml")
    assert str(caught.value).startswith("pats.yml: rule 2: "), caught.value
    assert message in str(caught.value)


def test_a_toml_file_reads_the_same(tmp_path: Path) -> None:
    from forwardauth.core.policyfile import load

    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\npath = "/git"\npolicy = "authenticated"\ntoken_types = ["pat"]\nchallenge = "Basic"\n')
    rule = load(path).rules[0]
    assert rule.token_types == {PAT} and rule.basic_challenge


# --- decide ----------------------------------------------------------------------------------------


def test_token_types_are_enforced() -> None:
    git = judge("/git")
    assert decide(git, pat()) is None
    assert decide(git, SESSION_USER) is Effect.DENY  # a session's token where only PATs go: 403
    assert decide(git, subject_of(ROBOT)) is Effect.DENY
    assert decide(git, None) is Effect.AUTHENTICATED  # no credential: 401 (with a Basic challenge)
    web = judge("/web")
    assert decide(web, SESSION_USER) is None and decide(web, pat()) is Effect.DENY


def test_every_scope_is_required_and_sessions_have_none() -> None:
    both = judge("/both")
    assert decide(both, pat(("a",))) is Effect.DENY
    assert decide(both, pat(("b", "a", "c"))) is None
    assert decide(both, SESSION_USER) is Effect.DENY
    push = judge("/push")
    assert decide(push, pat(("repo:write",))) is None
    assert decide(push, subject_of(ROBOT, None, CLIENT, ("repo:write",))) is None
    assert decide(push, subject_of(ROBOT, None, CLIENT, ("repo:read",))) is Effect.DENY


def test_a_restricted_rule_needs_both_the_role_and_the_kind() -> None:
    devs = judge("/devs")
    assert decide(devs, pat()) is None
    assert decide(devs, pat(roles=("ops",))) is Effect.DENY
    assert decide(devs, SESSION_USER) is Effect.DENY


def test_a_pat_never_steps_up() -> None:
    """No one signed in for a token's request: a sign-in requirement denies it (403), as a client's."""
    assert decide(judge("/mfa"), pat()) is Effect.DENY
    assert decide(judge("/mfa"), SESSION_USER, NOW) is None


def test_the_strictest_over_every_method_the_backend_may_take() -> None:
    """HEAD is served by GET handlers: both rules apply, so only the kinds both take pass."""
    head, get = judge("/x", "HEAD"), judge("/x", "GET")
    assert head.token_types == {PAT} and get.token_types == {PAT, CLIENT}
    assert decide(head, SESSION_USER) is Effect.DENY and decide(get, SESSION_USER) is Effect.DENY
    assert decide(head, pat()) is None
    assert decide(judge("/x", "HEAD"), subject_of(ROBOT)) is Effect.DENY
    y_head = judge("/y", "HEAD")  # GET's scopes and challenge reach HEAD too
    assert y_head.scopes == {"s"} and y_head.basic_challenge and decide(y_head, pat()) is Effect.DENY


def test_the_strictest_over_every_reading_of_the_path() -> None:
    policy = from_data(
        {
            "default": "bypass",
            "rules": [
                {"path": "/Repo", "policy": "authenticated", "token_types": ["pat"]},
                {"path": "/repo", "policy": "authenticated", "scopes": ["read"], "challenge": "basic"},
            ],
        },
        "f",
    )
    verdict = judge("/repo/x", policy=policy)  # as sent: rule 2; case-folded: rule 1
    assert {r.number for r in verdict.matched} == {1, 2}
    assert verdict.token_types == {PAT} and verdict.scopes == {"read"} and verdict.basic_challenge
    assert decide(verdict, pat(("read",))) is None
    assert decide(verdict, pat()) is Effect.DENY
    assert decide(verdict, Subject("alice", token_type=CLIENT, scopes=("read",))) is Effect.DENY


def test_a_jwt_is_a_sessions_or_a_clients() -> None:
    session = AccessClaims(identity=ALICE, jti="j", sid="s", expires_at=2, scope="a b")
    assert subject_of_claims(session) == Subject("alice", ("dev",), token_type=SESSION, scopes=("a", "b"))
    issued = AccessClaims(identity=ALICE, jti="j", sid="s", expires_at=2, scope="a", client_id="app")
    assert subject_of_claims(issued).token_type == CLIENT and subject_of_claims(issued).user == "alice"
    robot = AccessClaims(identity=ROBOT, jti="j", sid="s", expires_at=2, client_id="robot")
    assert subject_of_claims(robot) == Subject("", client="robot", client_roles=("service",), token_type=CLIENT)


# --- the credential /auth reads, and what it answers ---------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_credential() -> None:
    token = new_token()
    name = "forwardauth"
    assert credential([f"Bearer {token}"], [], name) == (token, None)
    assert credential([basic("alice", token)], [], name) == (token, "alice")
    assert credential([basic("bob:x", token)], [], name) is None  # the password is "x:fa_pat_...": no token
    assert credential([basic("alice", "hunter2")], [], name) is None  # never a password check
    assert credential([basic("alice", "hunter2")], [f"{name}=jwt"], name) == ("jwt", None)  # the app's: the cookie
    assert credential(["Basic !!!"], [], name) is None
    assert credential(["Bearer jwt"], [f"{name}=other"], name) == ("jwt", None)  # as before: the header first
    assert credential([], [f"{name}={token}"], name) is None  # a token is never read from the cookie
    for authorization in ([f"Bearer {token}"], [basic("alice", token)]):
        with pytest.raises(AmbiguousToken):
            credential(authorization, [f"{name}=jwt"], name)  # two credentials
    with pytest.raises(AmbiguousToken):
        credential([basic("alice", token), f"Bearer {token}"], [], name)


def test_a_tokens_headers() -> None:
    headers = pat_headers(ALICE, ("repo:read", "repo:write"))
    assert headers[HEADER_USER] == "alice" and headers[HEADER_AMR] == "pat"
    assert headers[HEADER_SCOPES] == "repo:read repo:write"
    assert pat_headers(ALICE, ())[HEADER_SCOPES] == ""


# --- policy explain --------------------------------------------------------------------------------


def lines(uri: str, subject: Subject | None) -> list[str]:
    return explain(POLICY, "https", "git.example.test", uri, "GET", None, subject, NOW)


def test_explain_shows_kinds_scopes_and_the_challenge() -> None:
    git = lines("/git/repo.git", None)
    assert "token types: pat" in git
    assert any(line.startswith("challenge: basic") for line in git)
    assert git[-1] == "decision: a valid token is needed (401 with a Basic challenge)"
    assert lines("/git/repo.git", SESSION_USER)[-2:] == [
        "token: session",
        "decision: deny (403): a session token is not among the token types taken",
    ]
    push = lines("/push", pat(("repo:read",)))
    assert "scopes required: repo:write" in push and "token: pat, scopes repo:read" in push
    assert push[-1] == "decision: deny (403): the token lacks the scope(s) repo:write"
    assert lines("/push", pat(("repo:write",)))[-1] == "decision: allow (200)"
    assert lines("/mfa", pat())[-1] == (
        "decision: deny (403): no one signed in with a personal access token, so it can never step up"
    )
    assert not any(line.startswith(("token types", "scopes required", "challenge")) for line in lines("/a", None))


def test_the_cli_takes_a_kind_and_scopes(
    pure_settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "pats.yml"
    path.write_text(yaml.safe_dump(RULES))
    args = ["policy", "explain", "--file", str(path), "--host", "git.example.test", "--path", "/push"]
    cli.cmd_policy_explain(pure_settings, cli.parser().parse_args([*args, "--roles", "dev", "--token-type", "pat"]))
    assert capsys.readouterr().out.splitlines()[-1] == "decision: deny (403): the token lacks the scope(s) repo:write"
    given = [*args, "--roles", "dev", "--token-type", "pat", "--scope", "repo:write", "--scope", "x"]
    cli.cmd_policy_explain(pure_settings, cli.parser().parse_args(given))
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["token: pat, scopes repo:write x", "decision: allow (200)"]
    for wrong, complaint in (
        (["--roles", "dev", "--scope", "a"], "a session's token has no scopes"),
        (["--client", "robot", "--token-type", "pat"], "a client's own token is a client token"),
        (["--token-type", "pat"], "give --user, --roles or --client"),
    ):
        with pytest.raises(CommandError) as caught:
            cli.cmd_policy_explain(pure_settings, cli.parser().parse_args([*args, *wrong]))
        assert complaint in str(caught.value)


def test_the_scopes_header_is_configurable_and_checked() -> None:
    names = config.load({"FORWARDAUTH_HEADERS_SCOPES": "X-Token-Scopes"}).header_names
    assert pat_headers(ALICE, ("a",), names)["X-Token-Scopes"] == "a" and "X-Token-Scopes" in names.all
    with pytest.raises(config.ConfigError) as caught:
        config.load({"FORWARDAUTH_HEADERS_SCOPES": "x-auth-amr"})
    assert str(caught.value).startswith("FORWARDAUTH_HEADERS_SCOPES:") and "header of amr" in str(caught.value)
    values = demo.header_values(names)  # the shipped proxy files pass it on under its name
    assert values["HEADER_SCOPES"] == "X-Token-Scopes" and values["HEADER_SCOPES_VAR"] == "x_token_scopes"
    assert "|^x[^a-z0-9]token[^a-z0-9]scopes$" in values["HEADER_STRIP_TRAEFIK"]  # and strip a client's


def test_the_shipped_example_keeps_git_for_tokens() -> None:
    from forwardauth.core.policyfile import load

    example = load(demo.DEPLOY / "policy.example.yml")

    def verdict(path: str, method: str = "GET") -> Any:
        return example.judge(Object.of("https", "git.example.com", path, method), "192.0.2.1")

    push, fetch = verdict("/project.git/git-receive-pack", "POST"), verdict("/project.git/info/refs")
    assert push.basic_challenge and decide(push, None) is Effect.AUTHENTICATED
    assert decide(push, pat(("repo:write",))) is None and decide(push, pat()) is Effect.DENY
    assert decide(fetch, pat()) is None and decide(fetch, SESSION_USER) is Effect.DENY
