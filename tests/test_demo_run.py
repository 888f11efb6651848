"""`make run` as an operator meets it: `forwardauth demo` shows the demo password plainly once the
stack answers, says how to reset it later, and Ctrl-C stops everything with exit 0 and no traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import http
from .support import REDIS_URL, free_port, require_program, stop_process, throwaway_database, wait_until
from .test_cli import run

BANNER_END = "Ctrl-C stops everything)"


@pytest.fixture
def demo_env(redis_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A database of its own (no demo user yet), the run's Redis prefix, fast Argon2."""
    with throwaway_database("forwardauth_demo") as url:
        yield {
            "FORWARDAUTH_DATABASE_URL": url,
            "FORWARDAUTH_REDIS_URL": REDIS_URL,
            "FORWARDAUTH_REDIS_PREFIX": redis_prefix + "demo:",
            "FORWARDAUTH_DATA_DIR": str(tmp_path / "data"),
            "FORWARDAUTH_WORKERS": "1",
            "FORWARDAUTH_ARGON2_TIME_COST": "1",
            "FORWARDAUTH_ARGON2_MEMORY_COST": "1024",
            "FORWARDAUTH_ARGON2_PARALLELISM": "1",
        }


def listening(port: int) -> bool:
    try:
        http.get(f"http://127.0.0.1:{port}/", {})
    except OSError:
        return False
    return True


def test_demo_shows_the_password_then_ctrl_c_stops_all_cleanly(demo_env: dict[str, str], tmp_path: Path) -> None:
    require_program("nginx")
    port = free_port()
    out = tmp_path / "demo.out"
    with open(out, "wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "forwardauth", "demo", "--proxy", "nginx", "--port", str(port)],
            env={**os.environ, **demo_env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: BANNER_END in out.read_text(), timeout=90, what="the demo's banner")
        text = out.read_text()
        found = re.search(r"^demo user created: username demo, password (\S+)$", text, re.MULTILINE)
        assert found, text  # a line of its own, not inside a log record
        inner = re.search(r"forwardauth itself: http://127.0.0.1:(\d+);", text)
        assert inner
        forwardauth_port = int(inner.group(1))
        login = http.login(f"http://127.0.0.1:{port}/forwardauth", "demo", found.group(1))
        assert login.status == 200, login.text

        os.killpg(demo.pid, signal.SIGINT)  # the terminal's Ctrl-C
        assert demo.wait(timeout=60) == 0
    finally:
        stop_process(demo)
    text = out.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert not listening(port) and not listening(forwardauth_port)  # the proxy and forwardauth stopped too

    again = run(demo_env, "user", "demo")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        "demo user 'demo' exists (its password was shown when it was created; "
        "to set a new one: forwardauth user passwd demo)"
    )


def test_demo_on_a_port_in_use_says_so(demo_env: dict[str, str]) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run(demo_env, "demo", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"forwardauth: port {port} is already in use (another `make run`?): stop it, "
        "or choose another port with forwardauth demo --port P"
    )
