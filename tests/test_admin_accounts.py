"""The admin console's actions (issue 16), without HTTP, on real PostgreSQL and Redis (and a real
SMTP server for e-mailed links): each audited ``admin`` with the acting administrator, sessions
ended at once, no administrator locked out by their own hand."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from forwardauth.accounts import admin, links
from forwardauth.accounts.services import AccountServices
from forwardauth.stores import audit, clients, sessions, users
from forwardauth.stores.postgres import Database

from .mailbox import Mailbox, link_in, token_in
from .support import rows
from .test_links import BASE, NEW_PASSWORD, fresh
from .test_links import services_for as build

MakeUser = Callable[..., users.User]


@pytest.fixture
async def services(env: dict[str, str], mailbox: Mailbox) -> AsyncIterator[AccountServices]:
    built = build(env, FORWARDAUTH_SMTP_URL=mailbox.url())
    yield built
    await links.settle()
    await built.close()


@pytest.fixture
def actor(make_user: MakeUser) -> admin.Actor:
    me = make_user(roles=("admin", "user"))
    return admin.Actor(me.id, me.username, "192.0.2.10")


def admin_events(database: Database, actor: admin.Actor) -> list[tuple[str | None, dict[str, Any]]]:
    """(username acted on, detail) of each ``admin`` event by ``actor``, oldest first."""
    found = rows(
        database,
        "SELECT username, detail, client_ip FROM audit_events WHERE event = 'admin' AND detail->>'by' = %s ORDER BY id",
        actor.username,
    )
    assert all(row[2] == actor.address for row in found)
    return [(row[0], row[1]) for row in found]


async def live_session(services: AccountServices, database: Database, user: users.User) -> tuple[str, str]:
    session = database.call(sessions.start, user, 3600)
    jti = secrets.token_hex(8)
    await services.revocations.register(session.sid, jti, 60)
    return session.sid, jti


async def live(services: AccountServices, session: tuple[str, str]) -> bool:
    return await services.revocations.is_live(*session, int(time.time()) + 60)


# --- users -------------------------------------------------------------------------------------------


async def test_a_created_account_gets_a_first_password_link_shown_once(
    services: AccountServices, database: Database, actor: admin.Actor
) -> None:
    name = f"new-{secrets.token_hex(4)}"
    user, token = await admin.create_user(services, actor, name, None, ["user", "ops"], False, BASE)
    assert user.username == name and user.roles == ("user", "ops") and not user.disabled
    assert database.call(users.authenticate, services.passwords, name, token, None) is None  # no usable password
    assert await links.link_user(services, token, "set_password") == user
    await links.reset_password(services, token, NEW_PASSWORD, None)
    assert database.call(users.authenticate, services.passwords, name, NEW_PASSWORD, None) is not None
    assert admin_events(database, actor) == [
        (name, {"by": actor.username, "action": "create_user", "roles": ["user", "ops"], "delivery": "link"})
    ]


async def test_a_created_account_can_get_its_link_by_mail(
    services: AccountServices, mailbox: Mailbox, actor: admin.Actor
) -> None:
    address = f"new-{secrets.token_hex(4)}@mail.example.test"
    user, token = await admin.create_user(services, actor, f"new-{secrets.token_hex(4)}", address, [], True, BASE)
    message = await mailbox.arrival(address)
    assert token_in(message) == token and link_in(message).startswith(BASE + "/account/reset?token=")
    assert user.username in str(message.get_body(("plain",)))


async def test_creating_refuses_what_cannot_work(
    env: dict[str, str], services: AccountServices, actor: admin.Actor, make_user: MakeUser
) -> None:
    with pytest.raises(admin.AdminError, match="e-mail address"):
        await admin.create_user(services, actor, f"new-{secrets.token_hex(4)}", None, [], True, BASE)
    taken = make_user()
    with pytest.raises(users.UserError, match="already exists"):
        await admin.create_user(services, actor, taken.username, None, [], False, BASE)
    for name, email, roles in (("", None, []), ("x y", None, []), ("ok", "not-mail", []), ("ok2", None, ["a b"])):
        with pytest.raises(users.UserError):
            await admin.create_user(services, actor, name, email, roles, False, BASE)
    without_mail = build(env)
    try:
        with pytest.raises(admin.AdminError, match="FORWARDAUTH_SMTP_URL"):
            await admin.create_user(without_mail, actor, f"n-{secrets.token_hex(4)}", "a@b.test", [], True, BASE)
    finally:
        await without_mail.close()


async def test_disabling_ends_every_session_at_once_but_never_ones_own_account(
    services: AccountServices, database: Database, actor: admin.Actor, make_user: MakeUser
) -> None:
    user = make_user()
    session = await live_session(services, database, user)
    assert await admin.set_disabled(services, actor, user.username, True) == 1
    assert not await live(services, session)
    assert fresh(database, user.id).disabled
    assert await admin.set_disabled(services, actor, user.username, False) == 0
    assert not fresh(database, user.id).disabled

    mine = await live_session(services, database, fresh(database, actor.user_id))
    with pytest.raises(admin.AdminError, match="your own account"):
        await admin.set_disabled(services, actor, actor.username.upper(), True)
    assert not fresh(database, actor.user_id).disabled and await live(services, mine)
    with pytest.raises(users.UserError, match="no user"):
        await admin.set_disabled(services, actor, "nobody-" + secrets.token_hex(4), True)
    assert [detail["action"] for _, detail in admin_events(database, actor)] == ["disable", "enable"]


async def test_a_removed_role_ends_the_sessions_and_ones_own_admin_role_stays(
    services: AccountServices, database: Database, actor: admin.Actor, make_user: MakeUser
) -> None:
    user = make_user(roles=("user", "ops"))
    session = await live_session(services, database, user)
    added = await admin.set_roles(services, actor, user.username, ["user", "ops", "billing"])
    assert added.roles == ("user", "ops", "billing") and await live(services, session)  # only added
    removed = await admin.set_roles(services, actor, user.username, ["user"])
    assert removed.roles == ("user",) and not await live(services, session)

    with pytest.raises(admin.AdminError, match="own 'admin' role"):
        await admin.set_roles(services, actor, actor.username, ["user"])
    assert fresh(database, actor.user_id).roles == ("admin", "user")
    assert (await admin.set_roles(services, actor, actor.username, ["admin"])).roles == ("admin",)  # may drop others
    with pytest.raises(users.UserError):
        await admin.set_roles(services, actor, user.username, ["not a role"])
    details = [detail for _, detail in admin_events(database, actor)]
    assert details[1] == {
        "by": actor.username,
        "action": "roles",
        "roles": ["user"],
        "removed": ["billing", "ops"],
        "sessions_ended": 1,
    }


async def test_second_factors_reset_sessions_ended_and_one_session_ended(
    services: AccountServices, database: Database, actor: admin.Actor, make_user: MakeUser
) -> None:
    user = make_user()
    first, second, third = [await live_session(services, database, user) for _ in range(3)]
    assert await admin.end_session(services, actor, first[0])
    assert not await live(services, first) and await live(services, second)
    assert not await admin.end_session(services, actor, first[0])  # ended already
    assert not await admin.end_session(services, actor, "no-such-session\x00")
    assert await admin.end_user_sessions(services, actor, user.username) == 2
    assert not await live(services, second) and not await live(services, third)

    again = await live_session(services, database, user)
    database.call(
        lambda conn: conn.cursor().execute(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (%s, %s)", (user.id, secrets.token_bytes(32))
        )
    )
    assert await admin.reset_second_factors(services, actor, user.username) == 1
    assert not await live(services, again)
    actions = [(name, detail["action"]) for name, detail in admin_events(database, actor)]
    assert actions == [(user.username, "end_session"), (user.username, "end_sessions"), (user.username, "mfa_reset")]


async def test_a_new_password_link_replaces_the_earlier_one(
    services: AccountServices, database: Database, actor: admin.Actor, make_user: MakeUser
) -> None:
    user = make_user()
    first = await admin.password_link(services, actor, user.username)
    second = await admin.password_link(services, actor, user.username)
    assert await links.link_user(services, first, "set_password") is None
    assert await links.link_user(services, second, "set_password") == user
    database.call(users.set_disabled, user.username, True)
    with pytest.raises(admin.AdminError, match="disabled"):
        await admin.password_link(services, actor, user.username)


async def test_users_are_found_by_any_part_of_name_address_or_role(
    services: AccountServices, actor: admin.Actor, make_user: MakeUser
) -> None:
    tag = secrets.token_hex(4)
    alice = make_user(name=f"alice-{tag}", email=f"alice@{tag}.example.test", roles=("finance",))
    bob = make_user(name=f"bob-{tag}", email=None)
    assert await admin.search_users(services, tag) == [alice, bob]
    assert await admin.search_users(services, f"ALICE@{tag}") == [alice]
    assert await admin.search_users(services, f"{tag} finance") == [alice]
    assert await admin.search_users(services, f"{tag} nothing-like-it") == []
    assert len(await admin.search_users(services, "", limit=1)) == 1
    found = await admin.user_detail(services, bob.username.upper())
    assert found is not None and found[0] == bob and not found[1].any
    assert await admin.user_detail(services, "nobody\x00") is None


# --- clients, keys, the audit trail -------------------------------------------------------------------


async def test_clients_are_created_disabled_and_rotated_with_the_admin_audited(
    services: AccountServices, database: Database, actor: admin.Actor
) -> None:
    client_id = f"app-{secrets.token_hex(4)}"
    created, secret = await admin.create_client(
        services, actor, client_id, ["https://app.example.test/cb"], ["openid"], [], False, True
    )
    assert secret is not None and created.check_secret(secret) and created.trusted
    assert created.grant_types == ("authorization_code",)
    assert client_id in [c.id for c in await admin.list_clients(services)]
    rotated = await admin.rotate_client_secret(services, actor, client_id)
    stored = database.call(clients.find, client_id)
    assert stored is not None and stored.check_secret(rotated) and not stored.check_secret(secret)
    await admin.set_client_disabled(services, actor, client_id, True)
    assert database.call(clients.find, client_id).disabled  # type: ignore[union-attr]
    await admin.set_client_disabled(services, actor, client_id, False)

    public, none = await admin.create_client(
        services, actor, f"pub-{secrets.token_hex(4)}", ["https://app.example.test/cb"], [], [], True, False
    )
    assert none is None and public.public
    with pytest.raises(clients.ClientError, match="public"):
        await admin.rotate_client_secret(services, actor, public.id)
    with pytest.raises(clients.ClientError):
        await admin.create_client(services, actor, "bad id!", [], [], [], False, False)
    for unknown in ("no-such-client", "bad\x00id"):
        with pytest.raises(clients.ClientError, match="no client"):
            await admin.set_client_disabled(services, actor, unknown, True)
        with pytest.raises(clients.ClientError, match="no client"):
            await admin.rotate_client_secret(services, actor, unknown)
    actions = [detail["action"] for _, detail in admin_events(database, actor)]
    assert actions == ["create_client", "rotate_client_secret", "disable_client", "enable_client", "create_client"]


async def test_signing_keys_are_listed_and_rotated(
    services: AccountServices, database: Database, actor: admin.Actor
) -> None:
    before = await admin.list_keys(services)
    assert len(before) == 1 and before[0].current and before[0].alg == "RS256"
    kid = await admin.rotate_signing_key(services, actor)
    after = await admin.list_keys(services)
    assert [k.kid for k in after] == [before[0].kid, kid]
    assert [k.current for k in after] == [False, True]
    assert all(abs(k.created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5) for k in after)
    assert admin_events(database, actor) == [
        (None, {"by": actor.username, "action": "rotate_key", "kid": kid, "alg": "RS256"})
    ]


async def test_hs256_has_no_key_files_to_list_or_rotate(env: dict[str, str], actor: admin.Actor) -> None:
    hs = build(env, FORWARDAUTH_SIGNING_ALG="HS256", FORWARDAUTH_HMAC_SECRET=secrets.token_urlsafe(32))
    try:
        assert await admin.list_keys(hs) == []
        with pytest.raises(admin.AdminError, match="HMAC"):
            await admin.rotate_signing_key(hs, actor)
    finally:
        await hs.close()


async def test_the_audit_trail_is_filtered_and_paged(
    services: AccountServices, actor: admin.Actor, make_user: MakeUser
) -> None:
    user = make_user()
    for _ in range(3):
        await admin.end_user_sessions(services, actor, user.username)
    page = await admin.audit_page(
        services, username=user.username.upper(), event="admin", since=None, until=None, before_id=None, limit=2
    )
    assert len(page) == 2 and page[0].id > page[1].id
    older = await admin.audit_page(
        services, username=user.username, event="admin", since=None, until=None, before_id=page[-1].id
    )
    assert len(older) == 1 and older[0].detail["by"] == actor.username
    assert await admin.audit_page(
        services, username=user.username, event=None, since=None, until=None, before_id=10**30
    )
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert (
        await admin.audit_page(services, username=user.username, event=None, since=future, until=None, before_id=None)
        == []
    )
    assert isinstance(page[0], audit.Event)
    for odd in ("no_such_event", "admin\x00"):
        assert (
            await admin.audit_page(services, username="x\x00", event=odd, since=None, until=None, before_id=None) == []
        )
