"""``forwardauth serve`` as real processes: workers, the acceptance flow, JWKS, graceful stop, restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from forwardauth.stores import users

from . import http
from .support import PASSWORD, Service, free_port, wait_until
from .test_embedded import processes_using

MakeUser = Callable[..., users.User]


def workers(supervisor: int) -> set[int]:
    """Worker pids: the supervisor's children started by multiprocessing's spawn (not its resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:  # exited meanwhile
                continue
            if b"spawn_main" in cmdline and not is_dead(int(child)):
                found.add(int(child))
    return found


def is_dead(pid: int) -> bool:
    """Exited with every thread (a zombie not yet reaped counts): it holds no socket any more.

    The main thread alone can be a zombie while the others are still exiting with the files.
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # this thread is gone
        if state not in ("Z", "X"):
            return False
    return True


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (matched by inode in /proc/net)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) in sockets:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def wait_for_workers(svc: Service, count: int, without: int | None = None) -> set[int]:
    """Poll until exactly ``count`` live workers listen on the port (none of them ``without``); their pids."""

    def check() -> set[int] | None:
        found = workers(svc.process.pid)
        if len(found) == count and without not in found and all(listens(pid, svc.port) for pid in found):
            return found
        return None

    result: set[int] = wait_until(check, timeout=30, what=f"{count} listening workers")
    return result


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def login_token(base: str, user: users.User) -> str:
    response = http.login(base, user.username, PASSWORD)
    assert response.status == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_two_workers_ready_and_login_auth_logout(service: Callable[..., Service], make_user: MakeUser) -> None:
    svc = service(workers=2)
    wait_for_workers(svc, 2)
    assert http.get(svc.base + "/healthz").status == 200
    ready = http.get(svc.base + "/readyz")
    assert ready.status == 200
    assert ready.json()["ready"] is True
    assert ready.json()["checks"]["postgres"] == "ok" and ready.json()["checks"]["redis"] == "ok"

    user = make_user(roles=("user", "ops"), email="serve@example.test")
    token = login_token(svc.base, user)
    for _ in range(10):  # a new connection each time: both workers answer some
        answer = http.get(svc.base + "/auth", http.bearer(token))
        assert answer.status == 200
        assert answer.headers["X-Auth-User"] == user.username
    logout = http.request("POST", svc.base + "/logout", http.bearer(token))
    assert logout.status == 200 and logout.json() == {"logged_out": True}
    for _ in range(10):  # refused at once, by every worker
        assert http.get(svc.base + "/auth", http.bearer(token)).status == 401


def test_token_verifies_with_another_jose_library(
    service: Callable[..., Service], make_user: MakeUser, env: dict[str, str]
) -> None:
    svc = service()
    user = make_user(roles=("admin", "ops"))
    before = int(time.time())
    token = login_token(svc.base, user)
    after = int(time.time())
    jwks = http.get(svc.base + "/.well-known/jwks.json").json()

    keyset = KeySet.import_key_set(jwks)
    decoded = jwt.decode(token, keyset, algorithms=["RS256"])

    assert decoded.header["alg"] == "RS256" and decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] in {key["kid"] for key in jwks["keys"]}
    claims = decoded.claims
    assert claims["iss"] == env["FORWARDAUTH_ISSUER"]
    assert claims["sub"] == user.id
    assert claims["aud"] == "forwardauth"
    assert before <= claims["iat"] <= after and claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 15 * 60
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["roles"] == ["admin", "ops"]
    assert claims["preferred_username"] == user.username
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": env["FORWARDAUTH_ISSUER"]},
        aud={"essential": True, "value": "forwardauth"},
        sub={"essential": True, "value": user.id},
        exp={"essential": True},
        iat={"essential": True},
        nbf={"essential": True},
        jti={"essential": True},
    ).validate(claims)

    header, payload, signature = token.split(".")
    forged = ".".join((header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")))
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, keyset, algorithms=["RS256"])


def test_sigterm_stops_the_supervisor_and_every_worker(service: Callable[..., Service]) -> None:
    svc = service(workers=2)
    pgid = os.getpgid(svc.process.pid)
    wait_for_workers(svc, 2)

    svc.process.send_signal(signal.SIGTERM)
    assert svc.process.wait(timeout=30) == 0  # workers get the 10 s shutdown timeout

    wait_until(lambda: group_gone(pgid), timeout=20, what="every process of the service's group to exit")
    assert "Traceback" not in svc.log.read_text()  # a clean stop, in the supervisor and the workers


def test_sigterm_while_starting_stops_the_embedded_redis(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORWARDAUTH_REDIS_URL", raising=False)
    data = tmp_path / "data"
    # Redis unset: embedded. PostgreSQL on a closed port: serve waits for it (up to 30 s) before supervising.
    starting = {k: v for k, v in env.items() if k != "FORWARDAUTH_REDIS_URL"}
    starting["FORWARDAUTH_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    svc = Service(starting, free_port(), cwd=tmp_path)
    leaked: dict[int, str] = {}
    try:
        wait_until(lambda: "waiting for PostgreSQL" in svc.log.read_text(), what="serve to wait for PostgreSQL")
        leaked = processes_using(data)
        assert any("redis-server" in cmdline for cmdline in leaked.values())

        svc.process.send_signal(signal.SIGTERM)
        svc.process.wait(timeout=30)
        wait_until(lambda: not processes_using(data), timeout=5, what="the embedded Redis to stop")
    finally:
        svc.stop()
        for pid in leaked:  # what the supervisor left behind (it is in a session of its own)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_replaced_while_the_other_answers(service: Callable[..., Service]) -> None:
    svc = service(workers=2)
    before = wait_for_workers(svc, 2)
    victim, survivor = sorted(before)

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: is_dead(victim), timeout=10, what="the killed worker to die")
    for _ in range(20):  # the surviving worker answers everything meanwhile
        assert http.get(svc.base + "/healthz").status == 200

    after = wait_for_workers(svc, 2, without=victim)
    assert survivor in after and len(after - before) == 1
    wait_until(lambda: http.get(svc.base + "/readyz").status == 200, timeout=30, what="readiness")
    assert svc.process.poll() is None


def test_bad_configuration_stops_the_start(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", "serve"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "FORWARDAUTH_ACCESS_TTL": "soon"},
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "forwardauth: configuration error: FORWARDAUTH_ACCESS_TTL: 'soon' is not a "
        "duration (use e.g. 900, 15m, 12h, 14d)"
    )


# --- a port in use; Ctrl-C -----------------------------------------------------------------------


def serve_on(env: dict[str, str], port: int, **extra: str) -> subprocess.CompletedProcess[str]:
    """``forwardauth serve`` on ``port``, expected to give up by itself within the deadline."""
    return subprocess.run(
        [sys.executable, "-m", "forwardauth", "serve"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "FORWARDAUTH_PORT": str(port), **extra},
        timeout=30,
    )


def test_a_port_held_by_another_program_stops_serve_at_once(env: dict[str, str]) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = serve_on(env, port)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"forwardauth: port {port} is already in use (127.0.0.1:{port}): stop what listens there or choose "
        "another port (FORWARDAUTH_PORT or --port)"
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert "worker" not in result.stderr  # given up before any worker started


def test_a_second_forwardauth_never_shares_the_port(service: Callable[..., Service], env: dict[str, str]) -> None:
    first = service(workers=2)
    before = wait_for_workers(first, 2)
    for host in ("127.0.0.1", "0.0.0.0"):  # the same address, and one that overlaps it
        second = serve_on(env, first.port, FORWARDAUTH_HOST=host, FORWARDAUTH_AUDIENCE="another-configuration")
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"forwardauth: port {first.port} is already used by another forwardauth server on this machine: stop "
            "it first, or choose another port (FORWARDAUTH_PORT or --port)"
        )
    assert wait_for_workers(first, 2) == before  # the first one serves on, alone, undisturbed
    assert http.get(first.base + "/readyz").status == 200
    assert first.process.poll() is None


def test_ctrl_c_stops_serve_cleanly(service: Callable[..., Service]) -> None:
    svc = service(workers=2)
    pgid = os.getpgid(svc.process.pid)
    wait_for_workers(svc, 2)

    os.killpg(pgid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process of the group
    assert svc.process.wait(timeout=30) == 0
    wait_until(lambda: group_gone(pgid), timeout=20, what="every process of the service's group to exit")
    assert "Traceback" not in svc.log.read_text()


def test_ctrl_c_while_workers_start_stops_serve_cleanly(env: dict[str, str], tmp_path: Path) -> None:
    svc = Service(env, free_port(), workers=2, cwd=tmp_path)
    try:
        pgid = os.getpgid(svc.process.pid)
        starting = wait_until(lambda: workers(svc.process.pid), what="the workers to be starting")
        for pid in starting:  # Ctrl-C reaching them while they import: ignored, the supervisor decides
            os.kill(pid, signal.SIGINT)
        assert starting <= wait_for_workers(svc, 2)  # none of them died of it (and was replaced)
        os.killpg(pgid, signal.SIGINT)
        assert svc.process.wait(timeout=30) == 0
        wait_until(lambda: group_gone(pgid), timeout=20, what="every process of the service's group to exit")
    finally:
        svc.stop()
    log = svc.log.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
