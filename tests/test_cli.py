"""The forwardauth command, run as a real process against the test database."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import PASSWORD, Service


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forwardauth", *args], env={**os.environ, **env}, input=stdin,
                          capture_output=True, text=True, timeout=60)


def login_status(base: str, username: str, password: str) -> int:
    return httpx.post(base + "/login", json={"username": username, "password": password}).status_code


def test_user_lifecycle(env: dict[str, str], service: Callable[..., Service]) -> None:
    name = "Cli-" + os.urandom(3).hex()
    added = run(env, "user", "add", name, "--role", "admin", "--role", "ops", "--email", "c@example.test",
                "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert f"created user {name.lower()}" in added.stdout
    listed = run(env, "user", "list").stdout
    assert f"{name.lower()}\tenabled\tadmin,ops\tc@example.test" in listed

    twice = run(env, "user", "add", name.upper(), "--password-stdin", stdin="x\n")
    assert twice.returncode == 1 and "already exists" in twice.stderr and "Traceback" not in twice.stderr

    svc = service()
    assert login_status(svc.base, name, PASSWORD) == 200
    assert run(env, "user", "disable", name).returncode == 0
    assert login_status(svc.base, name, PASSWORD) == 401
    assert run(env, "user", "enable", name).returncode == 0
    assert login_status(svc.base, name, PASSWORD) == 200
    assert run(env, "user", "passwd", name, "--password-stdin", stdin="a new password\n").returncode == 0
    assert login_status(svc.base, name, PASSWORD) == 401
    assert login_status(svc.base, name, "a new password") == 200


def test_unknown_user_and_bad_input_are_one_line_errors(env: dict[str, str]) -> None:
    for args in (("user", "disable", "nobody-here"), ("user", "passwd", "nobody-here", "--password-stdin")):
        result = run(env, *args, stdin="pw\n")
        assert result.returncode == 1 and "no user" in result.stderr and "Traceback" not in result.stderr
    empty = run(env, "user", "add", "x" + os.urandom(3).hex(), "--password-stdin", stdin="\n")
    assert empty.returncode == 1 and "password must not be empty" in empty.stderr


def test_configuration_errors(env: dict[str, str]) -> None:
    bad_port = run({**env, "FORWARDAUTH_PORT": "notaport"}, "migrate")
    assert bad_port.returncode == 2
    assert bad_port.stderr.strip().count("\n") == 0 and "FORWARDAUTH_PORT" in bad_port.stderr
    secret = "short-secret-value"
    bad_secret = run({**env, "FORWARDAUTH_SIGNING_ALG": "HS256", "FORWARDAUTH_HMAC_SECRET": secret}, "migrate")
    assert bad_secret.returncode == 2 and "FORWARDAUTH_HMAC_SECRET" in bad_secret.stderr
    assert secret not in bad_secret.stderr


def test_migrate_reports_up_to_date(env: dict[str, str]) -> None:
    result = run(env, "migrate")
    assert result.returncode == 0 and "up to date" in result.stdout


def test_keys_commands(env: dict[str, str]) -> None:
    assert run(env, "keys", "list").returncode == 1  # no key yet: not created by listing
    assert run(env, "keys", "rotate").returncode == 0
    assert run(env, "keys", "rotate").returncode == 0
    listed = run(env, "keys", "list").stdout
    assert listed.count("RS256") == 2 and listed.count("signing") == 1
    files = sorted(Path(env["FORWARDAUTH_DATA_DIR"], "keys").glob("*.pem"))
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    pruned = run(env, "keys", "prune")
    assert pruned.returncode == 0 and "0 key(s) removed" in pruned.stdout


def test_demo_user_is_created_once(env: dict[str, str], service: Callable[..., Service]) -> None:
    demo_env = {**env, "FORWARDAUTH_DEMO_PASSWORD": "demo password 1"}
    first = run(demo_env, "user", "demo")
    assert first.returncode == 0 and "demo user created" in first.stdout
    assert "demo password 1" not in first.stdout  # a given password is not echoed
    second = run({**demo_env, "FORWARDAUTH_DEMO_PASSWORD": "other"}, "user", "demo")
    assert "exists" in second.stdout
    assert login_status(service().base, "demo", "demo password 1") == 200
