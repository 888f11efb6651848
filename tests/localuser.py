"""Another local user, for the tests of what forwardauth's files and sockets let others do.

The tests run as root (in CI); ``as_nobody`` runs a function in a forked child that has become
``nobody`` (no supplementary groups), as a second local user on the same machine would be.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

NOBODY = pwd.getpwnam("nobody")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root (the CI runs the tests as root)")


def as_nobody(fn: Callable[[], object]) -> object:
    """``fn()`` run as nobody in a forked child; its JSON-serialisable result, or the error it raised."""
    needs_root()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os-level calls from here
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            assert os.geteuid() == NOBODY.pw_uid
            payload = json.dumps({"result": fn()}).encode()
        except BaseException as exc:  # reported to the parent, which fails the test
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            status = 1
        with contextlib.suppress(OSError):
            os.write(write_end, payload)
        os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise AssertionError(f"as nobody: {answer['error']}")
    return answer["result"]


def attempt(action: Callable[[], object]) -> str:
    """'ok' when ``action`` succeeds, else the name of the OSError it raised (for as_nobody)."""
    try:
        action()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


def connect_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)


def tcp_listeners(pids: Iterable[int]) -> list[str]:
    """TCP sockets in LISTEN state held by any of ``pids`` (as /proc/net/tcp* lines)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found.append(line.strip())
    return found
