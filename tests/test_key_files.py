"""Key files another local user could have written, key files the service cannot load, and a prune
that dates keys by when they signed here, not by their names."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from forwardauth import config
from forwardauth.http.app import create_app
from forwardauth.http.services import SERVICES
from forwardauth.keys import (
    MARKER_PREFIX,
    RELOAD_SECONDS,
    STAMP_FORMAT,
    KeyFileError,
    key_files,
    last_signed,
    load_ring,
    mark_signing,
    prunable,
    reload_ring,
    rotate,
)
from forwardauth.stores import users

from . import http
from .localuser import NOBODY, needs_root
from .support import PASSWORD, AppServer, Service, free_port, wait_until

MakeUser = Callable[..., users.User]


def settings_in(data: Path) -> config.Settings:
    return config.load({"FORWARDAUTH_DATA_DIR": str(data), "FORWARDAUTH_SIGNING_ALG": "RS256"})


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forwardauth", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def stamped(path: Path, days_ago: float) -> Path:
    """Rename a key file as if generated ``days_ago`` days ago (the name is what prune once trusted)."""
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)).strftime(STAMP_FORMAT)
    target = path.with_name(f"{stamp}-{path.name.split('-', 1)[1]}")
    path.rename(target)
    return target


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- item 5: folders and files -------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o777])
def test_every_folder_and_file_made_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "a" / "b" / "data"
    previous = os.umask(umask)
    try:
        settings = settings_in(data)
        load_ring(settings)
        rotate(settings.key_directory, "RS256")
    finally:
        os.umask(previous)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", data, data / "keys"):
        assert mode(folder) == 0o700, folder
    files = list((data / "keys").iterdir())
    assert len(key_files(data / "keys")) == 2 and files
    assert {mode(f) for f in files} == {0o600}


def spoil(keys: Path, how: str) -> str:
    """Make the key folder one another user could have written; what the refusal must say."""
    [key] = key_files(keys)
    if how == "key owned by nobody":
        os.chown(key, NOBODY.pw_uid, NOBODY.pw_gid)
        return "not by forwardauth's user"
    if how == "key readable by others":
        key.chmod(0o644)
        return "readable or writable by other users (mode 0644)"
    if how == "key writable by others":
        key.chmod(0o666)
        return "readable or writable by other users (mode 0666)"
    if how == "folder owned by nobody":
        os.chown(keys, NOBODY.pw_uid, NOBODY.pw_gid)
        return "not by forwardauth's user"
    if how == "folder writable by others":
        keys.chmod(0o777)
        return "writable by other users (mode 0777)"
    assert how == "data folder writable by others"
    keys.parent.chmod(0o777)
    return "above it is writable by other users"


SPOILS = [
    "key owned by nobody",
    "key readable by others",
    "key writable by others",
    "folder owned by nobody",
    "folder writable by others",
    "data folder writable by others",
]


@pytest.mark.parametrize("how", SPOILS)
def test_keys_another_user_could_have_written_are_refused(tmp_path: Path, how: str) -> None:
    if "nobody" in how:
        needs_root()
    settings = settings_in(tmp_path / "data")
    load_ring(settings)
    said = spoil(settings.key_directory, how)
    for create in (True, False):  # at start (the first key is made if none) and on reload
        with pytest.raises(KeyFileError) as refused:
            load_ring(settings, create=create)
        assert "FORWARDAUTH_KEYS_DIR" in str(refused.value) and said in str(refused.value), str(refused.value)
    assert len(key_files(settings.key_directory)) == 1  # nothing written into it


def forged_token(genuine: str, private: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """``genuine``'s claims (live session, same jti) with the admin role, signed with another key."""
    claims = jwt.decode(genuine, options={"verify_signature": False})
    claims["roles"] = ["admin"]
    header = jwt.get_unverified_header(genuine)
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid, "typ": header["typ"]})


def test_a_key_folder_swapped_by_another_user_is_never_loaded(
    service: Callable[..., Service], make_user: MakeUser, env: dict[str, str], tmp_path: Path
) -> None:
    """The reported attack: keys/ replaced by a folder of another user's, with a key of theirs.
    Workers keep their keys and say why; a token re-signed with that key never passes; a start
    with that folder is refused naming FORWARDAUTH_KEYS_DIR."""
    needs_root()
    settings = config.load({**env, "FORWARDAUTH_SIGNING_ALG": "ES256"})
    svc = service(workers=2, extra={"FORWARDAUTH_SIGNING_ALG": "ES256", "FORWARDAUTH_LOG_LEVEL": "INFO"})
    # Both workers serving before the swap (readyz is answered by the first one up): a worker
    # that starts after it finds the folder refused and does not start at all.
    wait_until(lambda: svc.log.read_text().count("worker listening") >= 2, 30, "both workers listening")
    user = make_user()
    genuine = http.login(svc.base, user.username, PASSWORD).json()["access_token"]

    theirs = tmp_path / "theirs"
    planted = load_ring(config.load({"FORWARDAUTH_DATA_DIR": str(theirs), "FORWARDAUTH_SIGNING_ALG": "ES256"})).current
    for path in (theirs / "keys", *(theirs / "keys").iterdir()):
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    keys = settings.key_directory
    keys.rename(tmp_path / "keys.before")
    (theirs / "keys").rename(keys)
    forged = forged_token(genuine, planted.signing, planted.kid)

    def refused_by_both_workers() -> bool:
        return svc.log.read_text().count("keys not reloaded") >= 2

    wait_until(refused_by_both_workers, timeout=20, what="both workers to refuse the swapped folder")
    assert "FORWARDAUTH_KEYS_DIR" in svc.log.read_text()
    for _ in range(10):  # every worker
        assert http.get(svc.base + "/auth", http.bearer(forged)).status == 401
        assert http.get(svc.base + "/auth", http.bearer(genuine)).status == 200
    assert planted.kid not in {k["kid"] for k in http.get(svc.base + "/.well-known/jwks.json").json()["keys"]}

    start = run({**env, "FORWARDAUTH_SIGNING_ALG": "ES256", "FORWARDAUTH_PORT": str(free_port())}, "serve")
    assert start.returncode != 0 and "FORWARDAUTH_KEYS_DIR" in start.stderr, start.stderr
    assert "not by forwardauth's user" in start.stderr


# --- item 7: keys the service cannot load --------------------------------------------------------


def bad_key(keys: Path, kind: str) -> Path:
    path = keys / f"{kind}.pem"
    if kind == "corrupt":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    else:
        private = ec.generate_private_key(ec.SECP384R1())
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    path.chmod(0o600)
    if kind == "nobody":
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


@pytest.mark.parametrize("kind", ["p384", "corrupt", "nobody"])
def test_rotate_and_list_report_key_files_the_service_cannot_load(env: dict[str, str], kind: str) -> None:
    if kind == "nobody":
        needs_root()
    assert run(env, "keys", "rotate").returncode == 0
    keys = Path(env["FORWARDAUTH_DATA_DIR"]) / "keys"
    [good] = key_files(keys)
    bad = bad_key(keys, kind)

    listed = run(env, "keys", "list")
    assert listed.returncode == 1
    assert bad.name in listed.stderr and "cannot load" in listed.stderr, listed.stderr
    assert [line.split("\t")[1:] for line in listed.stdout.splitlines() if "\t" in line] == [["RS256", "signing"]]

    rotated = run(env, "keys", "rotate")
    assert rotated.returncode == 1 and "not rotated" in rotated.stderr and bad.name in rotated.stderr
    assert "new signing key" not in rotated.stdout
    assert sorted(key_files(keys)) == sorted([good, bad])  # no key the workers would never use

    bad.unlink()
    assert run(env, "keys", "rotate").returncode == 0


def test_a_refused_folder_is_logged_at_most_once_a_minute(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_in(tmp_path / "data")
    load_ring(settings)
    bad = bad_key(settings.key_directory, "p384")
    with caplog.at_level(logging.ERROR, logger="forwardauth.keys"):
        assert [reload_ring(settings) for _ in range(5)] == [None] * 5  # a reload every 2 s, refused
    [record] = [r for r in caplog.records if r.name == "forwardauth.keys"]
    assert bad.name in record.getMessage() and "P-256" in record.getMessage()
    bad.unlink()
    assert reload_ring(settings) is not None


# --- item 7: prune by use ------------------------------------------------------------------------


def test_a_key_is_kept_while_a_worker_records_signing_with_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = rotate(keys, "RS256")
    stamped(key_files(keys)[0], 3)
    rotate(keys, "RS256")
    stamped(key_files(keys)[1], 2)
    old_file = key_files(keys)[0]
    later = time.time() + 10_000  # the newer key arrived long ago, as seen from then
    assert prunable(keys, "RS256", 900, now=later) == [old_file]
    mark_signing(keys, first.kid)  # a worker that never reloaded still signs with it
    marked = keys / f"{MARKER_PREFIX}{first.kid}"
    os.utime(marked, (later - 100, later - 100))
    assert last_signed(keys, first.kid) == later - 100
    assert prunable(keys, "RS256", 900, now=later) == []
    os.utime(marked, (later - 1000, later - 1000))
    assert prunable(keys, "RS256", 900, now=later) == [old_file]


def test_prune_keeps_the_key_that_signed_until_a_copied_in_key_took_over(
    service: Callable[..., Service], make_user: MakeUser, env: dict[str, str], tmp_path: Path
) -> None:
    """Key A (made 3 days ago) signs; key C, generated elsewhere 2 days ago, is copied in and takes
    over. Dated by its name, A was replaced 2 days ago and was pruned at once, while tokens it
    signed seconds before were live."""
    keys = Path(env["FORWARDAUTH_DATA_DIR"]) / "keys"
    a = rotate(keys, "RS256")
    stamped(key_files(keys)[0], 3)
    elsewhere = tmp_path / "elsewhere"
    c = rotate(elsewhere, "RS256")
    c_file = stamped(key_files(elsewhere)[0], 2)

    svc = service(workers=2)
    user = make_user()
    signed_by_a = http.login(svc.base, user.username, PASSWORD).json()["access_token"]
    assert jwt.get_unverified_header(signed_by_a)["kid"] == a.kid
    shutil.copy2(c_file, keys / c_file.name)  # keeps the file's times, as cp -p or rsync -a do

    def c_signs() -> bool:
        tokens = [http.login(svc.base, user.username, PASSWORD).json()["access_token"] for _ in range(6)]
        return all(jwt.get_unverified_header(t)["kid"] == c.kid for t in tokens)

    wait_until(c_signs, timeout=20, what="the workers to sign with the copied-in key")
    pruned = run(env, "keys", "prune")
    assert pruned.returncode == 0 and "0 key(s) removed" in pruned.stdout, (pruned.stdout, pruned.stderr)
    assert len(key_files(keys)) == 2
    assert http.get(svc.base + "/auth", http.bearer(signed_by_a)).status == 200


async def test_a_key_copied_in_while_a_worker_starts_is_picked_up(aiohttp_client: Any, env: dict[str, str]) -> None:
    """The watcher compares with the key folder as it was *before* the ring was loaded: a key
    copied in between (a worker still starting) is a change, and the worker signs with it within
    a reload interval. (Read when the watcher task first ran, it already held the new key, and
    the worker went on signing with the old one: seen once in CI under load.)"""
    settings = config.load(env)
    keys = settings.key_directory
    a = rotate(keys, "RS256")
    stamped(key_files(keys)[0], 3)
    elsewhere = Path(env["FORWARDAUTH_DATA_DIR"]).parent / "elsewhere"
    c = rotate(elsewhere, "RS256")
    c_file = stamped(key_files(elsewhere)[0], 2)
    app = create_app(settings)
    services = app[SERVICES]
    assert services.tokens.ring.current.kid == a.kid  # loaded as the app was built
    shutil.copy2(c_file, keys / c_file.name)  # before the watchers run
    await aiohttp_client(AppServer(app))
    deadline = time.monotonic() + 4 * RELOAD_SECONDS
    while services.tokens.ring.current.kid != c.kid and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert services.tokens.ring.current.kid == c.kid, "the worker never picked up the key copied in as it started"
