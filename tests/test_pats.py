"""Personal access tokens on real PostgreSQL and Redis (issue 17), without HTTP: migration 0008,
made / listed / revoked, the Redis record and liveness /auth reads, revoked with their user (a
disable, a password change, ``user revoke``), written to Redis again by ``sync``, and the last
use recorded in batches with a new address audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from forwardauth import config
from forwardauth.accounts import changes
from forwardauth.accounts import pats as tokens
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.core import pats as core
from forwardauth.stores import migrations, users
from forwardauth.stores import pats as stored
from forwardauth.stores.postgres import Database

from .support import database_at, execute, rows

DAY = 86400
MakeUser = Callable[..., users.User]


@pytest.fixture
async def services(env: dict[str, str]) -> AsyncIterator[AccountServices]:
    own = {**env, "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}{secrets.token_hex(4)}:"}
    built = build_account_services(config.load(own))
    yield built
    await built.close()


async def live(services: AccountServices, token: str) -> bool:
    """What /auth asks: the record, then the revocation store."""
    claims = await tokens.resolve(services, token)
    return claims is not None and await services.revocations.is_live(claims.sid, claims.jti, claims.expires_at)


def events(database: Database, user: users.User, event: str) -> list[dict[str, Any]]:
    found = rows(
        database, "SELECT detail FROM audit_events WHERE user_id = %s AND event = %s ORDER BY id", user.id, event
    )
    return [row[0] for row in found]


def revoked_at(database: Database, token_id: str) -> Any:
    return rows(database, "SELECT revoked_at FROM personal_tokens WHERE id = %s", token_id)[0][0]


# --- migration 0008 ------------------------------------------------------------------------------


@pytest.fixture
def database_at_0007() -> Iterator[str]:
    with database_at(7, "forwardauth_mig8") as url:
        yield url


def test_migration_0008_adds_the_table_to_a_database_with_users(database_at_0007: str) -> None:
    url = database_at_0007
    user = execute(url, "INSERT INTO users (username, password_hash) VALUES ('old', 'x') RETURNING id::text")[0][0]
    assert migrations.migrate(url)[0] == "0008_personal_tokens.sql"  # (and any later ones)
    insert = (
        "INSERT INTO personal_tokens (id, user_id, name, token_hash, expires_at, created_by)"
        " VALUES (%s, %s, 'ci', %s, now() + interval '1 day', 'cli')"
    )
    execute(url, insert, "t1", user, secrets.token_bytes(32))
    with pytest.raises(Exception, match="personal_tokens_name"):  # one live token of a name per user
        execute(url, insert, "t2", user, secrets.token_bytes(32))
    execute(url, "UPDATE personal_tokens SET revoked_at = now() WHERE id = 't1'")
    execute(url, insert, "t2", user, secrets.token_bytes(32))  # a revoked one's name is free again
    with pytest.raises(Exception, match="token_hash"):  # a SHA-256, nothing else
        execute(url, insert.replace("'ci'", "'other'"), "t3", user, b"short")
    execute(url, "DELETE FROM users WHERE id = %s", user)  # the tokens go with their user
    assert execute(url, "SELECT count(*) FROM personal_tokens") == [(0,)]


# --- made, listed, revoked -----------------------------------------------------------------------


async def test_a_token_is_made_live_and_only_its_digest_kept(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user(roles=("dev",), email="dev@example.test")
    info, token = await tokens.create(services, user.username.upper(), " CI ", ["read", "git:push"], 90 * DAY, "cli")

    assert core.looks_like(token) and info.name == "CI" and info.scopes == ("read", "git:push")
    assert info.user_id == user.id and info.created_by == "cli" and info.revoked_at is None
    assert abs((info.expires_at - info.created_at).total_seconds() - 90 * DAY) < 5
    claims = await tokens.resolve(services, token)
    assert claims is not None
    assert claims.identity == user.identity and claims.scopes == ("read", "git:push")
    assert claims.sid == f"pat-{info.id}" and claims.jti == info.id
    assert claims.expires_at == int(info.expires_at.timestamp())
    assert await live(services, token)
    stored_hash = rows(database, "SELECT token_hash FROM personal_tokens WHERE id = %s", info.id)[0][0]
    assert bytes(stored_hash).hex() == core.digest(token)
    dumped = str(rows(database, "SELECT * FROM personal_tokens WHERE id = %s", info.id))
    assert token not in dumped and token[7:] not in dumped
    assert events(database, user, "pat_created")[-1]["token_id"] == info.id
    assert token not in str(events(database, user, "pat_created"))
    assert [t.id for t in await tokens.list_for(services, user.username)] == [info.id]


async def test_lookups_of_what_is_no_token_are_none(services: AccountServices) -> None:
    assert await tokens.resolve(services, "not a token") is None
    assert await tokens.resolve(services, core.new_token()) is None  # the right shape, unknown


async def test_an_expired_record_is_none(services: AccountServices, make_user: MakeUser) -> None:
    user = make_user()
    token = core.new_token()
    claims = core.PatClaims("pat-x", "x", user.identity, (), int(time.time()) - 1)
    await tokens.records(services).put(core.digest(token), claims, 60)
    assert await tokens.resolve(services, token) is None


@pytest.mark.parametrize(
    ("name", "scopes", "ttl", "message"),
    [
        ("", [], DAY, "name"),
        ("a\nb", [], DAY, "name"),
        ("ok", ["two words"], DAY, "scope"),
        ("ok", [], 366 * DAY, "at most 365d"),
        ("ok", [], 10, "at least a minute"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_written(
    services: AccountServices,
    make_user: MakeUser,
    database: Database,
    name: str,
    scopes: list[str],
    ttl: int,
    message: str,
) -> None:
    user = make_user()
    with pytest.raises(stored.PatError, match=message):
        await tokens.create(services, user.username, name, scopes, ttl, "cli")
    assert rows(database, "SELECT count(*) FROM personal_tokens WHERE user_id = %s", user.id) == [(0,)]


async def test_names_are_unique_among_live_tokens_and_users_must_exist_and_be_enabled(
    services: AccountServices, make_user: MakeUser
) -> None:
    user = make_user()
    first, _ = await tokens.create(services, user.username, "ci", [], DAY, "cli")
    with pytest.raises(stored.PatError, match="already has a token named 'ci'"):
        await tokens.create(services, user.username, "ci", [], DAY, "cli")
    assert await tokens.revoke(services, user.username, first.id, "cli")
    await tokens.create(services, user.username, "ci", [], DAY, "cli")  # free again
    with pytest.raises(users.UserError, match="no user"):
        await tokens.create(services, "nobody-" + secrets.token_hex(4), "ci", [], DAY, "cli")
    await changes.set_user_disabled(services, user.username, True)
    with pytest.raises(stored.PatError, match="disabled"):
        await tokens.create(services, user.username, "later", [], DAY, "cli")


async def test_a_revoked_token_is_refused_and_its_record_gone(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user, other = make_user(), make_user()
    info, token = await tokens.create(services, user.username, "ci", [], DAY, "cli")
    kept, kept_token = await tokens.create(services, user.username, "other", [], DAY, "cli")

    assert not await tokens.revoke(services, other.username, info.id, "cli")  # not theirs
    assert not await tokens.revoke(services, user.username, "no-such-id", "cli")
    assert await live(services, token)

    assert await tokens.revoke(services, user.username, info.id, "portal")
    assert not await live(services, token) and await tokens.resolve(services, token) is None
    assert revoked_at(database, info.id) is not None
    assert await live(services, kept_token)  # the user's other token stays
    assert events(database, user, "pat_revoked") == [{"token_id": info.id, "name": "ci", "by": "portal"}]
    assert await tokens.revoke(services, user.username, info.id, "cli")  # again: Redis again, audited once
    assert len(events(database, user, "pat_revoked")) == 1
    now = dt.datetime.now(dt.UTC)
    assert {t.id: t.state(now) for t in await tokens.list_for(services, user.username)} == {
        info.id: "revoked",
        kept.id: "live",
    }


async def test_a_token_revoked_while_being_made_is_refused(
    services: AccountServices, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disable commits between the token's row and its registration in Redis, and its Redis part
    runs before that registration: the token is found revoked afterwards and revoked again."""
    user = make_user()
    publish = tokens._publish
    made: list[str] = []

    async def disabled_meanwhile(
        svc: AccountServices, token_digest: str, claims: core.PatClaims, again: bool = False
    ) -> None:
        await changes.set_user_disabled(svc, user.username, True)
        await publish(svc, token_digest, claims, again)
        made.append(claims.sid)

    monkeypatch.setattr(tokens, "_publish", disabled_meanwhile)
    with pytest.raises(stored.PatError, match="revoked while this one was made"):
        await tokens.create(services, user.username, "ci", [], DAY, "cli")
    assert made and not await services.revocations.is_live(made[0], made[0][4:], int(time.time()) + 60)


async def test_nothing_is_made_while_redis_is_down(
    env: dict[str, str], make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    down = build_account_services(config.load({**env, "FORWARDAUTH_REDIS_URL": "redis://127.0.0.1:9/0"}))
    try:
        with pytest.raises(tokens.RedisUnavailable, match="no token was made"):
            await tokens.create(down, user.username, "ci", [], DAY, "cli")
    finally:
        await down.close()
    assert rows(database, "SELECT count(*) FROM personal_tokens WHERE user_id = %s", user.id) == [(0,)]


async def test_a_token_redis_refused_to_register_is_revoked_unused(
    services: AccountServices, make_user: MakeUser, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user()

    async def refused(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(tokens, "_publish", refused)
    with pytest.raises(tokens.RedisUnavailable, match="revoked unused"):
        await tokens.create(services, user.username, "ci", [], DAY, "cli")
    assert rows(database, "SELECT revoked_at IS NOT NULL FROM personal_tokens WHERE user_id = %s", user.id) == [(True,)]


async def test_nothing_is_revoked_while_redis_is_down(
    env: dict[str, str], services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    info, token = await tokens.create(services, user.username, "ci", [], DAY, "cli")
    down = build_account_services(config.load({**env, "FORWARDAUTH_REDIS_URL": "redis://127.0.0.1:9/0"}))
    try:
        with pytest.raises(tokens.RedisUnavailable, match="nothing was revoked"):
            await tokens.revoke(down, user.username, info.id, "cli")
    finally:
        await down.close()
    assert revoked_at(database, info.id) is None and await live(services, token)


# --- revoked with their user ---------------------------------------------------------------------


async def two_tokens(services: AccountServices, user: users.User) -> list[tuple[stored.PatInfo, str]]:
    return [await tokens.create(services, user.username, name, [], DAY, "cli") for name in ("a", "b")]


@pytest.mark.parametrize("change", ["disable", "password", "revoke"])
async def test_the_users_tokens_end_with_a_disable_a_password_change_or_user_revoke(
    services: AccountServices, make_user: MakeUser, database: Database, change: str
) -> None:
    user, bystander = make_user(), make_user()
    made = await two_tokens(services, user)
    _, other_token = await tokens.create(services, bystander.username, "a", [], DAY, "cli")

    if change == "disable":
        _, count = await changes.set_user_disabled(services, user.username, True)
    elif change == "password":
        _, count = await changes.change_password(services, user.username, "a new passphrase 5521 kettle")
    else:
        _, count = await changes.revoke_user(services, user.username)

    assert count == 0  # sessions counted, tokens not
    for info, token in made:
        assert not await live(services, token)
        assert revoked_at(database, info.id) is not None
    assert await live(services, other_token)
    assert events(database, user, "pat_revoked")[-1]["tokens"] == 2
    if change == "disable":  # enabling again brings none back
        await changes.set_user_disabled(services, user.username, False)
        assert not any([await live(services, token) for _, token in made])


async def test_a_second_user_revoke_revokes_in_redis_again(services: AccountServices, make_user: MakeUser) -> None:
    """After Redis refused the first time, running the command again must still revoke the tokens
    there, though PostgreSQL has them revoked already."""
    user = make_user()
    _, token = await tokens.create(services, user.username, "a", [], DAY, "cli")
    await services.db.run(stored.revoke_user, user.id, "revoked")  # as if Redis had then refused
    assert await live(services, token)
    await changes.revoke_user(services, user.username)
    assert not await live(services, token)


# --- sync after Redis lost its data --------------------------------------------------------------


async def forget_redis(services: AccountServices) -> None:
    client, prefix = services.onetime.client, services.onetime.keys.prefix
    found = [key async for key in client.scan_iter(match=prefix + "*")]
    if found:
        await client.delete(*found)


async def test_sync_writes_live_tokens_again_and_only_them(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user, disabled = make_user(), make_user()
    (_, kept), (gone, revoked) = await two_tokens(services, user)
    _, of_disabled = await tokens.create(services, disabled.username, "a", [], DAY, "cli")
    expired = core.new_token()
    rows(
        database,
        "INSERT INTO personal_tokens (id, user_id, name, token_hash, created_at, expires_at, created_by) VALUES"
        " (%s, %s, 'old', %s, now() - interval '2 days', now() - interval '1 day', 'cli') RETURNING id",
        secrets.token_hex(8),
        user.id,
        bytes.fromhex(core.digest(expired)),
    )
    await tokens.revoke(services, user.username, gone.id, "cli")
    await changes.set_user_disabled(services, disabled.username, True)
    await forget_redis(services)
    assert not await live(services, kept)

    count = await tokens.sync(services)

    assert count >= 1  # the run's database holds other tests' tokens too
    assert await live(services, kept)
    for token in (revoked, of_disabled, expired):
        assert not await live(services, token) and await tokens.resolve(services, token) is None


async def test_sync_deletes_the_records_a_revocation_left(services: AccountServices, make_user: MakeUser) -> None:
    user = make_user()
    _, token = await tokens.create(services, user.username, "a", [], DAY, "cli")
    await changes.revoke_user(services, user.username)
    assert await tokens.resolve(services, token) is not None and not await live(services, token)
    await tokens.sync(services)
    assert await tokens.resolve(services, token) is None


async def test_a_token_keeps_its_roles_through_a_sync_unless_redis_lost_its_record(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user(roles=("dev",))
    _, token = await tokens.create(services, user.username, "a", [], DAY, "cli")
    database.call(users.modify, user.username, lambda roles: [*roles, "ops"], None, False)

    await tokens.sync(services)  # as `serve` does at every start
    claims = await tokens.resolve(services, token)
    assert claims is not None and claims.identity.roles == ("dev",)

    await forget_redis(services)
    await tokens.sync(services)
    claims = await tokens.resolve(services, token)
    assert claims is not None and claims.identity.roles == ("dev", "ops")
    assert await live(services, token)


async def test_a_token_revoked_during_a_sync_stays_revoked(
    services: AccountServices, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user()
    info, token = await tokens.create(services, user.username, "a", [], DAY, "cli")
    publish = tokens._publish
    revoked: list[bool] = []

    async def revoked_meanwhile(
        svc: AccountServices, token_digest: str, claims: core.PatClaims, again: bool = False
    ) -> None:
        if claims.jti == info.id and not revoked:
            revoked.append(await tokens.revoke(svc, user.username, info.id, "cli"))
        await publish(svc, token_digest, claims, again)

    monkeypatch.setattr(tokens, "_publish", revoked_meanwhile)
    await tokens.sync(services)
    assert revoked == [True] and not await live(services, token)


# --- last use ------------------------------------------------------------------------------------


async def test_last_use_is_written_in_batches_and_a_new_address_audited_once(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    info, token = await tokens.create(services, user.username, "ci", [], DAY, "cli")
    digest = core.digest(token)
    recorder = tokens.LastUsed(services.db)
    now = time.time()
    recorder.note(digest, "192.0.2.1", now)
    recorder.note(digest, "192.0.2.2", now + 2)
    recorder.note(digest, "192.0.2.1", now + 1)  # older than the latest: the latest stays
    assert len(recorder) == 1
    assert rows(database, "SELECT last_used_at FROM personal_tokens WHERE id = %s", info.id) == [(None,)]

    assert await recorder.flush() == 2
    ((used_at, address),) = rows(
        database, "SELECT last_used_at, last_used_ip FROM personal_tokens WHERE id = %s", info.id
    )
    assert abs(used_at.timestamp() - (now + 2)) < 0.01 and address == "192.0.2.2"
    audited = events(database, user, "pat_new_address")
    assert audited == [{"token_id": info.id, "name": "ci"}] * 2
    addresses = rows(
        database,
        "SELECT client_ip FROM audit_events WHERE user_id = %s AND event = 'pat_new_address' ORDER BY id",
        user.id,
    )
    assert addresses == [("192.0.2.1",), ("192.0.2.2",)]

    assert await recorder.flush() == 0 and len(recorder) == 0  # nothing noted: nothing written
    recorder.note(digest, "192.0.2.1", now + 10)
    recorder.note(digest, "198.51.100.7", now + 11)
    assert await recorder.flush() == 1  # only the address not seen before
    assert len(events(database, user, "pat_new_address")) == 3
    listed = (await tokens.list_for(services, user.username))[0]
    assert listed.last_used_ip == "198.51.100.7"


async def test_last_use_is_bounded_and_kept_when_postgresql_refuses(env: dict[str, str]) -> None:
    unreachable = Database("postgresql://nobody@127.0.0.1:9/none", 1)
    recorder = tokens.LastUsed(unreachable, max_tokens=2)
    for name in ("a", "b", "c"):
        recorder.note(core.digest(name), "192.0.2.1", 1.0)
    assert len(recorder) == 2 and recorder.dropped == 1
    try:
        assert await recorder.flush() == 0
    finally:
        unreachable.close()
    assert len(recorder) == 2  # kept for the next flush


async def test_the_background_task_flushes_once_more_when_stopped(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    info, token = await tokens.create(services, user.username, "ci", [], DAY, "cli")
    recorder = tokens.LastUsed(services.db, interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    recorder.note(core.digest(token), "203.0.113.9", time.time())
    stop.set()
    await asyncio.wait_for(task, 30)
    assert rows(database, "SELECT last_used_ip FROM personal_tokens WHERE id = %s", info.id) == [("203.0.113.9",)]
