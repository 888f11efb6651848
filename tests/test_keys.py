"""Signing keys on disk: creation, rotation, pruning, and pickup by running workers."""

from __future__ import annotations

import json
import multiprocessing
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from forwardauth import config
from forwardauth.keys import created_at, key_files, load_ring, prunable, prune, rotate

from .support import PASSWORD, Service, wait_until


def settings_in(tmp_path: Path, alg: str = "RS256") -> config.Settings:
    return config.load({"FORWARDAUTH_DATA_DIR": str(tmp_path), "FORWARDAUTH_SIGNING_ALG": alg})


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_first_key_is_created_private_and_reused(tmp_path: Path, alg: str) -> None:
    settings = settings_in(tmp_path, alg)
    ring = load_ring(settings)
    files = key_files(settings.key_directory)
    assert len(files) == 1 and ring.current.alg == alg
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.key_directory.stat().st_mode) == 0o700
    assert load_ring(settings).current.kid == ring.current.kid
    assert key_files(settings.key_directory) == files


def test_no_key_is_created_when_asked_not_to(tmp_path: Path) -> None:
    from forwardauth.keys import KeyFileError

    with pytest.raises(KeyFileError):
        load_ring(settings_in(tmp_path), create=False)


def _load(directory: str) -> str:
    return load_ring(config.load({"FORWARDAUTH_DATA_DIR": directory})).current.kid


def test_concurrent_first_start_makes_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        kids = pool.map(_load, [str(tmp_path)] * 8)
    assert len(set(kids)) == 1
    assert len(key_files(tmp_path / "keys")) == 1


def test_rotation_signs_with_the_new_key_and_keeps_the_old(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    first = load_ring(settings).current
    second = rotate(settings.key_directory, "RS256")
    third = rotate(settings.key_directory, "RS256")  # same second: order must still hold
    ring = load_ring(settings)
    assert ring.current.kid == third.kid
    assert {first.kid, second.kid, third.kid} == set(ring.by_kid)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [first.kid, second.kid, third.kid]


def test_a_replaced_key_is_kept_until_its_tokens_have_expired(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    load_ring(settings)
    old_file = key_files(settings.key_directory)[0]
    rotate(settings.key_directory, "RS256")
    new_file = key_files(settings.key_directory)[-1]
    replaced = created_at(new_file)
    assert prunable(settings.key_directory, "RS256", 900, now=replaced + 899) == []
    assert prunable(settings.key_directory, "RS256", 900, now=replaced + 901) == [old_file]
    # the signing key is never pruned, however old
    assert new_file not in prunable(settings.key_directory, "RS256", 0, now=replaced + 10**6)


def test_prune_removes_only_what_no_token_needs(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    old = load_ring(settings).current
    rotate(settings.key_directory, "RS256")
    assert prune(settings.key_directory, "RS256", retire_after=3600) == []
    removed = prune(settings.key_directory, "RS256", retire_after=0)
    assert len(removed) == 1
    assert old.kid not in load_ring(settings).by_kid


def login_token(base: str, username: str) -> str:
    request = urllib.request.Request(
        base + "/login",
        data=json.dumps({"username": username, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


def auth_status(base: str, token: str) -> int:
    request = urllib.request.Request(base + "/auth", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def fetch_jwks(base: str) -> dict[str, object]:
    with urllib.request.urlopen(base + "/.well-known/jwks.json", timeout=10) as response:
        return dict(json.load(response))


def test_running_workers_pick_up_rotation_and_prune(
    service: Callable[..., Service], settings: config.Settings, make_user: Callable[..., object], env: dict[str, str]
) -> None:
    user = make_user()
    svc = service(workers=2)
    before = login_token(svc.base, user.username)  # type: ignore[attr-defined]
    old_kid = jwt.get_unverified_header(before)["kid"]
    result = subprocess.run(
        [sys.executable, "-m", "forwardauth", "keys", "rotate"],
        env={**env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "new signing key" in result.stdout

    def every_login_uses_a_new_key() -> bool:
        tokens = [login_token(svc.base, user.username) for _ in range(6)]  # type: ignore[attr-defined]
        return all(jwt.get_unverified_header(t)["kid"] != old_kid for t in tokens)

    wait_until(every_login_uses_a_new_key, timeout=20, what="workers signing with the new key")
    after = login_token(svc.base, user.username)  # type: ignore[attr-defined]
    # both verify, at forwardauth and with another JOSE library using only the published keys
    assert auth_status(svc.base, before) == 200 and auth_status(svc.base, after) == 200
    keyset = KeySet.import_key_set(fetch_jwks(svc.base))  # type: ignore[arg-type]
    for token in (before, after):
        assert jose_jwt.decode(token, keyset, algorithms=["RS256"]).claims["sub"]

    # Prune the old key at once (the library call; the CLI waits for tokens to expire).
    prune(replace(settings).key_directory, "RS256", retire_after=0)

    def old_key_gone() -> bool:  # in every worker: several answers in a row, each from either
        return all(auth_status(svc.base, before) == 401 and old_kid not in str(fetch_jwks(svc.base)) for _ in range(8))

    wait_until(old_key_gone, timeout=20, what="workers dropping the pruned key")
    assert auth_status(svc.base, after) == 200
    keyset = KeySet.import_key_set(fetch_jwks(svc.base))  # type: ignore[arg-type]
    with pytest.raises(JoseError):
        jose_jwt.decode(before, keyset, algorithms=["RS256"])
