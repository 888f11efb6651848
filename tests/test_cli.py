"""The forwardauth command, run as a real process against the test database and a real server."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from forwardauth.stores import users

from . import http
from .support import PASSWORD, Service, wait_until

NEW_PASSWORD = "a brand new passphrase"


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m forwardauth ARGS`` with the test environment, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "forwardauth", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The command failed with ``status`` and said why in one line, without a traceback."""
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forwardauth: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def add_user(env: dict[str, str], name: str, *options: str, password: str = PASSWORD) -> None:
    result = run(env, "user", "add", name, *options, "--password-stdin", stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"created user {name.lower()} (")


def login_status(svc: Service, name: str, password: str) -> int:
    return http.login(svc.base, name, password).status


@pytest.fixture
def name() -> str:
    """A fresh username with capitals (the database is shared by the whole run)."""
    return f"Cli-{secrets.token_hex(4)}"


def test_user_add_then_list_shows_roles_and_email(env: dict[str, str], name: str) -> None:
    add_user(env, name, "--role", "admin", "--role", "ops", "--email", "cli@example.test")
    listed = run(env, "user", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{name.lower()}\tenabled\tadmin,ops\tcli@example.test" in listed.stdout.splitlines()


def test_adding_the_same_name_in_another_case_fails_in_one_line(env: dict[str, str], name: str) -> None:
    add_user(env, name)
    again = run(env, "user", "add", name.upper(), "--password-stdin", stdin="another password\n")
    assert "already exists" in assert_one_line_error(again, 1)
    assert run(env, "user", "list").stdout.count(name.lower() + "\t") == 1


def test_disabled_user_cannot_log_in_until_enabled(
    env: dict[str, str], name: str, service: Callable[..., Service]
) -> None:
    add_user(env, name)
    svc = service()
    login = http.login(svc.base, name, PASSWORD)
    assert login.status == 200
    token = login.json()["access_token"]
    assert http.get(svc.base + "/auth", http.bearer(token)).status == 200

    disabled = run(env, "user", "disable", name)
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == f"disabled {name.lower()}; revoked 1 session(s)"
    assert login_status(svc, name, PASSWORD) == 401
    assert http.get(svc.base + "/auth", http.bearer(token)).status == 401  # its session ended too
    assert f"{name.lower()}\tdisabled\t" in run(env, "user", "list").stdout

    enabled = run(env, "user", "enable", name)
    assert enabled.returncode == 0 and enabled.stdout.strip() == f"enabled {name.lower()}"
    assert login_status(svc, name, PASSWORD) == 200


def test_passwd_replaces_the_password(env: dict[str, str], name: str, service: Callable[..., Service]) -> None:
    add_user(env, name)
    changed = run(env, "user", "passwd", name, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert changed.returncode == 0
    assert changed.stdout.strip() == f"password changed for {name.lower()}; revoked 0 session(s)"
    svc = service()
    assert login_status(svc, name, PASSWORD) == 401
    assert login_status(svc, name, NEW_PASSWORD) == 200


def test_unknown_user_and_empty_password_are_one_line_errors(env: dict[str, str]) -> None:
    for args in (("user", "disable", "nobody-here"), ("user", "passwd", "nobody-here", "--password-stdin")):
        assert "no user 'nobody-here'" in assert_one_line_error(run(env, *args, stdin=NEW_PASSWORD + "\n"), 1)
    empty = run(env, "user", "add", f"x{secrets.token_hex(3)}", "--password-stdin", stdin="\n")
    assert "password must not be empty" in assert_one_line_error(empty, 1)


def test_migrate_on_a_migrated_database_is_up_to_date(env: dict[str, str]) -> None:
    result = run(env, "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database is up to date"


def test_bad_port_is_a_configuration_error(env: dict[str, str]) -> None:
    result = run({**env, "FORWARDAUTH_PORT": "notaport"}, "migrate")
    line = assert_one_line_error(result, 2)
    assert line.startswith("forwardauth: configuration error: FORWARDAUTH_PORT:")


@pytest.mark.parametrize(
    ("variable", "secret", "extra"),
    [
        ("FORWARDAUTH_HMAC_SECRET", "short-secret-value", {"FORWARDAUTH_SIGNING_ALG": "HS256"}),
        ("FORWARDAUTH_DATABASE_URL", "mysql://admin:hunter2-secret@db.example.test/auth", {}),
    ],
    ids=["short-hmac-secret", "database-url-wrong-scheme"],
)
def test_invalid_secret_is_not_echoed(env: dict[str, str], variable: str, secret: str, extra: dict[str, str]) -> None:
    result = run({**env, **extra, variable: secret}, "migrate")
    line = assert_one_line_error(result, 2)
    assert variable in line
    assert secret not in result.stderr and secret not in result.stdout


def key_lines(env: dict[str, str]) -> list[list[str]]:
    """``keys list`` rows as (kid, alg, mark), the trailing file count left out."""
    listed = run(env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    return [line.split("\t") for line in listed.stdout.splitlines() if "\t" in line]


def test_keys_list_rotate_and_file_modes(
    env: dict[str, str], service: Callable[..., Service], make_user: Callable[..., users.User]
) -> None:
    user = make_user()
    svc = service()
    assert login_status(svc, user.username, PASSWORD) == 200
    first = key_lines(env)
    assert len(first) == 1 and first[0][1:] == ["RS256", "signing"]

    rotated = run(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split()[3].rstrip(";")
    second = key_lines(env)
    assert len(second) == 2
    assert {tuple(row) for row in second} == {(first[0][0], "RS256", "verify-only"), (new_kid, "RS256", "signing")}

    files = sorted(Path(env["FORWARDAUTH_DATA_DIR"], "keys").glob("*.pem"))
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [oct(f.stat().st_mode) for f in files]

    # The running server reloads the folder: it publishes both keys and signs with the new one.
    def published() -> set[str]:
        return {key["kid"] for key in http.get(svc.base + "/.well-known/jwks.json").json()["keys"]}

    wait_until(lambda: published() == {first[0][0], new_kid}, timeout=10, what="the rotated key in the JWKS")
    token = http.login(svc.base, user.username, PASSWORD).json()["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == new_kid


def test_keys_prune_keeps_keys_tokens_may_still_need(env: dict[str, str]) -> None:
    assert run(env, "keys", "list").returncode == 1  # listing does not create a key
    assert run(env, "keys", "rotate").returncode == 0
    assert run(env, "keys", "rotate").returncode == 0
    pruned = run(env, "keys", "prune")
    assert pruned.returncode == 0 and "0 key(s) removed" in pruned.stdout
    assert len(key_lines(env)) == 2


def test_demo_user_is_created_once(env: dict[str, str], service: Callable[..., Service]) -> None:
    demo_env = {**env, "FORWARDAUTH_DEMO_PASSWORD": "demo password 1"}
    first = run(demo_env, "user", "demo")
    assert first.returncode == 0 and "demo user created" in first.stdout
    assert "demo password 1" not in first.stdout  # a given password is not echoed
    second = run({**demo_env, "FORWARDAUTH_DEMO_PASSWORD": "other"}, "user", "demo")
    assert second.returncode == 0 and "exists" in second.stdout
    assert login_status(service(), "demo", "demo password 1") == 200


# --- policy explain: the decision /auth makes, with the readings behind it --------------------------

EXPLAIN_POLICY = """default: authenticated
rules:
  - path: /public
    policy: bypass
  - path: /admin
    roles: [admin]
"""


def explain(env: dict[str, str], tmp_path: Path, *args: str) -> list[str]:
    policy = tmp_path / "explain.yml"
    policy.write_text(EXPLAIN_POLICY)
    result = run(env, "policy", "explain", "--file", str(policy), "--host", "app.example.test", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_policy_explain_uses_the_users_real_roles(env: dict[str, str], name: str, tmp_path: Path) -> None:
    """--user looks the user up: an admin in the database is an admin, whatever the command line
    does not say; an unknown user is said to be one, with no roles assumed."""
    add_user(env, name, "--role", "admin")
    lines = explain(env, tmp_path, "--path", "/admin/x", "--user", name)
    assert f"subject: {name.lower()}, roles admin (from the database)" in lines
    assert lines[-1] == "decision: allow (200)"
    overridden = explain(env, tmp_path, "--path", "/admin/x", "--user", name, "--roles", "user")
    assert "(from --roles)" in overridden[0] and overridden[-1] == "decision: deny (403)"
    nobody = explain(env, tmp_path, "--path", "/admin/x", "--user", name + "-nobody")
    assert "no roles assumed" in nobody[0] and "no user" in nobody[0] and nobody[-1] == "decision: deny (403)"


def test_policy_explain_prints_the_readings_and_refusals(env: dict[str, str], tmp_path: Path) -> None:
    lines = explain(env, tmp_path, "--path", "/Admin;x=1/panel", "--roles", "user")
    assert "reading /Admin;x=1/panel (as sent): the default (authenticated)" in lines
    assert "reading /admin/panel (as sent, ;params stripped, case-folded): rule 2 (restricted)" in lines
    assert "decided by: rule 2 (restricted); the strictest of 4 readings" in lines
    assert lines[-1] == "decision: deny (403)"
    refused = explain(env, tmp_path, "--path", "/admin/%252e%252e/public")
    assert refused[-1].startswith("decision: refused (400): the path holds a . or .. segment")
    bad_host = run(
        env,
        "policy",
        "explain",
        "--file",
        str(tmp_path / "explain.yml"),
        "--host",
        "app.example.test:",
        "--path",
        "/public",
    )
    assert bad_host.stdout.splitlines()[-1].startswith("decision: refused (400): the host is not a valid host")
    public = explain(env, tmp_path, "--path", "/public/x")
    assert public[1:] == [
        "reading /public/x (as sent): rule 1 (bypass)",
        "decided by: rule 1 (bypass)",
        "decision: allow (200)",
    ]
