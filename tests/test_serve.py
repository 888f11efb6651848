"""``forwardauth serve``: several workers, the acceptance flow, graceful stop, worker restart."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from forwardauth import users

from .conftest import PASSWORD, Service, wait_until


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def test_login_auth_logout_through_two_workers(
    service: Callable[..., Service], make_user: Callable[..., users.User]
) -> None:
    svc = service(workers=2)
    assert httpx.get(svc.base + "/healthz").status_code == 200
    ready = httpx.get(svc.base + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "postgres": "ok"}
    user = make_user()
    token = httpx.post(svc.base + "/login", json={"username": user.username, "password": PASSWORD}).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    for _ in range(10):  # whichever worker answers
        response = httpx.get(svc.base + "/auth", headers=bearer)
        assert response.status_code == 200 and response.headers["X-Auth-User"] == user.username
    assert httpx.post(svc.base + "/logout", headers=bearer).json() == {"logged_out": True}
    for _ in range(10):
        assert httpx.get(svc.base + "/auth", headers=bearer).status_code == 401


def test_sigterm_stops_everything(service: Callable[..., Service]) -> None:
    svc = service(workers=2)
    workers = children(svc.process.pid)
    assert len(workers) >= 2
    os.kill(svc.process.pid, signal.SIGTERM)
    assert svc.process.wait(timeout=30) == 0

    def all_gone() -> bool:
        return not any(Path(f"/proc/{w}").exists() and "forwardauth" in Path(f"/proc/{w}/cmdline").read_text()
                       for w in workers)

    wait_until(all_gone, timeout=20, what="workers to exit")


def test_a_dead_worker_is_replaced(service: Callable[..., Service]) -> None:
    svc = service(workers=2)
    before = children(svc.process.pid)
    victim = max(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(svc.process.pid) - before) >= 1, timeout=30, what="a replacement worker")
    wait_until(lambda: httpx.get(svc.base + "/readyz").status_code == 200, timeout=30, what="readiness")
    for _ in range(10):
        assert httpx.get(svc.base + "/healthz").status_code == 200


def test_bad_configuration_stops_the_start(env: dict[str, str], tmp_path: Path) -> None:
    import sys

    result = subprocess.run([sys.executable, "-m", "forwardauth", "serve"], capture_output=True, text=True,
                            env={**os.environ, **env, "FORWARDAUTH_ACCESS_TTL": "soon"}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("forwardauth: configuration error: FORWARDAUTH_ACCESS_TTL: 'soon' is not a "
                                     "duration (use e.g. 900, 15m, 12h, 14d)")
