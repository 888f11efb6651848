"""User management through the real command: roles and e-mail changed, users deleted, the
password policy, and no prompt where there is no terminal."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from forwardauth.core.passwords import DEFAULT_MIN_LENGTH, WeakPassword, check_policy, generate_password
from forwardauth.stores import audit
from forwardauth.stores.postgres import Database

from . import http
from .support import PASSWORD, Service, throwaway_database
from .test_cli import add_user, assert_one_line_error, login_status, run

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def name() -> str:
    return f"ucli-{secrets.token_hex(4)}"


def listed(env: dict[str, str], name: str) -> list[str]:
    """The ``user list`` row of ``name`` as fields ([] when absent)."""
    result = run(env, "user", "list")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return next((r for r in rows if r[0] == name), [])


def roles_at_auth(svc: Service, token: str) -> tuple[int, str | None]:
    answer = http.get(svc.base + "/auth", http.bearer(token))
    return answer.status, answer.headers.get("X-Auth-Roles")


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_no_terminal_and_no_password_stdin_is_a_clear_error(env: dict[str, str], name: str, command: str) -> None:
    if command == "passwd":
        add_user(env, name)
    result = run(env, "user", command, name)  # stdin is a pipe (empty), not a terminal
    line = assert_one_line_error(result, 1)
    assert "--password-stdin" in line and "EOFError" not in result.stderr
    if command == "add":
        assert listed(env, name) == []


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("a", "at least 15 characters"),
        ("Xk9#mQ2$vL7!pR", "at least 15 characters"),  # strong-looking, one short
        ("password1234567", "too easy to guess"),  # long enough, but a common password
        ("aaaaaaaaaaaaaaaaaaaa", "too easy to guess"),
        ("qwertyuiopasdfghjkl", "too easy to guess"),
        ("123456789012345678", "too easy to guess"),
    ],
    ids=["one-char", "short", "common", "repeat", "keyboard", "digits"],
)
def test_weak_passwords_are_refused_by_add(env: dict[str, str], name: str, password: str, why: str) -> None:
    result = run(env, "user", "add", name, "--password-stdin", stdin=password + "\n")
    line = assert_one_line_error(result, 1)
    assert why in line and (len(password) < 4 or password not in result.stderr)
    assert listed(env, name) == []


def test_the_users_own_name_and_email_do_not_count(env: dict[str, str], name: str) -> None:
    weak = run(env, "user", "add", name, "--password-stdin", stdin=f"{name}{name}\n")
    assert "too easy to guess" in assert_one_line_error(weak, 1)
    mailbox = f"zebulon{secrets.token_hex(3)}"
    by_mail = run(
        env,
        "user",
        "add",
        name,
        "--email",
        f"{mailbox}@example.test",
        "--password-stdin",
        stdin=f"{mailbox}{mailbox}!\n",
    )
    assert "too easy to guess" in assert_one_line_error(by_mail, 1)


def test_the_minimum_length_is_configurable_but_never_below_8(env: dict[str, str], name: str) -> None:
    short = "Xk9#mQ2$vL7!pR"
    assert run(env, "user", "add", name, "--password-stdin", stdin=short + "\n").returncode == 1
    assert (
        run(
            {**env, "FORWARDAUTH_PASSWORD_MIN_LENGTH": "12"},
            "user",
            "add",
            name,
            "--password-stdin",
            stdin=short + "\n",
        ).returncode
        == 0
    )
    longer = run(
        {**env, "FORWARDAUTH_PASSWORD_MIN_LENGTH": "40"},
        "user",
        "passwd",
        name,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert "at least 40 characters" in assert_one_line_error(longer, 1)
    too_low = run({**env, "FORWARDAUTH_PASSWORD_MIN_LENGTH": "6"}, "user", "list")
    assert "FORWARDAUTH_PASSWORD_MIN_LENGTH" in assert_one_line_error(too_low, 2)


def test_passwd_applies_the_policy_and_keeps_the_old_password(
    env: dict[str, str], name: str, service: Callable[..., Service]
) -> None:
    add_user(env, name)
    weak = run(env, "user", "passwd", name, "--password-stdin", stdin="letmein\n")
    assert "at least 15 characters" in assert_one_line_error(weak, 1)
    common = run(env, "user", "passwd", name, "--password-stdin", stdin="iloveyouiloveyou\n")
    assert "too easy to guess" in assert_one_line_error(common, 1)
    svc = service()
    assert login_status(svc, name, PASSWORD) == 200


def test_modify_changes_roles_and_email_and_a_removed_role_ends_sessions(
    env: dict[str, str], name: str, service: Callable[..., Service]
) -> None:
    add_user(env, name, "--role", "user", "--email", "old@example.test")
    svc = service()
    token = http.login(svc.base, name, PASSWORD).json()["access_token"]
    assert roles_at_auth(svc, token) == (200, "user")

    # Adding a role and changing the e-mail end no session; the next tokens carry them.
    added = run(env, "user", "modify", name, "--add-role", "admin", "--email", "new@example.test")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [f"modified {name}: roles user,admin, e-mail new@example.test"]
    assert listed(env, name) == [name, "enabled", "user,admin", "new@example.test"]
    assert roles_at_auth(svc, token) == (200, "user")
    fresh = http.login(svc.base, name, PASSWORD).json()["access_token"]
    assert roles_at_auth(svc, fresh) == (200, "user,admin")

    # Removing a role: every token minted with it stops passing at once.
    removed = run(env, "user", "modify", name, "--remove-role", "admin", "--no-email")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines()[-1] == f"revoked 2 session(s) of {name}: role(s) admin removed"
    assert roles_at_auth(svc, fresh)[0] == 401 and roles_at_auth(svc, token)[0] == 401
    assert listed(env, name) == [name, "enabled", "user", "-"]
    again = http.login(svc.base, name, PASSWORD).json()["access_token"]
    assert roles_at_auth(svc, again) == (200, "user")

    # --role replaces the whole set; --no-roles empties it.
    assert run(env, "user", "modify", name, "--role", "ops", "--role", "audit").returncode == 0
    assert listed(env, name)[2] == "ops,audit"
    assert run(env, "user", "modify", name, "--no-roles").returncode == 0
    assert listed(env, name)[2] == "-"


def test_modify_refusals_are_one_line_and_change_nothing(env: dict[str, str], name: str) -> None:
    add_user(env, name, "--role", "user")
    before = listed(env, name)
    for args, why in [
        ((), "nothing to change"),
        (("--add-role", "bad role"), "role 'bad role'"),
        (("--add-role", "admin\n"), "role 'admin\\n'"),
        (("--email", "not-an-address"), "e-mail must look like"),
        (("--email", "a@b.test\r\nX-Auth-Roles: admin"), "e-mail must look like"),
    ]:
        assert why in assert_one_line_error(run(env, "user", "modify", name, *args), 1), args
    assert listed(env, name) == before
    assert "no user 'nobody-here'" in assert_one_line_error(run(env, "user", "modify", "nobody-here", "--role", "x"), 1)


def test_adding_an_existing_user_still_says_so_and_points_nowhere_else(env: dict[str, str], name: str) -> None:
    add_user(env, name, "--role", "user")
    again = run(env, "user", "add", name, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert "already exists" in assert_one_line_error(again, 1)
    assert listed(env, name)[2] == "user"  # `user modify` is the way to change roles


def test_delete_ends_sessions_and_removes_the_user(
    env: dict[str, str], name: str, service: Callable[..., Service], database: Database
) -> None:
    add_user(env, name, "--role", "admin")
    svc = service()
    login = http.login(svc.base, name, PASSWORD).json()
    assert roles_at_auth(svc, login["access_token"]) == (200, "admin")

    deleted = run(env, "user", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted {name}; revoked 1 session(s)"
    assert roles_at_auth(svc, login["access_token"])[0] == 401
    assert http.post_json(svc.base + "/refresh", {"refresh_token": login["refresh_token"]}).status in (400, 401)
    assert login_status(svc, name, PASSWORD) == 401
    assert listed(env, name) == []
    events = [e for e in database.call(audit.recent, 50) if e.username == name and e.event == "user_change"]
    assert events and events[-1].detail["action"] == "delete"

    # The name is free again, for a new account with nothing of the old one.
    add_user(env, name)
    assert listed(env, name)[2] == "-"
    assert "no user" in assert_one_line_error(run(env, "user", "delete", f"gone-{secrets.token_hex(3)}"), 1)


def test_demo_password_generation_meets_the_policy() -> None:
    for _ in range(20):
        password = generate_password()
        assert len(password) >= DEFAULT_MIN_LENGTH
        check_policy(password, DEFAULT_MIN_LENGTH, ("demo",))
    with pytest.raises(WeakPassword):
        check_policy("demodemodemodemo", DEFAULT_MIN_LENGTH, ("demo",))


def test_demo_user_weak_given_password_refused_generated_one_works(
    env: dict[str, str], service: Callable[..., Service]
) -> None:
    """`make run`'s `forwardauth user demo`, on a database of its own (the run's has a demo user)."""
    with throwaway_database("forwardauth_demo") as url:
        fresh = {**env, "FORWARDAUTH_DATABASE_URL": url}
        weak = run({**fresh, "FORWARDAUTH_DEMO_PASSWORD": "demo"}, "user", "demo")
        assert "FORWARDAUTH_DEMO_PASSWORD: password must be at least" in assert_one_line_error(weak, 1)
        created = run(fresh, "user", "demo")
        assert created.returncode == 0 and "demo user created" in created.stdout, created.stderr
        svc = service(extra={"FORWARDAUTH_DATABASE_URL": url})
        words = [w.strip(".,;:()'\"") for w in created.stdout.split()]
        assert any(len(w) >= DEFAULT_MIN_LENGTH and login_status(svc, "demo", w) == 200 for w in words)
        svc.stop()


def test_listings_escape_control_characters_already_stored(env: dict[str, str], name: str, database: Database) -> None:
    """A value written before validation existed (or straight into the database) cannot forge a row."""
    add_user(env, name, "--role", "user")

    def set_email(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE users SET email = %s WHERE username = %s",
                ("x\x1b]0;t\x07@evil\r\nroot\tenabled\tadmin\u202e", name),
            )

    database.call(set_email)
    result = run(env, "user", "list")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\u202e" not in result.stdout
    assert not any(line.startswith("root\t") for line in result.stdout.splitlines())
    assert listed(env, name) == [name, "enabled", "user", "x\\x1b]0;t\\x07@evil\\r\\nroot\\tenabled\\tadmin\\u202e"]
