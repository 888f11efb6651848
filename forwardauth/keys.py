"""Signing keys: loaded from (or generated into) a folder of PEM files, one key per file.

Each key is pinned to one algorithm by its type (RSA -> RS256, P-256 -> ES256, Ed25519 -> EdDSA), as RFC 8725
asks, so a token's ``alg`` header is never what chooses how it is checked. The newest key of the
configured algorithm signs; every key in the folder verifies, which is what makes rotation work:
add a key, and tokens signed by the previous one stay valid until they expire.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .config import Settings

RSA_BITS = 2048
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
# How often workers look for new or removed key files.
RELOAD_SECONDS = 2.0
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
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a readable unencrypted PEM private key ({exc})") from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and not isinstance(private.curve, ec.SECP256R1):
        raise KeyFileError(f"{path}: only P-256 EC keys are supported (ES256)")
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: only RSA, P-256 and Ed25519 keys are supported")
    return key_from_private(private)


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


def prunable(directory: Path, alg: str, retire_after: float, now: float | None = None) -> list[Path]:
    """Keys no token can still need: replaced more than ``retire_after`` seconds ago.

    A key is replaced when a newer key of the signing algorithm exists; tokens it signed live
    at most the access-token lifetime after that (plus leeway and the workers' reload delay).
    The newest key of the signing algorithm is never prunable.
    """
    now = time.time() if now is None else now
    signing = [p for p in key_files(directory) if _load_pem(p).alg == alg]
    if not signing:
        return []
    newest = signing[-1]
    result = []
    for path in key_files(directory):
        if path == newest:
            continue
        successors = [created_at(s) for s in signing if created_at(s) > created_at(path)]
        if successors and min(successors) + retire_after < now:
            result.append(path)
    return result


def prune(directory: Path, alg: str, retire_after: float) -> list[Path]:
    with _locked(directory):
        removed = prunable(directory, alg, retire_after)
        for path in removed:
            path.unlink()
    return removed


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise key creation between processes starting at once.

    A read-only folder (keys mounted read-only, as shared keys often are) cannot be written
    anyway, so it is read without the lock.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(directory / ".lock", "w")  # noqa: SIM115 (closed below)
    except OSError as exc:
        if not directory.is_dir() or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise KeyFileError(f"{directory}: cannot use the key folder ({exc.strerror})") from None
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
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
    """The key ring for ``settings``; creates the first key when the folder has none."""
    if settings.signing_alg == "HS256":
        assert settings.hmac_secret is not None  # checked by config
        key = hmac_key(settings.hmac_secret)
        return KeyRing(current=key, by_kid={key.kid: key})
    directory = settings.key_directory
    with _locked(directory):
        keys = [_load_pem(p) for p in key_files(directory)]
        usable = [k for k in keys if k.alg == settings.signing_alg]
        if not usable:
            if not create:
                raise KeyFileError(f"{directory}: no {settings.signing_alg} key")
            new = write_new_key(directory, settings.signing_alg)
            keys.append(new)
            usable.append(new)
    return KeyRing(current=usable[-1], by_kid={k.kid: k for k in keys})
