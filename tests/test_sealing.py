"""Sealing (AES-GCM with key files beside the signing keys): pure, on files under tmp_path."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from forwardauth import config
from forwardauth.keys import inspect, key_files, load_ring, prunable, prune, rotate
from forwardauth.sealing import (
    HEADER,
    NONCE_BYTES,
    Sealer,
    SealError,
    load_sealer,
    rotate_sealing_key,
    sealing_directory,
    sealing_keys,
)

SECRET = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ALICE, BOB = "6f1c6f4e-7d0a-4b59-9b55-8a1f5f1b2c3d", "0b7e2a57-1e4c-4f43-8d0e-5b1c9e7f3a21"


def settings_in(data: Path) -> config.Settings:
    return config.load({"FORWARDAUTH_DATA_DIR": str(data)})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_seal_and_open(tmp_path: Path) -> None:
    sealer = load_sealer(settings_in(tmp_path))
    blob = sealer.seal(SECRET, ALICE)
    assert sealer.open(blob, ALICE) == SECRET
    assert sealer.open(blob, ALICE.encode()) == SECRET  # str and bytes aad alike
    again = sealer.seal(SECRET, ALICE)
    assert again != blob and again[HEADER : HEADER + NONCE_BYTES] != blob[HEADER : HEADER + NONCE_BYTES]
    assert SECRET not in blob and SECRET.lower() not in blob
    assert Sealer.sealed_with(blob) == sealer.current_id


def test_another_users_aad_does_not_open(tmp_path: Path) -> None:
    sealer = load_sealer(settings_in(tmp_path))
    blob = sealer.seal(SECRET, ALICE)
    for aad in (BOB, "", ALICE.upper(), ALICE + " "):
        with pytest.raises(SealError, match="not this user's"):
            sealer.open(blob, aad)


def test_a_tampered_blob_does_not_open(tmp_path: Path) -> None:
    sealer = load_sealer(settings_in(tmp_path))
    blob = sealer.seal(SECRET, ALICE)
    for index in range(len(blob)):  # every byte: version, key id, nonce, ciphertext, tag
        spoiled = bytearray(blob)
        spoiled[index] ^= 0x01
        with pytest.raises(SealError):
            sealer.open(bytes(spoiled), ALICE)
    for cut in (b"", blob[:HEADER], blob[:-1], blob + b"\x00"):
        with pytest.raises(SealError):
            sealer.open(cut, ALICE)


def test_rotation_keeps_old_blobs_readable(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    running = load_sealer(settings)  # a worker started before the rotation
    first_id = running.current_id
    old = running.seal(SECRET, ALICE)

    new_id = rotate_sealing_key(settings)

    assert new_id != first_id and [k.id for k in sealing_keys(settings)] == [first_id, new_id]
    fresh = load_sealer(settings)
    assert fresh.current_id == new_id and fresh.open(old, ALICE) == SECRET
    resealed = fresh.seal(fresh.open(old, ALICE), ALICE)
    assert Sealer.sealed_with(resealed) == new_id and Sealer.sealed_with(old) == first_id
    # The worker started before picks the new key up: it opens what the new key sealed, and
    # seals with it from now on (so the old key can go once everything is re-sealed).
    assert running.open(resealed, ALICE) == SECRET
    assert Sealer.sealed_with(running.seal(SECRET, BOB)) == new_id and running.current_id == new_id

    # Once the old key file is removed, only what it sealed stops opening.
    [old_key] = [k for k in sealing_keys(settings) if k.id == first_id]
    old_key.path.unlink()
    after = load_sealer(settings)
    assert after.open(resealed, ALICE) == SECRET
    with pytest.raises(SealError, match=first_id):
        after.open(old, ALICE)


def test_without_the_key_file_nothing_opens(tmp_path: Path) -> None:
    sealer = load_sealer(settings_in(tmp_path / "one"))
    blob = sealer.seal(SECRET, ALICE)
    elsewhere = load_sealer(settings_in(tmp_path / "two"))  # another key of its own
    with pytest.raises(SealError):
        elsewhere.open(blob, ALICE)
    with pytest.raises(SealError, match="no sealing key"):
        load_sealer(settings_in(tmp_path / "three"), create=False)
    assert sealing_keys(settings_in(tmp_path / "three")) == []  # none made when asked not to


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o777])
def test_folder_and_key_files_are_owner_only_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    settings = settings_in(tmp_path / "data")
    previous = os.umask(umask)
    try:
        load_sealer(settings)
        rotate_sealing_key(settings)
    finally:
        os.umask(previous)
    folder = sealing_directory(settings)
    assert mode(folder) == 0o700 and mode(settings.key_directory) == 0o700
    found = sealing_keys(settings)
    assert len(found) == 2
    assert {mode(k.path) for k in found} == {0o600}
    assert {mode(p) for p in folder.iterdir()} == {0o600}  # the lock file too


def test_unsafe_or_corrupt_key_files_are_refused(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    load_sealer(settings)
    [key] = sealing_keys(settings)
    key.path.chmod(0o644)
    with pytest.raises(SealError, match="FORWARDAUTH_KEYS_DIR"):
        load_sealer(settings)
    key.path.chmod(0o600)
    key.path.write_bytes(b"not base64 at all!\n")
    with pytest.raises(SealError, match="not a base64 sealing key"):
        load_sealer(settings)
    key.path.write_bytes(b"c2hvcnQ=\n")  # base64 of 5 bytes
    with pytest.raises(SealError, match="32 bytes"):
        load_sealer(settings)
    sealing_directory(settings).chmod(0o777)
    with pytest.raises(SealError, match="writable by other users"):
        load_sealer(settings)


def test_the_signing_key_loader_ignores_the_sealing_folder(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ring = load_ring(settings)
    load_sealer(settings)
    rotate_sealing_key(settings)
    rotate(settings.key_directory, settings.signing_alg)

    assert len(key_files(settings.key_directory)) == 2
    found = inspect(settings.key_directory)
    assert found.problems == [] and len(found.keys) == 2
    again = load_ring(settings, create=False)
    assert ring.current.kid in again.by_kid and len(again.by_kid) == 2
    assert prunable(settings.key_directory, settings.signing_alg, retire_after=0, now=4e9) != []
    prune(settings.key_directory, settings.signing_alg, retire_after=0)
    assert len(sealing_keys(settings)) == 2  # pruning signing keys leaves sealing keys alone
    assert len(key_files(settings.key_directory)) == 1


def _current_id(data: str) -> str:
    return load_sealer(settings_in(Path(data))).current_id


def test_concurrent_first_start_makes_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_current_id, [str(tmp_path)] * 6)
    assert len(set(ids)) == 1 and len(sealing_keys(settings_in(tmp_path))) == 1
