"""``forwardauth keys list|rotate|prune|rotate-sealing``: what the running service can load, said before it matters.

Each command reads every key file through the service's own loader (keys.inspect), so a file the
workers would refuse (unsafe owner or mode, corrupt PEM, unsupported key type) is reported here
with a non-zero exit, instead of a rotation that the workers silently never pick up.

``rotate-sealing`` adds a sealing key (forwardauth.sealing, for the TOTP secrets in PostgreSQL) and
re-seals every secret with it at once, so the old key is needed by nothing in the database.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from forwardauth.clisupport import CommandError, database
from forwardauth.config import Settings
from forwardauth.keys import (
    RELOAD_SECONDS,
    VARIABLE,
    KeyFileError,
    inspect,
    last_signed,
    load_ring,
    prune,
    refusal,
    rotate,
)
from forwardauth.safetext import escape, row
from forwardauth.sealing import Sealer, SealError, load_sealer, rotate_sealing_key, sealing_keys
from forwardauth.stores import totp
from forwardauth.stores.postgres import Database


def _no_files(settings: Settings, what: str) -> None:
    if settings.signing_alg == "HS256":
        raise KeyFileError(f"there are no key files with HS256: {what}")


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    """One line per key the service can load; then every file it would refuse, and exit 1 if any."""
    if settings.signing_alg == "HS256":
        ring = load_ring(settings, create=False)
        print(row(ring.current.kid, ring.current.alg, "signing"))
        return
    directory = settings.key_directory
    found = inspect(directory)
    signing = [key for _, key in found.keys if key.alg == settings.signing_alg]
    if not found.keys and not found.problems:
        raise KeyFileError(f"{VARIABLE} {directory}: no {settings.signing_alg} key")
    listed: set[str] = set()
    for _, key in found.keys:
        if key.kid in listed:
            continue
        listed.add(key.kid)
        mark = "signing" if signing and key.kid == signing[-1].kid else "verify-only"
        print(row(key.kid, key.alg, mark))
    now = time.time()
    for _, key in found.keys:
        used = last_signed(directory, key.kid)
        if used is not None:
            print(f"  {key.kid[:12]}: a worker last recorded signing with it {max(now - used, 0):.0f} s ago")
    print(escape(f"({len(found.keys) + len(found.problems)} key file(s) in {directory})"))
    if found.problems:
        raise KeyFileError(
            "the running service cannot load this folder and keeps its current keys: " + refusal(found.problems)
        )
    if not signing:
        raise KeyFileError(f"{VARIABLE} {directory}: no {settings.signing_alg} key")


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    """Add a signing key, only when the workers will be able to load the folder with it."""
    if settings.signing_alg == "HS256":
        raise KeyFileError("HS256 keys are rotated by changing FORWARDAUTH_HMAC_SECRET")
    directory = settings.key_directory
    before = inspect(directory)
    if before.problems:
        raise KeyFileError(
            "not rotated: the running service cannot load this folder and keeps signing with its "
            "current key until it can: " + refusal(before.problems)
        )
    key = rotate(directory, settings.signing_alg)
    try:
        ring = load_ring(settings, create=False)  # what a worker's reload will do
    except KeyFileError as exc:
        raise KeyFileError(
            f"new key {key.kid} written, but the running service cannot load the folder and keeps "
            f"signing with its current key: {exc}"
        ) from None
    if ring.current.kid != key.kid:
        raise KeyFileError(f"new key {key.kid} written, but {ring.current.kid} still signs (its file name sorts later)")
    print(f"new signing key {key.kid}; running workers sign with it within {RELOAD_SECONDS:.0f} s")


def retire_after(settings: Settings) -> float:
    """How long a key must stay after it last signed (or could have): until every token it signed has expired."""
    return settings.access_ttl + settings.leeway + 2 * RELOAD_SECONDS


def cmd_keys_prune(settings: Settings, args: argparse.Namespace) -> None:
    _no_files(settings, "nothing to prune")
    removed = prune(settings.key_directory, settings.signing_alg, retire_after(settings))
    for path in removed:
        print(escape(f"removed {path.name}"))
    print(
        f"{len(removed)} key(s) removed; keys that signed (or could have) in the last "
        f"{retire_after(settings):.0f} s are kept"
    )


def _reseal_all(db: Database, sealer: Sealer) -> tuple[int, list[str]]:
    """Re-seal with the sealer's newest key every TOTP secret (in use, or being set up) sealed with
    another; each in its own transaction, and only if it is still what was read (a user enrolling
    meanwhile seals with the newest key anyway). How many, and what could not be opened."""
    current = sealer.current_id
    resealed, problems = 0, []
    for pending in (False, True):
        for user_id, blob in db.call(totp.all_sealed, pending):
            if Sealer.sealed_with(blob) == current:
                continue
            try:
                fresh = sealer.seal(sealer.open(blob, user_id), user_id)
            except SealError as exc:
                problems.append(f"the TOTP secret of user {user_id}: {exc}")
                continue
            resealed += db.call(totp.reseal, user_id, fresh, blob, pending)
    return resealed, problems


def _sealed_with(db: Database) -> Counter[str | None]:
    """How many stored secrets each sealing key id opens."""
    blobs = [blob for pending in (False, True) for _, blob in db.call(totp.all_sealed, pending)]
    return Counter(Sealer.sealed_with(blob) for blob in blobs)


def cmd_keys_rotate_sealing(settings: Settings, args: argparse.Namespace) -> None:
    """Add a sealing key, re-seal every TOTP secret with it, and say which old keys nothing needs now."""
    try:
        kid = rotate_sealing_key(settings)
        sealer = load_sealer(settings, create=False)
        if sealer.current_id != kid:
            raise CommandError(f"new sealing key {kid} written, but {sealer.current_id} still seals")
        print(f"new sealing key {kid}; running workers seal with it from now on")
        with database(settings) as db:
            resealed, problems = _reseal_all(db, sealer)
            uses = _sealed_with(db)
        print(f"re-sealed {resealed} TOTP secret(s) with it")
        for problem in problems:
            print(escape(f"not re-sealed: {problem}"))
        for key in sealing_keys(settings):
            if key.id == kid:
                continue
            if uses[key.id]:
                print(escape(f"key {key.id} still opens {uses[key.id]} secret(s): keep {key.path}"))
            else:
                print(escape(f"key {key.id} opens nothing in the database now: {key.path} may be removed"))
    except SealError as exc:
        raise CommandError(str(exc)) from None
    if problems:
        raise CommandError(f"{len(problems)} secret(s) could not be re-sealed (listed above)")
