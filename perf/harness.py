"""What every perf module shares: free ports, processes in their own group, wrk with the Lua
scripts' JSON summary, and the workers' CPU time and memory read from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

PERF = Path(__file__).resolve().parent
ADMIN_URL = os.environ.get("FORWARDAUTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FORWARDAUTH_TEST_REDIS", "redis://127.0.0.1:6379/0")
USERS = 1000
WORKERS = os.cpu_count() or 2

Started = AbstractContextManager[None]  # a server up on its port; leaving it stops the server
Starter = Callable[[int], Started]  # starts a server on the port given, returns once it answers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answer_of(url: str) -> int | None:
    """The status ``url`` answers with (None while nothing listens)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def wait_http(url: str, timeout: float = 30, status: int | None = None) -> None:
    """Until ``url`` answers (with ``status``, when given: a proxy answers 404 or 502 before its
    routes and upstreams are in place)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = answer_of(url)
        if answer is not None and (status is None or answer == status):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready (last answer {answer_of(url)}, wanted {status or 'any'})")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        if log:
            out.close()  # type: ignore[union-attr]


def pinned(cpus: str | None) -> list[str]:
    """The command prefix that keeps a program (and its children) on ``cpus`` ("0", "1"...)."""
    return ["taskset", "-c", cpus] if cpus else []


class Running(AbstractContextManager[None]):
    """A server already up: ``with`` it, or call ``__exit__``, to stop it."""

    def __init__(self, ctx: AbstractContextManager[None]) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._ctx.__exit__(None, None, None)


def started(args: list[str], env: dict[str, str] | None, log: Path, ready: str, status: int | None = None) -> Started:
    """``process`` running, once ``ready`` answers (with ``status``); stopped again if it never does."""
    ctx = process(args, env, log)
    ctx.__enter__()
    try:
        wait_http(ready, status=status)
    except BaseException:
        ctx.__exit__(None, None, None)
        raise
    return Running(ctx)


def forwardauth(work: Path, env: dict[str, str], workers: int, cpus: str | None = None) -> Starter:
    """``forwardauth serve`` with ``env`` and ``workers`` workers (on ``cpus`` only, when given)."""

    def start(port: int) -> Started:
        full = {**env, "FORWARDAUTH_PORT": str(port), "FORWARDAUTH_WORKERS": str(workers)}
        args = [*pinned(cpus), sys.executable, "-m", "forwardauth", "serve"]
        return started(args, full, work / f"fa-{port}.log", f"http://127.0.0.1:{port}/readyz")

    return start


def wrk(
    url: str,
    tokens: Path | None,
    seconds: int,
    connections: int,
    script: str = "auth.lua",
    extra_env: dict[str, str] | None = None,
    cpus: str | None = None,
) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "TOKENS"} | (extra_env or {})
    if tokens is not None:
        env["TOKENS"] = str(tokens)
    out = subprocess.run(
        [*pinned(cpus), "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(PERF / script), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not match:
        raise RuntimeError(out)
    return dict(json.loads(match.group(1)))


def worker_pids(port: int) -> list[int]:
    """The forwardauth worker processes serving ``port`` (found by their environment in /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"spawn_main" in cmdline and f"FORWARDAUTH_PORT={port}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def worker_rss_mb(port: int) -> list[float]:
    """RSS of each forwardauth worker serving ``port``."""
    sizes = []
    for pid in worker_pids(port):
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return sizes


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")
