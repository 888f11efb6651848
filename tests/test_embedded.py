"""The embedded default: no store URLs, so forwardauth runs its own PostgreSQL and Redis, and stops them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import http
from .conftest import FAST_ARGON2, Service, free_port, wait_until

DEMO_PASSWORD = "embedded demo password"


def processes_using(directory: Path) -> dict[int, str]:
    """pid -> command line of every process whose command line or working folder is under ``directory``.

    PostgreSQL's backends rename themselves ("postgres: checkpointer") but keep the data folder as cwd.
    """
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:  # exited meanwhile
            continue
        if str(directory) in cmdline or Path(cwd).is_relative_to(directory):
            found[int(proc.name)] = cmdline
    return found


def test_embedded_stores_serve_a_login_and_stop_with_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    for name in ("FORWARDAUTH_DATABASE_URL", "FORWARDAUTH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)  # Service and run() start from os.environ
    env = {"FORWARDAUTH_DATA_DIR": str(data), "FORWARDAUTH_DEMO_PASSWORD": DEMO_PASSWORD,
           "FORWARDAUTH_COOKIE_SECURE": "false", **FAST_ARGON2}

    demo = subprocess.run([sys.executable, "-m", "forwardauth", "user", "demo"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "demo user created" in demo.stdout
    wait_until(lambda: not processes_using(data), timeout=30, what="the CLI's embedded PostgreSQL to stop")

    svc = Service(env, free_port(), workers=1, cwd=tmp_path)
    try:
        svc.wait_ready(timeout=60)  # polls /readyz until 200
        running = processes_using(data).values()
        assert any("postgres" in cmdline for cmdline in running)
        [running_redis] = [cmdline for cmdline in running if "redis-server" in cmdline]

        tokens = http.login(svc.base, "demo", DEMO_PASSWORD)
        assert tokens.status == 200, tokens.text
        bearer = http.bearer(tokens.json()["access_token"])
        answer = http.get(svc.base + "/auth", bearer)
        assert answer.status == 200, answer.text
        assert answer.headers["X-Auth-User"] == "demo"

        # A command run beside the server shares its embedded stores, never starts its own.
        revoke = subprocess.run([sys.executable, "-m", "forwardauth", "user", "revoke", "demo"],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert revoke.returncode == 0 and "revoked 1 session(s)" in revoke.stdout, revoke.stderr
        wait_until(lambda: http.get(svc.base + "/auth", bearer).status == 401, timeout=5, what="the revocation")
        assert http.get(svc.base + "/readyz").status == 200
        assert list(processes_using(data).values()).count(running_redis) == 1
    finally:
        status = svc.stop(timeout=30)  # SIGTERM
    assert status == 0

    wait_until(lambda: not processes_using(data), timeout=30, what="the embedded PostgreSQL and Redis to stop")
