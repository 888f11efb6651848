"""``forwardauth user mfa`` / ``user mfa reset`` and ``keys rotate-sealing`` through the real
command, against the real stores (and a real server where sessions must be seen to end)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator

import pyotp
import pytest

from forwardauth import config
from forwardauth.sealing import Sealer, load_sealer, sealing_keys
from forwardauth.stores import audit, passkeys, recovery, secondfactors, totp, users
from forwardauth.stores.postgres import Database

from . import http
from .support import PASSWORD, Service, free_port, throwaway_database
from .test_cli import add_user, assert_one_line_error, run

HOSTILE = "Key\x1b]0;owned\x07\r\nroot\ttotp\ton\u202e"  # a passkey name set through the web


@pytest.fixture
def name() -> str:
    return f"mfa-{secrets.token_hex(4)}"


def user_named(database: Database, name: str) -> users.User:
    user = database.call(users.find, name)
    assert user is not None
    return user


def enrol_totp(database: Database, sealer: Sealer, user: users.User, confirm: bool = True) -> str:
    """An authenticator app set up as the /mfa page does (sealed secret, then confirmed); its secret."""
    secret = pyotp.random_base32()
    database.call(totp.begin, user.id, sealer.seal(secret.encode(), user.id))
    if confirm:
        assert database.call(totp.confirm, user.id)
    return secret


def add_passkey(database: Database, user: users.User, name: str, synced: bool) -> bytes:
    credential = secrets.token_bytes(32)
    added = database.call(passkeys.add, user.id, credential, name, b"\xa5cose-key", 0, ("internal",), synced, synced)
    assert added is not None
    return credential


def mfa_lines(env: dict[str, str], name: str) -> list[str]:
    result = run(env, "user", "mfa", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --- user mfa NAME -------------------------------------------------------------------------------


def test_mfa_says_what_a_user_enrolled_with_names_escaped(
    env: dict[str, str], settings: config.Settings, database: Database, name: str
) -> None:
    add_user(env, name)
    user = user_named(database, name)
    assert mfa_lines(env, name) == [
        f"{name}: no second factor: the password alone signs in (unless a rule asks for a second factor)",
        "totp\toff",
        "passkeys\t0",
        "recovery codes\t0 left",
    ]
    required = mfa_lines({**env, "FORWARDAUTH_SECOND_FACTOR": "required"}, name)[0]
    assert (
        required == f"{name}: no second factor: FORWARDAUTH_SECOND_FACTOR=required, one is enrolled at the next sign-in"
    )

    enrol_totp(database, load_sealer(settings), user, confirm=False)
    assert mfa_lines(env, name)[1] == "totp\toff (being set up)"  # not a factor until a code confirmed it
    assert database.call(totp.confirm, user.id)
    phone = add_passkey(database, user, "Phone", synced=True)
    add_passkey(database, user, HOSTILE, synced=False)
    assert database.call(passkeys.used, phone, 0, True)
    codes = database.call(recovery.generate, user.id)
    assert database.call(recovery.use, user.id, codes[0])

    lines = mfa_lines(env, name)
    assert lines[:3] == [f"{name}: second factor enrolled", "totp\ton", "passkeys\t2"]
    when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    assert re.fullmatch(rf"passkey\tPhone\tcreated {when}\tlast used {when}\tsynced", lines[3]), lines[3]
    # The name cannot forge a line, a field or a terminal sequence: written out, on its own line.
    escaped = "Key\\x1b]0;owned\\x07\\r\\nroot\\ttotp\\ton\\u202e"
    assert lines[4].split("\t")[:2] == ["passkey", escaped], lines[4]
    assert lines[4].endswith("\tlast used never\tdevice-bound")
    assert lines[5:] == ["recovery codes\t9 left"]
    assert not any(c in "\n".join(lines) for c in "\x1b\x07\r\u202e")


def test_mfa_of_nobody_and_wrong_usage_are_one_line_errors(env: dict[str, str], name: str) -> None:
    for args in (("mfa", name), ("mfa", "reset", name)):
        assert f"no user {name!r}" in assert_one_line_error(run(env, "user", *args), 1), args
    add_user(env, name)
    assert "usage: forwardauth user mfa" in assert_one_line_error(run(env, "user", "mfa", "reset", name, "x"), 1)
    assert "usage: forwardauth user mfa" in assert_one_line_error(run(env, "user", "mfa", "erase", name), 1)
    assert run(env, "user", "mfa").returncode == 2  # argparse: NAME is missing


# --- user mfa reset NAME ---------------------------------------------------------------------------


def test_reset_removes_every_factor_and_ends_every_session_at_once(
    env: dict[str, str], settings: config.Settings, database: Database, name: str, service: Callable[..., Service]
) -> None:
    add_user(env, name)
    user = user_named(database, name)
    bystander = f"other-{secrets.token_hex(4)}"
    add_user(env, bystander)
    svc = service()
    login = http.login(svc.base, name, PASSWORD).json()  # a session opened before (or by a thief)
    other = http.login(svc.base, bystander, PASSWORD).json()
    enrol_totp(database, load_sealer(settings), user)
    add_passkey(database, user, "Laptop", synced=False)
    database.call(recovery.generate, user.id)
    enrol_totp(database, load_sealer(settings), user_named(database, bystander))
    assert http.login(svc.base, name, PASSWORD).status == 401  # a second factor is due now
    assert http.get(svc.base + "/auth", http.bearer(login["access_token"])).status == 200

    reset = run(env, "user", "mfa", "reset", name)
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.splitlines() == [
        f"reset the second factors of {name}: 12 removed (TOTP, passkeys, recovery codes); revoked 1 session(s)"
    ]
    assert database.call(secondfactors.enrolled, user.id) == secondfactors.Enrolled(False, 0, 0)
    # Redis: the live access token stops passing at once; PostgreSQL: the refresh token is dead.
    assert http.get(svc.base + "/auth", http.bearer(login["access_token"])).status == 401
    assert http.post_json(svc.base + "/refresh", {"refresh_token": login["refresh_token"]}).status in (400, 401)
    # The old authenticator app is gone with the rest; the password alone signs in again.
    assert database.call(totp.secret, user.id) is None
    assert http.login(svc.base, name, PASSWORD).status == 200
    # Nobody else's factors or sessions were touched.
    assert database.call(secondfactors.enrolled, user_named(database, bystander).id).totp
    assert http.get(svc.base + "/auth", http.bearer(other["access_token"])).status == 200

    [event] = [e for e in database.call(audit.recent, 50) if e.user_id == user.id and e.event == "mfa_reset"]
    assert event.username == name
    assert event.detail == {"by": "cli", "totp": True, "passkeys": 1, "recovery_codes": 10, "sessions": 1}


def test_reset_changes_nothing_while_redis_is_down(
    env: dict[str, str], settings: config.Settings, database: Database, name: str
) -> None:
    """Removing the factors but leaving the access tokens live would be half a reset: refused."""
    add_user(env, name)
    user = user_named(database, name)
    enrol_totp(database, load_sealer(settings), user)
    down = {**env, "FORWARDAUTH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    line = assert_one_line_error(run(down, "user", "mfa", "reset", name), 1)
    assert "Redis is unreachable" in line and "nothing was changed" in line
    assert database.call(secondfactors.enrolled, user.id).totp
    assert not [e for e in database.call(audit.recent, 50) if e.user_id == user.id and e.event == "mfa_reset"]


# --- keys rotate-sealing ---------------------------------------------------------------------------


@pytest.fixture
def own_database(env: dict[str, str]) -> Iterator[tuple[dict[str, str], Database]]:
    """A database of its own: the run's holds secrets sealed with other tests' keys, which this
    test's key folder cannot open."""
    with throwaway_database("forwardauth_sealing") as url:
        fresh = {**env, "FORWARDAUTH_DATABASE_URL": url}
        assert run(fresh, "migrate").returncode == 0
        db = Database(url, 1)
        try:
            yield fresh, db
        finally:
            db.close()


def make_users(env: dict[str, str], db: Database, count: int) -> list[users.User]:
    names = [f"seal-{secrets.token_hex(4)}" for _ in range(count)]
    for each in names:
        add_user(env, each)
    return [user_named(db, each) for each in names]


def sealed_now(db: Database) -> dict[tuple[str, bool], bytes]:
    return {(uid, pending): blob for pending in (False, True) for uid, blob in db.call(totp.all_sealed, pending)}


def test_rotate_sealing_reseals_every_secret_and_says_the_old_key_is_free(
    own_database: tuple[dict[str, str], Database],
) -> None:
    env, db = own_database
    settings = config.load(env)
    alice, bob, carol = make_users(env, db, 3)
    sealer = load_sealer(settings)
    old = sealer.current_id
    secrets_of = {
        alice.id: enrol_totp(db, sealer, alice),
        bob.id: enrol_totp(db, sealer, bob, confirm=False),  # being set up: re-sealed too
    }
    before = sealed_now(db)
    assert {Sealer.sealed_with(blob) for blob in before.values()} == {old} and len(before) == 2

    result = run(env, "keys", "rotate-sealing")
    assert result.returncode == 0, result.stderr
    [new] = [key.id for key in sealing_keys(settings) if key.id != old]
    [old_file] = [key.path for key in sealing_keys(settings) if key.id == old]
    assert result.stdout.splitlines() == [
        f"new sealing key {new}; running workers seal with it from now on",
        "re-sealed 2 TOTP secret(s) with it",
        f"key {old} opens nothing in the database now: {old_file} may be removed",
    ]
    after = sealed_now(db)
    assert set(after) == set(before)
    fresh = load_sealer(settings, create=False)
    for (user_id, _), blob in after.items():
        assert Sealer.sealed_with(blob) == new and blob != before[(user_id, _)]
        assert fresh.open(blob, user_id).decode() == secrets_of[user_id]
    # Without the old key file every secret still opens: nothing needs it.
    old_file.unlink()
    assert all(load_sealer(settings, create=False).open(b, uid) for (uid, _), b in after.items())
    assert db.call(totp.secret, carol.id) is None  # no secret made up for a user without one


def test_a_secret_that_does_not_open_is_reported_and_its_key_kept(
    own_database: tuple[dict[str, str], Database],
) -> None:
    """A sealed value moved to another user's row (its user id is the associated data) cannot be
    re-sealed: the command says so, exits 1 and tells to keep the key it names."""
    env, db = own_database
    settings = config.load(env)
    alice, mallory = make_users(env, db, 2)
    sealer = load_sealer(settings)
    old = sealer.current_id
    enrol_totp(db, sealer, alice)
    stolen = db.call(totp.secret, alice.id)
    assert stolen is not None
    db.call(totp.begin, mallory.id, stolen)
    assert db.call(totp.confirm, mallory.id)

    result = run(env, "keys", "rotate-sealing")
    line = assert_one_line_error(result, 1)
    assert "1 secret(s) could not be re-sealed" in line
    out = result.stdout.splitlines()
    assert out[1] == "re-sealed 1 TOTP secret(s) with it"
    assert any(f"user {mallory.id}" in each and each.startswith("not re-sealed: ") for each in out), out
    [old_file] = [key.path for key in sealing_keys(settings) if key.id == old]
    assert out[-1] == f"key {old} still opens 1 secret(s): keep {old_file}"
    assert db.call(totp.secret, mallory.id) == stolen  # left as it was


def test_rotate_sealing_with_nothing_sealed_yet(own_database: tuple[dict[str, str], Database]) -> None:
    env, _ = own_database
    result = run(env, "keys", "rotate-sealing")
    assert result.returncode == 0, result.stderr
    [key] = sealing_keys(config.load(env))  # the first key: nothing older to speak of
    assert result.stdout.splitlines() == [
        f"new sealing key {key.id}; running workers seal with it from now on",
        "re-sealed 0 TOTP secret(s) with it",
    ]
