"""Folders and files only forwardauth's own user can change.

What forwardauth creates (the data folder, the key folder, the embedded stores' folders, metric
snapshots) is made 0700 / 0600 whatever the umask, and existing folders above it are never
touched. What it reads back and trusts (signing keys, other workers' metric snapshots) is checked
first, the way OpenSSH checks private keys: a regular file owned by this user, not writable (a
secret: not readable either) by others, in a folder no other user can rearrange. A failed check
raises ``UnsafePath`` saying what to fix.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

PRIVATE = 0o700
SECRET = 0o600


class UnsafePath(Exception):
    """A file or folder another user could have written, or could replace."""


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent as 0700 folders; folders that exist are left alone.

    The mode is set with fchmod after mkdir: a umask can only remove bits, and one of 0777 would
    leave a folder forwardauth itself cannot enter.
    """
    path = path.absolute()
    missing = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE)
        except FileExistsError:  # made meanwhile by another process: checked by the caller
            continue
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, PRIVATE)
        finally:
            os.close(fd)
    return path


def _parents_safe(path: Path, variable: str) -> None:
    """Refuse ``path`` when another user could rename or replace it or a folder above it.

    A folder above may belong to root or to this user, and be writable by others only with the
    sticky bit (as /tmp), where nobody can rename an entry of someone else's.
    """
    uid = os.geteuid()
    chains = {path.absolute().parent, path.resolve().parent}
    for start in chains:
        for parent in (start, *start.parents):
            try:
                info = os.stat(parent)
            except OSError as exc:
                raise UnsafePath(f"{variable} {path}: cannot check {parent} ({exc.strerror})") from None
            if info.st_uid not in (uid, 0):
                raise UnsafePath(
                    f"{variable} {path}: the folder {parent} above it belongs to "
                    f"{owner_name(info.st_uid)}, who could replace it"
                )
            if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
                raise UnsafePath(
                    f"{variable} {path}: the folder {parent} above it is writable by other users "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}), who could replace it"
                )


def check_dir(path: Path, variable: str, private: bool = False, allow_root: bool = True) -> None:
    """Refuse a folder another user owns or can write (``private``: or can enter at all)."""
    uid = os.geteuid()
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnsafePath(f"{variable} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(f"{variable} {path}: not a folder")
    owners = (uid, 0) if allow_root else (uid,)
    if private:
        _refuse_unsafe(info, path, variable, owners, 0o077, "open to", "chmod 700")
    else:
        _refuse_unsafe(info, path, variable, owners, 0o022, "writable by", "chmod go-w")
    _parents_safe(path, variable)


def _refuse_unsafe(
    info: os.stat_result, path: Path, variable: str, owners: tuple[int, ...], mask: int, what: str, fix: str
) -> None:
    """``UnsafePath`` when ``path`` (``info``) has an owner not in ``owners`` (the first is ours) or a
    permission bit of ``mask``; the message says what the others may do and the fix."""
    if info.st_uid not in owners:
        raise UnsafePath(
            f"{variable} {path}: owned by {owner_name(info.st_uid)}, not by forwardauth's user "
            f"{owner_name(owners[0])}; refused"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & mask:
        raise UnsafePath(f"{variable} {path}: {what} other users (mode {mode:04o}); refused: {fix} {path}")


def read_checked(path: Path, variable: str, secret: bool, max_bytes: int) -> bytes:
    """The content of a file this user owns and no other user can write (``secret``: nor read).

    Checked on the open file, so what is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePath(f"{variable} {path}: cannot open ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{variable} {path}: not a regular file; refused")
        if secret:
            _refuse_unsafe(info, path, variable, (os.geteuid(),), 0o077, "readable or writable by", "chmod 600")
        else:
            _refuse_unsafe(info, path, variable, (os.geteuid(),), 0o022, "writable by", "chmod go-w")
        if info.st_size > max_bytes:
            raise UnsafePath(f"{variable} {path}: larger than {max_bytes} bytes; refused")
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise UnsafePath(f"{variable} {path}: larger than {max_bytes} bytes; refused")
        return data
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, sync: bool = False) -> None:
    """Write ``path`` as a 0600 file, under a temporary name first: a reader sees the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, SECRET)
    try:
        os.fchmod(fd, SECRET)  # a file left by an earlier run keeps its mode otherwise
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class Throttle:
    """At most one report per ``seconds`` for each key: a bad file is met again on every reload or scrape."""

    MAX_KEYS = 1024

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
        self._last[key] = now
        return True
