"""The stores behind second factors (issue 14), on real PostgreSQL and Redis: how a session was
authenticated (migration 0005, start / rotate / refresh_info), pending sign-ins, one-time marks,
TOTP secrets (sealed), recovery codes, passkeys and the per-user summary and reset."""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from forwardauth import config
from forwardauth.constants import RedisKeys
from forwardauth.core.authn import OTP, PASSWORD, Authentication
from forwardauth.sealing import SealError, load_sealer, rotate_sealing_key
from forwardauth.stores import migrations, passkeys, recovery, secondfactors, sessions, totp, users
from forwardauth.stores.onetime import OneTime
from forwardauth.stores.pending import Pending, PendingSignIns
from forwardauth.stores.postgres import Database
from forwardauth.stores.redis import RedisClient

from .stores import postgres_program
from .support import database_at, execute, rows

TTL = 3600
MakeUser = Callable[..., users.User]


# --- migration 0005 on a database holding sessions -------------------------------------------


@pytest.fixture
def old_database() -> Iterator[str]:
    """A database migrated up to 0004 only (as before issue 14)."""
    with database_at(4, "forwardauth_mig5") as url:
        yield url


def test_migration_dates_old_sessions_from_their_first_token(old_database: str) -> None:
    [(user_id,)] = execute(
        old_database, "INSERT INTO users (username, password_hash) VALUES ('old', 'x') RETURNING id::text"
    )
    # Session "a": opened 3 days ago, rotated since; session "b": opened an hour ago.
    for family, age, token in (
        ("a", "3 days", b"a1"),
        ("a", "1 day", b"a2"),
        ("a", "1 hour", b"a3"),
        ("b", "1 hour", b"b1"),
    ):
        execute(
            old_database,
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at)"
            " VALUES (%s, %s, %s, now() - %s::interval, now() + interval '1 day')",
            token,
            user_id,
            family,
            age,
        )

    assert migrations.migrate(old_database)[0] == "0005_second_factors.sql"  # and those after it

    found = execute(
        old_database,
        "SELECT family_id, amr,"
        " auth_time = (SELECT min(created_at) FROM refresh_tokens f WHERE f.family_id = r.family_id),"
        " auth_time < now() - interval '50 minutes' FROM refresh_tokens r ORDER BY id",
    )
    assert found == [("a", ["pwd"], True, True)] * 3 + [("b", ["pwd"], True, True)]
    [(oldest,)] = execute(
        old_database, "SELECT count(*) FROM refresh_tokens WHERE auth_time < now() - interval '71 hours'"
    )
    assert oldest == 3  # every token of "a" carries its first token's time, not its own
    tables = {row[0] for row in execute(old_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"totp_secrets", "passkeys", "recovery_codes"} <= tables


def test_an_old_session_rotates_with_its_first_authentication(old_database: str) -> None:
    [(user_id,)] = execute(
        old_database, "INSERT INTO users (username, password_hash) VALUES ('old', 'x') RETURNING id::text"
    )
    token = secrets.token_urlsafe(32)
    execute(
        old_database,
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at)"
        " VALUES (sha256(%s::bytea), %s, 'fam', now() - interval '2 days', now() + interval '1 day')",
        token.encode(),
        user_id,
    )
    migrations.migrate(old_database)
    db = Database(old_database, 1)
    try:
        info = db.call(sessions.refresh_info, token)
        rotated = db.call(sessions.rotate, token, TTL, None)
    finally:
        db.close()
    two_days_ago = time.time() - 2 * 86400
    assert info is not None and info.auth.amr == (PASSWORD,)
    assert abs(info.auth.auth_time - two_days_ago) < 60
    assert rotated.auth == info.auth and rotated.sid == "fam"


# --- sessions carry their authentication -------------------------------------------------------


def test_start_defaults_to_a_password_now(database: Database, make_user: MakeUser) -> None:
    before = int(time.time())
    session = database.call(sessions.start, make_user(), TTL)
    assert session.auth.amr == (PASSWORD,) and before <= session.auth.auth_time <= time.time()
    info = database.call(sessions.refresh_info, session.refresh_token)
    assert info is not None and info.auth == session.auth


def test_rotate_keeps_amr_and_auth_time(database: Database, make_user: MakeUser) -> None:
    auth = Authentication.of((PASSWORD, OTP), int(time.time()) - 600)
    first = database.call(sessions.start, make_user(), TTL, auth=auth)
    assert first.auth == auth and auth.multi_factor
    second = database.call(sessions.rotate, first.refresh_token, TTL, None)
    third = database.call(sessions.rotate, second.refresh_token, TTL, None)
    assert second.auth == third.auth == auth  # a rotation proves nothing new: same methods, same time
    info = database.call(sessions.refresh_info, third.refresh_token)
    assert info is not None and info.auth == auth and info.auth.acr.endswith(":mfa")
    stored = rows(database, "SELECT DISTINCT amr FROM refresh_tokens WHERE family_id = %s", first.sid)
    assert stored == [(list(auth.amr),)] and set(auth.amr) == {"mfa", "otp", "pwd"}


def test_login_in_db_opens_a_password_session(database: Database, make_user: MakeUser, settings: Any) -> None:
    from forwardauth.accounts.signin import login_in_db
    from forwardauth.core.passwords import Passwords

    from .conftest import PASSWORD as SECRET

    user = make_user()
    session = database.call(login_in_db, Passwords.from_settings(settings), user.username, SECRET, None, TTL)
    assert session is not None and session.auth.amr == (PASSWORD,) and not session.auth.multi_factor


# --- pending sign-ins and one-time marks (Redis) -----------------------------------------------


def a_pending(**changes: Any) -> Pending:
    fields: dict[str, Any] = {
        "user_id": "6f1c6f4e-7d0a-4b59-9b55-8a1f5f1b2c3d",
        "username": "alice",
        "amr": (PASSWORD,),
        "auth_time": 1_700_000_000,
        "rd": "https://app.example.test/x",
    }
    return Pending(**{**fields, **changes})


async def test_pending_take_is_single_use(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PendingSignIns(redis_client, keys)
    pending = a_pending(replaces_sid="sid-1", must_enrol=True, new_device=True, challenge="ch")
    pending_id = await store.put(pending)
    assert len(pending_id) >= 43  # 256 random bits
    assert await store.get(pending_id) == pending  # a page may look without spending it
    assert await store.get(pending_id) == pending
    assert await store.take(pending_id) == pending
    assert await store.take(pending_id) is None
    assert await store.get(pending_id) is None


async def test_pending_replace_keeps_the_expiry_and_needs_it_alive(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PendingSignIns(redis_client, keys)
    pending_id = await store.put(a_pending(), ttl=120)
    stepped = a_pending(amr=(PASSWORD, OTP), challenge=None)
    assert await store.replace(pending_id, stepped)
    assert await store.get(pending_id) == stepped
    assert 0 < await redis_client.ttl(keys.pending_signin(pending_id)) <= 120
    assert await store.take(pending_id) == stepped
    assert not await store.replace(pending_id, stepped)  # gone: not brought back
    assert await store.get(pending_id) is None


async def test_pending_ignores_unknown_ids_and_foreign_values(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PendingSignIns(redis_client, keys)
    assert await store.get("") is None and await store.take("x" * 500) is None
    assert await store.get(secrets.token_urlsafe(32)) is None
    await redis_client.set(keys.pending_signin("planted"), b'{"user_id": 1}', ex=60)
    assert await store.take("planted") is None
    await redis_client.set(keys.pending_signin("junk"), b"\xff\xfe", ex=60)
    assert await store.get("junk") is None


async def test_pending_expires(redis_client: RedisClient, keys: RedisKeys) -> None:
    store = PendingSignIns(redis_client, keys)
    pending_id = await store.put(a_pending(), ttl=1)
    assert await store.get(pending_id) is not None
    deadline = time.monotonic() + 5
    while await store.get(pending_id) is not None:
        assert time.monotonic() < deadline, "pending sign-in outlived its ttl"
        await redis_client.ping()  # a round trip between looks, no fixed sleep
    assert await store.take(pending_id) is None


async def test_onetime_first_use_once(redis_client: RedisClient, keys: RedisKeys) -> None:
    once = OneTime(redis_client, keys)
    key = keys.otp_used("user-1", 57_000_000)
    assert await once.first_use(key, 90)
    assert not await once.first_use(key, 90)
    assert await once.first_use(keys.otp_used("user-1", 57_000_001), 90)  # the next step is another code
    assert await once.first_use(keys.otp_used("user-2", 57_000_000), 90)  # another user's is theirs
    assert 0 < await redis_client.ttl(key) <= 90


def test_redis_keys_are_distinct() -> None:
    keys = RedisKeys("p:")
    made = {keys.otp_used("u", 1), keys.pending_signin("u"), keys.webauthn_challenge("u"), keys.failures("u")}
    assert len(made) == 4 and all(k.startswith("p:") for k in made)


# --- TOTP secrets: sealed, a pending one until confirmed -----------------------------------------


def test_totp_begin_confirm_and_replace(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    assert database.call(totp.secret, user.id) is None and not database.call(totp.confirm, user.id)
    database.call(totp.begin, user.id, b"first")
    assert database.call(totp.secret, user.id) is None  # not in use before a code is confirmed
    assert database.call(totp.pending_secret, user.id) == b"first"
    database.call(totp.begin, user.id, b"second")  # set-up started again: replaces the first
    assert database.call(totp.pending_secret, user.id) == b"second"
    assert not database.call(totp.confirm, user.id, b"first")  # the code checked was the first's
    assert database.call(totp.confirm, user.id, b"second")
    assert database.call(totp.secret, user.id) == b"second"
    assert database.call(totp.pending_secret, user.id) is None

    database.call(totp.begin, user.id, b"third")  # a new app: the one in use keeps working meanwhile
    assert database.call(totp.secret, user.id) == b"second"
    assert database.call(totp.confirm, user.id)
    assert database.call(totp.secret, user.id) == b"third"

    assert database.call(totp.remove, user.id)
    assert database.call(totp.secret, user.id) is None and not database.call(totp.remove, user.id)
    database.call(totp.begin, user.id, b"pending only")
    assert not database.call(totp.remove, user.id)  # nothing was in use
    assert database.call(totp.pending_secret, user.id) is None


def test_totp_reseal_only_replaces_what_was_read(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    database.call(totp.begin, user.id, b"old")
    database.call(totp.confirm, user.id)
    database.call(totp.begin, user.id, b"old pending")
    assert (user.id, b"old") in database.call(totp.all_sealed)
    assert (user.id, b"old pending") in database.call(totp.all_sealed, pending=True)
    assert not database.call(totp.reseal, user.id, b"new", was=b"changed meanwhile")
    assert database.call(totp.reseal, user.id, b"new", was=b"old")
    assert database.call(totp.reseal, user.id, b"new pending", pending=True)
    assert database.call(totp.secret, user.id) == b"new"
    assert database.call(totp.pending_secret, user.id) == b"new pending"
    assert not database.call(totp.reseal, make_user().id, b"x")  # nobody's secret is created


@pytest.fixture
def sealing_settings(tmp_path: Path) -> config.Settings:
    return config.load({"FORWARDAUTH_DATA_DIR": str(tmp_path / "data")})


def test_a_database_dump_holds_no_usable_totp_secret(
    database: Database, database_url: str, make_user: MakeUser, sealing_settings: config.Settings
) -> None:
    alice, bob = make_user(), make_user()
    secret = base64.b32encode(secrets.token_bytes(20)).decode()  # what pyotp.random_base32 makes
    raw = base64.b32decode(secret)
    sealer = load_sealer(sealing_settings)
    database.call(totp.begin, alice.id, sealer.seal(secret.encode(), alice.id))
    assert database.call(totp.confirm, alice.id)

    # The row as stored, every column as text and as bytes
    [(as_text, stored)] = rows(database, "SELECT t::text, secret FROM totp_secrets t WHERE user_id = %s", alice.id)
    stored = bytes(stored)
    for form in (secret, secret.lower(), raw.hex(), base64.b64encode(raw).decode()):
        assert form not in as_text
    for form_bytes in (secret.encode(), secret.lower().encode(), raw):
        assert form_bytes not in stored
    # and a real dump of the table
    dump = subprocess.run(
        [postgres_program("pg_dump"), "--data-only", "--table=totp_secrets", database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "totp_secrets" in dump and alice.id in dump
    for form in (secret, secret.lower(), raw.hex()):
        assert form not in dump

    # It opens with the key file and alice's id only.
    assert sealer.open(stored, alice.id) == secret.encode()
    with pytest.raises(SealError):
        sealer.open(stored, bob.id)  # the row copied to bob's does not open
    elsewhere = load_sealer(config.load({"FORWARDAUTH_DATA_DIR": str(sealing_settings.data_dir) + "-other"}))
    with pytest.raises(SealError):
        elsewhere.open(stored, alice.id)  # the database without its key file
    for key in sealing_settings.key_directory.joinpath("sealing").glob("*.key"):
        key.unlink()
    with pytest.raises(SealError):
        load_sealer(sealing_settings, create=False).open(stored, alice.id)


def test_rotating_the_sealing_key_and_resealing_every_secret(
    database: Database, make_user: MakeUser, sealing_settings: config.Settings
) -> None:
    user = make_user()
    sealer = load_sealer(sealing_settings)
    old_id = sealer.current_id
    database.call(totp.begin, user.id, sealer.seal(b"SECRET", user.id))
    database.call(totp.confirm, user.id)
    new_id = rotate_sealing_key(sealing_settings)
    for user_id, blob in database.call(totp.all_sealed):
        if user_id == user.id:
            assert sealer.sealed_with(blob) == old_id
            assert database.call(totp.reseal, user_id, sealer.seal(sealer.open(blob, user_id), user_id), was=blob)
    stored = database.call(totp.secret, user.id)
    assert stored is not None and sealer.sealed_with(stored) == new_id
    assert load_sealer(sealing_settings).open(stored, user.id) == b"SECRET"


# --- recovery codes ------------------------------------------------------------------------------

CODE_SHAPE = re.compile(r"^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$")


def test_recovery_codes_are_single_use_and_only_hashes_are_stored(database: Database, make_user: MakeUser) -> None:
    user, other = make_user(), make_user()
    codes = database.call(recovery.generate, user.id)
    assert len(codes) == recovery.CODES == 10 and len(set(codes)) == 10
    assert all(CODE_SHAPE.match(code) for code in codes)
    assert database.call(recovery.remaining, user.id) == 10

    stored = rows(database, "SELECT r::text, code_hash FROM recovery_codes r WHERE user_id = %s", user.id)
    assert len(stored) == 10 and all(len(bytes(digest)) == 32 for _, digest in stored)
    everything = " ".join(text for text, _ in stored)
    for code in codes:
        assert code not in everything and code.replace("-", "") not in everything

    assert not database.call(recovery.use, other.id, codes[0])  # another user's code
    assert database.call(recovery.use, user.id, codes[0])
    assert not database.call(recovery.use, user.id, codes[0])  # once only
    assert database.call(recovery.remaining, user.id) == 9
    typed = " ".join(codes[1].replace("-", "").upper()[i : i + 4] for i in range(0, 16, 4))
    assert database.call(recovery.use, user.id, typed)  # spaces and capitals as a person types them
    assert database.call(recovery.use, user.id, codes[2].replace("-", ""))
    for junk in ("", "x", codes[3][:-1], codes[3] + "a", "a" * 10_000, codes[3].replace("-", "\u0000")):
        assert not database.call(recovery.use, user.id, junk)
    assert database.call(recovery.remaining, user.id) == 7

    fresh = database.call(recovery.generate, user.id)  # regenerating retires the old ones
    assert not set(fresh) & set(codes)
    assert not database.call(recovery.use, user.id, codes[3])
    assert database.call(recovery.remaining, user.id) == 10


def test_recovery_code_lookalikes_are_read_as_letters() -> None:
    assert recovery.normalise("ABCD-EFGH-IJKL-MNO0") == "abcdefghijklmnoo"
    assert recovery.normalise("abcd efgh ijk1 mnb8") == "abcdefghijklmnbb"
    assert recovery.normalise("abcd-efgh-ijkl-mno9") is None  # 9 is nothing in base32


def test_a_recovery_code_raced_from_two_places_passes_once(database_url: str, make_user: MakeUser) -> None:
    user = make_user()
    db = Database(database_url, 4)
    try:
        [code, *_] = db.call(recovery.generate, user.id)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: db.call(recovery.use, user.id, code), range(8)))
    finally:
        db.close()
    assert results.count(True) == 1


# --- passkeys -----------------------------------------------------------------------------------


def add_passkey(database: Database, user: users.User, **changes: Any) -> passkeys.Passkey | None:
    fields: dict[str, Any] = {
        "credential_id": secrets.token_bytes(32),
        "name": "YubiKey",
        "public_key": b"\xa5\x01\x02cose",
        "sign_count": 5,
        "transports": ("usb", "nfc"),
        "backup_eligible": False,
        "backed_up": False,
    }
    fields.update(changes)
    return database.call(passkeys.add, user.id, **fields)


def test_passkeys_store_counter_and_flags(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    key = add_passkey(database, user)
    synced = add_passkey(
        database,
        user,
        name="Phone",
        sign_count=0,
        transports=("hybrid", "internal"),
        backup_eligible=True,
        backed_up=True,
    )
    assert key is not None and synced is not None
    assert (key.sign_count, key.transports, key.backup_eligible, key.backed_up) == (5, ("usb", "nfc"), False, False)
    assert key.last_used_at is None and key.user_id == user.id
    assert database.call(passkeys.of_user, user.id) == [key, synced]
    assert database.call(passkeys.find, key.credential_id) == key
    assert add_passkey(database, make_user(), credential_id=key.credential_id) is None  # already registered

    assert database.call(passkeys.used, key.credential_id, 9, False)
    found = database.call(passkeys.find, key.credential_id)
    assert found is not None and found.sign_count == 9 and found.last_used_at is not None
    assert not database.call(passkeys.used, key.credential_id, 9, False)  # no progress: a clone or a race
    assert not database.call(passkeys.used, key.credential_id, 3, False)
    assert database.call(passkeys.find, key.credential_id).sign_count == 9  # type: ignore[union-attr]

    assert database.call(passkeys.used, synced.credential_id, 0, False)  # keeps no counter: 0 stays fine
    assert database.call(passkeys.used, synced.credential_id, 0, True)
    again = database.call(passkeys.find, synced.credential_id)
    assert again is not None and again.sign_count == 0 and again.backed_up and again.backup_eligible


def test_passkeys_are_renamed_and_removed_by_their_owner_only(database: Database, make_user: MakeUser) -> None:
    owner, stranger = make_user(), make_user()
    key = add_passkey(database, owner)
    assert key is not None
    assert not database.call(passkeys.rename, stranger.id, key.credential_id, "mine now")
    assert not database.call(passkeys.rename, owner.id, key.credential_id, " ")
    assert not database.call(passkeys.rename, owner.id, key.credential_id, "x" * (passkeys.MAX_NAME + 1))
    assert database.call(passkeys.rename, owner.id, key.credential_id, "Desk key")
    assert [p.name for p in database.call(passkeys.of_user, owner.id)] == ["Desk key"]
    assert not database.call(passkeys.remove, stranger.id, key.credential_id)
    assert database.call(passkeys.remove, owner.id, key.credential_id)
    assert database.call(passkeys.find, key.credential_id) is None
    with pytest.raises(ValueError):
        add_passkey(database, owner, name="")
    assert database.call(passkeys.find, b"") is None and database.call(passkeys.find, b"x" * 2000) is None


def test_user_handles_are_the_uuid_bytes() -> None:
    user_id = "6f1c6f4e-7d0a-4b59-9b55-8a1f5f1b2c3d"
    handle = passkeys.user_handle(user_id)
    assert len(handle) == 16 and passkeys.user_of_handle(handle) == user_id
    assert passkeys.user_of_handle(b"short") is None


# --- the summary and the reset ------------------------------------------------------------------


def test_enrolled_summary_and_reset(database: Database, make_user: MakeUser) -> None:
    user, bystander = make_user(), make_user()
    assert database.call(secondfactors.enrolled, user.id) == secondfactors.Enrolled(False, 0, 0)
    assert not database.call(secondfactors.enrolled, user.id).any
    database.call(totp.begin, user.id, b"sealed")
    assert not database.call(secondfactors.enrolled, user.id).any  # not confirmed yet
    database.call(totp.confirm, user.id)
    add_passkey(database, user)
    add_passkey(database, user)
    database.call(recovery.generate, user.id)
    add_passkey(database, bystander)
    enrolled = database.call(secondfactors.enrolled, user.id)
    assert enrolled == secondfactors.Enrolled(True, 2, 10) and enrolled.any
    assert secondfactors.Enrolled(False, 1, 0).any and not secondfactors.Enrolled(False, 0, 10).any

    first = database.call(sessions.start, user, TTL)
    second = database.call(sessions.start, user, TTL)
    kept = database.call(sessions.start, bystander, TTL)
    done = database.call(secondfactors.reset, user.id, "192.0.2.7", "cli")

    assert done.removed == 1 + 2 + 10 and set(done.sids) == {first.sid, second.sid}
    assert database.call(secondfactors.enrolled, user.id) == secondfactors.Enrolled(False, 0, 0)
    assert database.call(sessions.refresh_info, first.refresh_token) is None
    assert database.call(sessions.refresh_info, second.refresh_token) is None
    assert database.call(sessions.refresh_info, kept.refresh_token) is not None
    assert database.call(secondfactors.enrolled, bystander.id).passkeys == 1
    [(detail, address)] = rows(
        database, "SELECT detail, client_ip FROM audit_events WHERE user_id = %s AND event = 'mfa_reset'", user.id
    )
    assert address == "192.0.2.7"
    assert detail == {"by": "cli", "totp": True, "passkeys": 2, "recovery_codes": 10, "sessions": 2}


async def test_account_services_carry_the_new_stores(settings: config.Settings) -> None:
    from forwardauth.accounts.services import build_account_services
    from forwardauth.sealing import sealing_keys

    services = build_account_services(settings)
    try:
        assert [k.id for k in sealing_keys(settings)] == [services.sealer.current_id]  # made at build
        blob = services.sealer.seal(b"s", "u")
        assert services.sealer.open(blob, "u") == b"s"
        pending_id = await services.pending.put(a_pending())
        assert await services.pending.take(pending_id) == a_pending()
        key = services.onetime.keys.otp_used("u", 1)
        assert key.startswith(settings.redis_prefix)
        assert await services.onetime.first_use(key, 5) and not await services.onetime.first_use(key, 5)
    finally:
        await services.close()
