"""Signing keys: loaded from (or generated into) a folder of PEM files, one key per file.

Each key is pinned to one algorithm by its type (RSA -> RS256, P-256 -> ES256, Ed25519 -> EdDSA), as RFC 8725
asks, so a token's ``alg`` header is never what chooses how it is checked. The newest key of the
configured algorithm signs; every key in the folder verifies, which is what makes rotation work:
add a key, and tokens signed by the previous one stay valid until they expire.

A key file is trusted as OpenSSH trusts a private key: owned by the service's user, mode 0600 or
stricter, in a folder no other user can write or replace (see safefiles). A folder holding any
file the service refuses (unsafe, corrupt, of an unsupported type) is refused whole, at start
with an error naming FORWARDAUTH_KEYS_DIR, on reload with a logged error while the workers keep
the keys they have; ``forwardauth keys list`` and ``keys rotate`` report the same refusals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from forwardauth.config import Settings
from forwardauth.safefiles import Throttle, UnsafePath, check_dir, private_dir, read_checked

log = logging.getLogger("forwardauth.keys")

VARIABLE = "FORWARDAUTH_KEYS_DIR"  # named in every refusal
RSA_BITS = 2048
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
MAX_KEY_BYTES = 64 * 1024
# How often workers look for new or removed key files.
RELOAD_SECONDS = 2.0
# How often a worker records the key it signs with (a marker file's mtime; see prunable).
MARK_SECONDS = RELOAD_SECONDS
MARKER_PREFIX = ".signed-"
REPORT_SECONDS = 60.0  # the same refusal is logged at most this often
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyFileError(Exception):
    """A key file is unreadable or of an unsupported type."""


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    alg: str
    signing: Any = field(repr=False)  # private key object, or the HMAC secret bytes
    verifying: Any = field(repr=False)  # public key object, or the HMAC secret bytes
    public_jwk: dict[str, str] | None = None  # None for HMAC keys: never published


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The key that signs and every key that verifies, by ``kid``."""

    current: Key
    by_kid: dict[str, Key]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.public_jwk for k in self.by_kid.values() if k.public_jwk is not None]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint: SHA-256 of the required members in canonical JSON."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def key_from_private(private: PrivateKey) -> Key:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        alg, jwk = "RS256", RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        alg, jwk = "ES256", ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        alg, jwk = "EdDSA", OKPAlgorithm.to_jwk(public, as_dict=True)
    kid = _thumbprint(jwk)
    # `use` says what the key is for; `key_ops` (PyJWT adds it) should not accompany it (RFC 7517 4.3).
    published = {k: str(v) for k, v in jwk.items() if k != "key_ops"} | {"kid": kid, "alg": alg, "use": "sig"}
    return Key(kid=kid, alg=alg, signing=private, verifying=public, public_jwk=published)


def hmac_key(secret: str) -> Key:
    """An HS256 key; its kid is derived from the secret without revealing it."""
    raw = secret.encode()
    kid = "hs-" + hmac.new(raw, b"forwardauth key id", hashlib.sha256).hexdigest()[:16]
    return Key(kid=kid, alg="HS256", signing=raw, verifying=raw)


def generate_private(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyFileError(f"cannot generate a key for {alg}")


def _load_pem(path: Path) -> Key:
    """One key file, as the service loads it: checked like an OpenSSH private key, then parsed."""
    try:
        data = read_checked(path, VARIABLE, secret=True, max_bytes=MAX_KEY_BYTES)
    except UnsafePath as exc:
        raise KeyFileError(str(exc)) from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{VARIABLE} {path}: not a readable unencrypted PEM private key ({exc})") from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and not isinstance(private.curve, ec.SECP256R1):
        raise KeyFileError(f"{VARIABLE} {path}: only P-256 EC keys are supported (ES256), not {private.curve.name}")
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{VARIABLE} {path}: only RSA, P-256 and Ed25519 keys are supported")
    return key_from_private(private)


def check_folder(directory: Path) -> None:
    """Refuse a key folder another user owns or can write, or could replace (see safefiles)."""
    try:
        check_dir(directory, VARIABLE)
    except UnsafePath as exc:
        raise KeyFileError(str(exc)) from None


def key_files(directory: Path) -> list[Path]:
    """Key files oldest first (their names start with the creation time)."""
    return sorted(directory.glob("*.pem"), key=created_at) if directory.is_dir() else []


def created_at(path: Path) -> float:
    """When a key was made: from its name, or the file's mtime for keys added by hand."""
    try:
        stamp = dt.datetime.strptime(path.name.split("-", 1)[0], STAMP_FORMAT)
        return stamp.replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return path.stat().st_mtime


def arrived(path: Path) -> float:
    """When a key file came into this folder: its ctime, which writing, copying, moving in or
    changing a file sets and nothing can set back (unlike the name, or an mtime ``cp -p`` keeps)."""
    info = path.stat()
    return max(info.st_ctime, info.st_mtime)


@dataclass(frozen=True, slots=True)
class Inspection:
    """Every key file of a folder: the keys the service can load, and why it refuses the others."""

    keys: list[tuple[Path, Key]]
    problems: list[str]


def inspect(directory: Path) -> Inspection:
    """Each file through the service's own loader; the folder, if any, must pass ``check_folder``."""
    if not os.path.lexists(directory):
        return Inspection([], [])
    check_folder(directory)
    keys, problems = [], []
    for path in key_files(directory):
        try:
            keys.append((path, _load_pem(path)))
        except KeyFileError as exc:
            problems.append(str(exc))
    return Inspection(keys, problems)


def refusal(problems: list[str]) -> str:
    return f"{len(problems)} key file(s) refused: " + "; ".join(problems)


# --- which key signed when: what prune relies on --------------------------------------------


def marker(directory: Path, kid: str) -> Path:
    return directory / f"{MARKER_PREFIX}{kid}"


def mark_signing(directory: Path, kid: str) -> None:
    """Record that a worker signs with ``kid`` now: the marker's mtime."""
    path = marker(directory, kid)
    try:
        os.utime(path, follow_symlinks=False)
    except FileNotFoundError:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)


def last_signed(directory: Path, kid: str) -> float | None:
    """The last time a worker recorded signing with ``kid``, if ever."""
    try:
        return os.lstat(marker(directory, kid)).st_mtime
    except FileNotFoundError:
        return None


async def record_signing(directory: Path, current: Callable[[], Key]) -> None:
    """Every MARK_SECONDS until cancelled, touch the marker of the key this worker signs with.

    A worker that cannot reload keeps signing with its key, and its marker keeps that key from
    being pruned. A read-only folder cannot be marked: it is said once, and prune (which cannot
    run there either) then has only the files' times.
    """
    failing = False
    while True:
        try:
            await asyncio.to_thread(mark_signing, directory, current().kid)
            failing = False
        except OSError as exc:
            if not failing:
                log.warning("%s %s: which key signs is not recorded (%s)", VARIABLE, directory, exc.strerror)
            failing = True
        await asyncio.sleep(MARK_SECONDS)


def prunable(directory: Path, alg: str, retire_after: float, now: float | None = None) -> list[Path]:
    """Keys no live token can need: none signed, or could have signed, in the last ``retire_after`` seconds.

    A key stops signing once a newer key of the signing algorithm is in the folder, dated by when
    that file arrived here (never by its name: a key generated elsewhere long ago and copied in
    signs from the day it is copied). And a key some worker recorded signing with within
    ``retire_after`` stays, whatever the files say. The newest key of the signing algorithm is
    never prunable. A key file the service cannot load stops the whole prune (KeyFileError).
    """
    now = time.time() if now is None else now
    loaded = [(path, _load_pem(path)) for path in key_files(directory)]
    signing = [index for index, (_, key) in enumerate(loaded) if key.alg == alg]
    if not signing:
        return []
    newest_kid = loaded[signing[-1]][1].kid
    result = []
    for index, (path, key) in enumerate(loaded):
        if key.kid == newest_kid:
            continue
        successors = [arrived(loaded[i][0]) for i in signing if i > index]
        used = last_signed(directory, key.kid)
        if successors and min(successors) + retire_after < now and (used is None or used + retire_after < now):
            result.append(path)
    return result


def prune(directory: Path, alg: str, retire_after: float) -> list[Path]:
    with _locked(directory):
        removed = prunable(directory, alg, retire_after)
        for path in removed:
            path.unlink()
        kept = {key.kid for _, key in inspect(directory).keys}
        for stale in directory.glob(MARKER_PREFIX + "*"):
            if stale.name.removeprefix(MARKER_PREFIX) not in kept:
                stale.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise key creation between processes starting at once.

    The folder (and any missing folder above it) is created 0700; an existing one must pass
    ``check_folder``. A read-only folder (keys mounted read-only, as shared keys often are) cannot
    be written anyway, so it is read without the lock.
    """
    try:
        private_dir(directory)
    except OSError as exc:
        raise KeyFileError(f"{VARIABLE} {directory}: cannot create the key folder ({exc.strerror})") from None
    check_folder(directory)
    try:
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise KeyFileError(f"{VARIABLE} {directory}: cannot use the key folder ({exc.strerror})") from None
        yield
        return
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)  # whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_new_key(directory: Path, alg: str) -> Key:
    """Generate a key and write it with mode 0600; it becomes the signing key."""
    private = generate_private(alg)
    key = key_from_private(private)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stamp = dt.datetime.now(dt.UTC).strftime(STAMP_FORMAT)
    path = directory / f"{stamp}-{key.kid[:12]}.pem"
    # Written under a temporary name, then renamed: a worker never reads half a key.
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, 0o600)  # whatever the umask
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    partial.rename(path)
    return key


def rotate(directory: Path, alg: str) -> Key:
    """Add a new signing key; older keys keep verifying."""
    with _locked(directory):
        return write_new_key(directory, alg)


def load_ring(settings: Settings, create: bool = True) -> KeyRing:
    """The key ring for ``settings``; creates the first key when the folder has none.

    Every key file must load: one the service refuses (unsafe ownership or mode, unsupported
    type, corrupt) refuses the whole folder, so a worker keeps the keys it has (see reload_ring).
    """
    if settings.signing_alg == "HS256":
        assert settings.hmac_secret is not None  # checked by config
        key = hmac_key(settings.hmac_secret)
        return KeyRing(current=key, by_kid={key.kid: key})
    directory = settings.key_directory
    with _locked(directory):
        found = inspect(directory)
        if found.problems:
            raise KeyFileError(refusal(found.problems))
        keys = [key for _, key in found.keys]
        usable = [k for k in keys if k.alg == settings.signing_alg]
        if not usable:
            if not create:
                raise KeyFileError(f"{VARIABLE} {directory}: no {settings.signing_alg} key")
            new = write_new_key(directory, settings.signing_alg)
            keys.append(new)
            usable.append(new)
    return KeyRing(current=usable[-1], by_kid={k.kid: k for k in keys})


REFUSED = Throttle(REPORT_SECONDS)


def reload_ring(settings: Settings) -> KeyRing | None:
    """The folder's keys again, or None when it is refused: the error is logged (at most once a
    minute for the same error, as the reload is retried every RELOAD_SECONDS)."""
    try:
        return load_ring(settings, create=False)
    except KeyFileError as exc:
        if REFUSED.ready(str(exc)):
            log.error("keys not reloaded, keeping the current ones: %s", exc)
        return None
