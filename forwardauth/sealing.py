"""Sealing secrets with keys kept in files beside the signing keys: TOTP secrets stored in PostgreSQL,
and the WebAuthn challenges a browser holds (accounts.challenges).

A copy of the database (a backup, a dump, a replica) then holds nothing usable on its own: each
secret is AES-256-GCM encrypted under a key from ``<FORWARDAUTH_KEYS_DIR>/sealing``, with the
owner's user id as associated data, so a sealed value copied to another user's row does not open.

A blob is ``version (1) | key id (8) | nonce (12) | ciphertext and tag``. The key id says which key
sealed it, so after a rotation (``rotate_sealing_key``) old blobs still open until they are
re-sealed and the old key file removed. Keys are checked as signing keys are (see safefiles):
files 0600 owned by this user in a folder no other user can write. A worker reads the folder again
when it changed (one ``stat`` before sealing, or for a blob naming a key it does not know): a key
rotated by the command line is picked up without a restart, and a forged key id costs a stat.

The signing-key loader reads only ``*.pem`` files directly in the key folder, so this folder and
its ``*.key`` files are never taken for signing keys.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from forwardauth.config import Settings
from forwardauth.safefiles import UnsafePath, check_dir, private_dir, read_checked, write_private

VARIABLE = "FORWARDAUTH_KEYS_DIR"  # named in every refusal
FOLDER = "sealing"
SUFFIX = ".key"
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, random per seal (NIST SP 800-38D 8.2.2)
ID_BYTES = 8
VERSION = b"\x01"
HEADER = len(VERSION) + ID_BYTES
MAX_KEY_FILE = 1024
_DOMAIN = b"forwardauth sealed v1\x00"  # bound into the associated data with the header


class SealError(Exception):
    """A blob that does not open (tampered, another user's, unknown key), or keys that cannot load."""


@dataclass(frozen=True, slots=True)
class SealingKey:
    id: str  # hex of the 8 bytes every blob sealed with it starts with (after the version)
    path: Path
    created: float  # from the file name (or its mtime for a file added by hand)


def sealing_directory(settings: Settings) -> Path:
    return settings.key_directory / FOLDER


def _key_id(key: bytes) -> bytes:
    """Derived from the key, so a renamed or copied file keeps opening what it sealed."""
    return hashlib.sha256(b"forwardauth sealing key id\x00" + key).digest()[:ID_BYTES]


def _created(path: Path) -> float:
    try:
        stamp = dt.datetime.strptime(path.name.split("-", 1)[0], STAMP_FORMAT)
        return stamp.replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return path.stat().st_mtime


def _read_key(path: Path) -> bytes:
    try:
        text = read_checked(path, VARIABLE, secret=True, max_bytes=MAX_KEY_FILE)
        key = base64.urlsafe_b64decode(text.strip())
    except UnsafePath as exc:
        raise SealError(str(exc)) from None
    except ValueError:
        raise SealError(f"{VARIABLE} {path}: not a base64 sealing key") from None
    if len(key) != KEY_BYTES:
        raise SealError(f"{VARIABLE} {path}: a sealing key has {KEY_BYTES} bytes, not {len(key)}")
    return key


def _load_keys(directory: Path) -> list[tuple[SealingKey, bytes]]:
    """Every key file of the folder, oldest first; any file refused refuses the folder."""
    if not directory.is_dir():
        return []
    try:
        check_dir(directory, VARIABLE)
    except UnsafePath as exc:
        raise SealError(str(exc)) from None
    found = []
    for path in sorted(directory.glob("*" + SUFFIX), key=_created):
        key = _read_key(path)
        found.append((SealingKey(_key_id(key).hex(), path, _created(path)), key))
    return found


def sealing_keys(settings: Settings) -> list[SealingKey]:
    """The sealing keys on disk, oldest first (the last one seals)."""
    return [info for info, _ in _load_keys(sealing_directory(settings))]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Create the folder (0700) and serialise key creation between processes starting at once."""
    try:
        private_dir(directory)
        check_dir(directory, VARIABLE)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except UnsafePath as exc:
        raise SealError(str(exc)) from None
    except OSError as exc:
        raise SealError(f"{VARIABLE} {directory}: cannot use the sealing key folder ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_key(directory: Path) -> str:
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    kid = _key_id(key).hex()
    stamp = dt.datetime.now(dt.UTC).strftime(STAMP_FORMAT)
    write_private(directory / f"{stamp}-{kid}{SUFFIX}", base64.urlsafe_b64encode(key) + b"\n", sync=True)
    return kid


def rotate_sealing_key(settings: Settings) -> str:
    """Add a new sealing key, which seals from now on; the older ones keep opening. Its id."""
    directory = sealing_directory(settings)
    with _locked(directory):
        return _write_key(directory)


class Sealer:
    """Seals and opens with the keys of one folder; the newest key seals."""

    def __init__(self, directory: Path, create: bool = True) -> None:
        self.directory = directory
        self._create = create
        self._lock = threading.Lock()
        self._keys: dict[bytes, AESGCM] = {}
        self._current: bytes | None = None
        self._seen: int | None = None  # the folder's mtime when last read

    def load(self) -> Sealer:
        """Read the folder (making the first key when there is none and ``create``)."""
        with self._lock:
            self._reload(force=True)
        return self

    def _reload(self, force: bool) -> None:
        try:
            seen: int | None = os.stat(self.directory).st_mtime_ns
        except OSError:
            seen = None
        if not force and self._current is not None and seen == self._seen:
            return
        found = _load_keys(self.directory)
        if not found and self._create:
            with _locked(self.directory):
                found = _load_keys(self.directory)
                if not found:
                    _write_key(self.directory)
                    found = _load_keys(self.directory)
            seen = os.stat(self.directory).st_mtime_ns
        if not found:
            raise SealError(f"{VARIABLE} {self.directory}: no sealing key")
        self._keys = {bytes.fromhex(info.id): AESGCM(key) for info, key in found}
        self._current = bytes.fromhex(found[-1][0].id)
        self._seen = seen

    @property
    def current_id(self) -> str:
        with self._lock:
            self._reload(force=False)
            assert self._current is not None
            return self._current.hex()

    def seal(self, plaintext: bytes, aad: str | bytes) -> bytes:
        """``plaintext`` sealed with the newest key, opening only with the same ``aad``."""
        with self._lock:
            self._reload(force=False)  # a stat: a key rotated meanwhile seals from now on
            assert self._current is not None
            kid, cipher = self._current, self._keys[self._current]
        header = VERSION + kid
        nonce = secrets.token_bytes(NONCE_BYTES)
        return header + nonce + cipher.encrypt(nonce, plaintext, _associated(header, aad))

    def open(self, blob: bytes, aad: str | bytes) -> bytes:
        """The plaintext of ``blob`` sealed with ``aad``; SealError for anything else."""
        if len(blob) < HEADER + NONCE_BYTES + 16 or blob[:1] != VERSION:
            raise SealError("not a sealed value")
        header, kid = blob[:HEADER], blob[1:HEADER]
        with self._lock:
            if kid not in self._keys:  # sealed by a key added since (a rotation), if the folder changed:
                self._reload(force=False)  # a stat, so forged ids cost no reading of key files
            cipher = self._keys.get(kid)
        if cipher is None:
            raise SealError(f"sealed with key {kid.hex()}, which is not in {self.directory}")
        nonce = blob[HEADER : HEADER + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, blob[HEADER + NONCE_BYTES :], _associated(header, aad))
        except InvalidTag:
            raise SealError("sealed value does not open: altered, or not this user's") from None

    @staticmethod
    def sealed_with(blob: bytes) -> str | None:
        """The id of the key a blob names (to tell which still need re-sealing), if it is one."""
        return blob[1:HEADER].hex() if len(blob) > HEADER and blob[:1] == VERSION else None


def _associated(header: bytes, aad: str | bytes) -> bytes:
    return _DOMAIN + header + (aad.encode() if isinstance(aad, str) else aad)


def load_sealer(settings: Settings, create: bool = True) -> Sealer:
    """The sealer of ``settings``' key folder, its keys read now (the first made if ``create``)."""
    return Sealer(sealing_directory(settings), create).load()
