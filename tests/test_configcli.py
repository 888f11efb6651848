"""Configuration that checks itself, through the real command: `config`, `config check`, `--version`,
and start-up errors that name the variable and the fix instead of a traceback or a long wait."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import forwardauth

from .support import ADMIN_URL, Service, free_port, with_database
from .test_cli import assert_one_line_error, run

SECRET = "pw-0123456789-abcdefghij-secret"
MISSING_DB = with_database(ADMIN_URL, "forwardauth_no_such_database")


def run_serve(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``forwardauth serve`` that is expected to stop by itself, within ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "forwardauth", "serve"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "FORWARDAUTH_PORT": str(free_port())},
        timeout=timeout,
    )


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"forwardauth {forwardauth.__version__}"


def test_config_shows_the_values_in_effect_with_secrets_masked(env: dict[str, str]) -> None:
    hs256 = {
        "FORWARDAUTH_SIGNING_ALG": "HS256",
        "FORWARDAUTH_HMAC_SECRET": SECRET * 2,
        "FORWARDAUTH_DATABASE_URL": f"postgresql://fa:{SECRET}@db.example.test:5432/auth",
        "FORWARDAUTH_PORT": "9123",
    }
    result = run({**env, **hs256}, "config")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = {line.split("=", 1)[0]: line for line in result.stdout.splitlines()}
    assert lines["FORWARDAUTH_PORT"].split() == ["FORWARDAUTH_PORT=9123", "#", "set"]
    assert lines["FORWARDAUTH_ISSUER"].startswith(f"FORWARDAUTH_ISSUER={env['FORWARDAUTH_ISSUER']} ")
    assert lines["FORWARDAUTH_HMAC_SECRET"].split()[0] == "FORWARDAUTH_HMAC_SECRET=****"
    assert (
        lines["FORWARDAUTH_DATABASE_URL"].split()[0]
        == "FORWARDAUTH_DATABASE_URL=postgresql://fa:****@db.example.test:5432/auth"
    )
    assert lines["FORWARDAUTH_AUDIENCE"].split() == ["FORWARDAUTH_AUDIENCE=forwardauth", "#", "default"]


def test_config_variables_lists_every_variable(env: dict[str, str]) -> None:
    result = run(env, "config", "variables")
    assert result.returncode == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == [var.env for var in forwardauth.config.VARIABLES]


def test_config_check_passes_a_good_configuration(env: dict[str, str]) -> None:
    result = run(env, "config", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "configuration OK"
    assert "FORWARDAUTH_DATABASE_URL: PostgreSQL answers" in result.stdout
    assert "FORWARDAUTH_REDIS_URL: Redis answers" in result.stdout


def test_config_check_reports_every_problem_naming_the_variable(env: dict[str, str]) -> None:
    bad = {
        "FORWARDAUTH_COOKIE_DOMIAN": "example.test",
        "FORWARDAUTH_LOGIN_URL": "forwardauth/login",
        "FORWARDAUTH_DATABASE_URL": f"mysql://root:{SECRET}@db/auth",
        "FORWARDAUTH_PORT": "http",
    }
    result = run({**env, **bad}, "config", "check")
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr and "Traceback" not in result.stderr
    problems = result.stderr.splitlines()
    assert problems[-1] == "4 problem(s) found"
    assert sorted(problems[:-1]) == sorted(
        [
            "forwardauth: FORWARDAUTH_COOKIE_DOMIAN: unknown variable, ignored "
            "(did you mean FORWARDAUTH_COOKIE_DOMAIN?)",
            "forwardauth: FORWARDAUTH_LOGIN_URL: 'forwardauth/login' is neither a URL nor a path: a path needs a "
            "leading / (/forwardauth/login), a URL its scheme (https://...)",
            "forwardauth: FORWARDAUTH_DATABASE_URL: MySQL is not supported: forwardauth stores its data in "
            "PostgreSQL only; write postgresql://USER:PASSWORD@HOST:5432/DATABASE",
            "forwardauth: FORWARDAUTH_PORT: 'http' is not a TCP port",
        ]
    )
    assert "configuration OK" not in result.stdout


def test_config_check_finds_a_missing_database_unless_told_not_to_connect(env: dict[str, str]) -> None:
    missing = {**env, "FORWARDAUTH_DATABASE_URL": MISSING_DB}
    result = run(missing, "config", "check")
    assert result.returncode == 1
    assert 'FORWARDAUTH_DATABASE_URL: database "forwardauth_no_such_database" does not exist' in result.stderr
    offline = run(missing, "config", "check", "--no-connect")
    assert offline.returncode == 0, offline.stderr
    assert "configuration OK" in offline.stdout


def test_an_unknown_variable_is_a_warning_for_other_commands(env: dict[str, str]) -> None:
    result = run({**env, "FORWARDAUTH_COOKIE_DOMIAN": "example.test"}, "migrate")
    assert result.returncode == 0
    assert result.stderr.strip() == (
        "forwardauth: warning: FORWARDAUTH_COOKIE_DOMIAN: unknown variable, ignored "
        "(did you mean FORWARDAUTH_COOKIE_DOMAIN?)"
    )


def test_serve_warns_of_an_unknown_variable_and_starts(service: Callable[..., Service]) -> None:
    svc = service(extra={"FORWARDAUTH_COOKIE_DOMIAN": "example.test"})
    assert (
        "FORWARDAUTH_COOKIE_DOMIAN: unknown variable, ignored (did you mean FORWARDAUTH_COOKIE_DOMAIN?)"
        in svc.log.read_text()
    )


def test_a_database_that_does_not_exist_stops_serve_at_once(env: dict[str, str]) -> None:
    started = time.monotonic()
    result = run_serve({**env, "FORWARDAUTH_DATABASE_URL": MISSING_DB})
    assert time.monotonic() - started < 15  # it used to retry for 30 s first
    line = assert_one_line_error(result, 2)
    server = urlsplit(MISSING_DB)  # the machine's PostgreSQL, or the embedded one's socket (a bare machine)
    where = f"{server.hostname}:{server.port}" if server.hostname else "the local socket"
    assert line.startswith(
        "forwardauth: configuration error: FORWARDAUTH_DATABASE_URL: database "
        f'"forwardauth_no_such_database" does not exist on {where}: create it'
    )
    other = run({**env, "FORWARDAUTH_DATABASE_URL": MISSING_DB}, "user", "list")
    assert assert_one_line_error(other, 2) == line


def test_a_login_path_without_slash_stops_serve_with_the_fix(env: dict[str, str]) -> None:
    result = run_serve({**env, "FORWARDAUTH_LOGIN_URL": "forwardauth/login"})
    assert "a path needs a leading / (/forwardauth/login)" in assert_one_line_error(result, 2)


@contextlib.contextmanager
def unreadable_folder(path: Path) -> Iterator[list[str]]:
    """``path`` with mode 000, and the command prefix that makes it unreadable even for root.

    Root reads anything through its DAC capabilities: the command runs without them.
    """
    path.mkdir(parents=True)
    path.chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no way to make a folder unreadable")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    try:
        yield prefix
    finally:
        path.chmod(0o700)


def test_an_unreadable_keys_folder_is_named_not_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    keys = tmp_path / "locked-keys"
    with unreadable_folder(keys) as prefix:
        locked = {**os.environ, **env, "FORWARDAUTH_KEYS_DIR": str(keys), "FORWARDAUTH_PORT": str(free_port())}
        serve = subprocess.run(
            [*prefix, sys.executable, "-m", "forwardauth", "serve"],
            capture_output=True,
            text=True,
            env=locked,
            timeout=30,
        )
        check = subprocess.run(
            [*prefix, sys.executable, "-m", "forwardauth", "config", "check"],
            capture_output=True,
            text=True,
            env=locked,
            timeout=30,
        )
    line = assert_one_line_error(serve, 2)
    assert line.startswith(
        f"forwardauth: configuration error: FORWARDAUTH_KEYS_DIR: cannot use {keys} (Permission denied"
    )
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert f"forwardauth: FORWARDAUTH_KEYS_DIR: cannot use {keys} (Permission denied" in check.stderr
