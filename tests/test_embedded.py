"""The embedded default: no store URLs, so forwardauth runs its own PostgreSQL and Redis, and stops them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from . import http
from .localuser import as_nobody, attempt, connect_unix, needs_root, tcp_listeners
from .support import FAST_ARGON2, Service, free_port, wait_until

pytestmark = pytest.mark.servers  # they start embedded PostgreSQL and Redis

DEMO_PASSWORD = "embedded demo password"


def embedded_env(monkeypatch: pytest.MonkeyPatch, data: Path) -> dict[str, str]:
    """The environment of a forwardauth with no store URLs: its embedded stores under ``data``
    (the URLs are also removed from os.environ, where Service and run() start from)."""
    for name in ("FORWARDAUTH_DATABASE_URL", "FORWARDAUTH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return {
        "FORWARDAUTH_DATA_DIR": str(data),
        "FORWARDAUTH_DEMO_PASSWORD": DEMO_PASSWORD,
        "FORWARDAUTH_COOKIE_SECURE": "false",
        **FAST_ARGON2,
    }


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
    env = embedded_env(monkeypatch, data)

    demo = subprocess.run(
        [sys.executable, "-m", "forwardauth", "user", "demo"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "demo user created" in demo.stdout
    wait_until(lambda: not processes_using(data), timeout=30, what="the CLI's embedded PostgreSQL to stop")

    svc = Service(env, free_port(), workers=1, cwd=tmp_path)
    try:
        svc.wait_ready(timeout=60)  # polls /readyz until 200
        running = processes_using(data).values()
        assert any("postgres" in cmdline for cmdline in running)
        [running_redis] = [cmdline for cmdline in running if "redis-server" in cmdline]
        assert tcp_listeners(processes_using(data)) == []  # Unix sockets only, in a 0700 folder
        assert {p.name for p in (data / "run").iterdir() if p.is_socket()} == {".s.PGSQL.5432", "redis.sock"}
        assert stat.S_IMODE((data / "run").stat().st_mode) == 0o700

        tokens = http.login(svc.base, "demo", DEMO_PASSWORD)
        assert tokens.status == 200, tokens.text
        bearer = http.bearer(tokens.json()["access_token"])
        answer = http.get(svc.base + "/auth", bearer)
        assert answer.status == 200, answer.text
        assert answer.headers["X-Auth-User"] == "demo"

        # A command run beside the server shares its embedded stores, never starts its own.
        revoke = subprocess.run(
            [sys.executable, "-m", "forwardauth", "user", "revoke", "demo"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert revoke.returncode == 0 and "revoked 1 session(s)" in revoke.stdout, revoke.stderr
        wait_until(lambda: http.get(svc.base + "/auth", bearer).status == 401, timeout=5, what="the revocation")
        assert http.get(svc.base + "/readyz").status == 200
        assert list(processes_using(data).values()).count(running_redis) == 1
    finally:
        status = svc.stop(timeout=30)  # SIGTERM
    assert status == 0

    wait_until(lambda: not processes_using(data), timeout=30, what="the embedded PostgreSQL and Redis to stop")


def modes_above(path: Path) -> dict[str, int]:
    return {str(parent): os.stat(parent).st_mode for parent in path.parents}


def test_a_long_data_path_still_gives_other_users_no_way_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ~85 characters the sockets once fell back to TCP (Redis) or a shared runtime folder
    (PostgreSQL), both without a password, and PostgreSQL's wheel chmodded every folder above
    the data folder: here another local user reaches neither server and no folder, and nothing
    above the data folder changes, even under umask 000."""
    needs_root()
    (tmp_path / "parent").mkdir(mode=0o700)
    data = tmp_path / "parent" / ("p" * 60) / ("q" * 40) / "data"
    assert len(str(data / "run" / ".s.PGSQL.5432")) > 107
    before = modes_above(tmp_path / "parent" / "x")
    env = embedded_env(monkeypatch, data)
    demo = subprocess.run(
        [sys.executable, "-m", "forwardauth", "user", "demo"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        umask=0,
    )
    assert demo.returncode == 0, demo.stderr
    wait_until(lambda: not processes_using(data), timeout=30, what="the CLI's embedded PostgreSQL to stop")

    old_umask = os.umask(0)  # the service inherits it
    try:
        svc = Service(env, free_port(), workers=1, cwd=tmp_path)
    finally:
        os.umask(old_umask)
    try:
        svc.wait_ready(timeout=60)
        tokens = http.login(svc.base, "demo", DEMO_PASSWORD)
        assert tokens.status == 200, tokens.text

        sockets = Path((data / "run.path").read_text())
        assert sockets.parent == Path("/tmp") and len(str(sockets / ".s.PGSQL.5432")) <= 107
        made = [sockets, data, data.parent, data.parent.parent, data / "postgres", data / "redis", data / "keys"]
        for folder in made:
            info = os.stat(folder)
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid()), folder
        assert sorted(p.name for p in sockets.iterdir() if p.is_socket()) == [".s.PGSQL.5432", "redis.sock"]
        running = processes_using(data)
        assert any("redis-server" in c for c in running.values()) and any("postgres" in c for c in running.values())
        assert tcp_listeners(running) == []  # Unix sockets only

        def intrude() -> dict[str, str]:
            return {
                "redis": attempt(lambda: connect_unix(str(sockets / "redis.sock"))),
                "postgres": attempt(lambda: connect_unix(str(sockets / ".s.PGSQL.5432"))),
                "sockets": attempt(lambda: os.listdir(sockets)),
                "data": attempt(lambda: os.listdir(data)),
                "keys": attempt(lambda: os.listdir(data / "keys")),
            }

        assert as_nobody(intrude) == dict.fromkeys(("redis", "postgres", "sockets", "data", "keys"), "PermissionError")
    finally:
        assert svc.stop(timeout=30) == 0
    wait_until(lambda: not processes_using(data), timeout=30, what="the embedded PostgreSQL and Redis to stop")
    assert modes_above(tmp_path / "parent" / "x") == before
    assert not sockets.exists() and not (data / "run.path").exists()  # nothing left in /tmp


def test_a_data_folder_other_users_can_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who can write the data folder can swap what the stores and keys read: refuse to start."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    for name in ("FORWARDAUTH_DATABASE_URL", "FORWARDAUTH_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", "migrate"],
        env={**os.environ, "FORWARDAUTH_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "FORWARDAUTH_DATA_DIR" in result.stderr and "writable by other users" in result.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o777  # told, not changed
    assert not processes_using(data)
