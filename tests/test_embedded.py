"""The embedded default: no store URLs, so forwardauth runs its own PostgreSQL and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import FAST_ARGON2, Service, free_port, wait_until


def processes_using(directory: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in cmdline:
                found.append(cmdline)
    return found


def test_embedded_stores_serve_a_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORWARDAUTH_")}
    env.update({"FORWARDAUTH_DATA_DIR": str(data), "FORWARDAUTH_DEMO_PASSWORD": "embedded demo pw",
                "FORWARDAUTH_COOKIE_SECURE": "false", **FAST_ARGON2})
    demo = subprocess.run([sys.executable, "-m", "forwardauth", "user", "demo"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert demo.returncode == 0 and "demo user created" in demo.stdout, demo.stderr

    svc = Service(env, free_port(), workers=1, cwd=tmp_path)
    try:
        svc.wait_ready(timeout=60)
        assert any("postgres" in p for p in processes_using(data / "postgres"))
        assert any("redis-server" in p for p in processes_using(data / "redis"))
        tokens = httpx.post(svc.base + "/login", json={"username": "demo", "password": "embedded demo pw"}).json()
        auth = httpx.get(svc.base + "/auth", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert auth.status_code == 200 and auth.headers["X-Auth-User"] == "demo"
        assert "embedded PostgreSQL running" in svc.log.read_text()

        # A command run beside the server shares its embedded stores, never starts its own.
        revoke = subprocess.run([sys.executable, "-m", "forwardauth", "user", "revoke", "demo"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert revoke.returncode == 0 and "revoked 1 session(s)" in revoke.stdout, revoke.stderr
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        wait_until(lambda: httpx.get(svc.base + "/auth", headers=bearer).status_code == 401, timeout=5,
                   what="the revocation")
        assert httpx.get(svc.base + "/readyz").status_code == 200
        again = httpx.post(svc.base + "/login", json={"username": "demo", "password": "embedded demo pw"}).json()
        assert httpx.get(svc.base + "/auth",
                         headers={"Authorization": f"Bearer {again['access_token']}"}).status_code == 200
        assert len([p for p in processes_using(data / "redis") if "redis-server" in p]) == 1
    finally:
        assert svc.stop(timeout=30) == 0
    wait_until(lambda: not processes_using(data), timeout=30, what="embedded servers to stop")
