"""The stores behind the OpenID Connect provider (issue 15), on real PostgreSQL and Redis:
migration 0006, the clients' OIDC fields, consents, authorization codes, the back-channel logout
queue, and OIDC clients' sessions ending with the browser session they were opened from."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest

from forwardauth import config
from forwardauth.accounts import changes
from forwardauth.accounts.issue import rotate_refresh
from forwardauth.accounts.secondfactor import complete
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.constants import RedisKeys
from forwardauth.core.authn import OTP, PASSWORD
from forwardauth.redisurl import RedisSettings
from forwardauth.stores import cascade, clients, consents, migrations, sessions, users
from forwardauth.stores.backchannel import LEASE_SECONDS, MAX_ATTEMPTS, BackchannelQueue, Notice, backoff
from forwardauth.stores.codes import SPENT_TTL, AuthorizationCode, Codes
from forwardauth.stores.pending import Pending
from forwardauth.stores.postgres import Database
from forwardauth.stores.redis import RedisClient, close, connect

from .support import database_at, execute, free_port, rows, wait_until

TTL = 3600
MakeUser = Callable[..., users.User]
RP = "https://rp.example.test/callback"


def new_id(kind: str = "rp") -> str:
    return f"{kind}-{secrets.token_hex(4)}"


def oidc_client(database: Database, **options: Any) -> tuple[clients.Client, str | None]:
    fields: dict[str, Any] = {"redirect_uris": [RP], **options}
    public = fields.pop("public", False)
    return database.call(
        clients.create, new_id(), ["authorization_code", "refresh_token"], ["openid", "profile"], [], public, **fields
    )


# --- migration 0006 on a database holding clients and sessions ----------------------------------


@pytest.fixture
def database_at_0005() -> Iterator[str]:
    with database_at(5, "forwardauth_mig6") as url:
        yield url


def test_migration_0006_keeps_existing_clients_and_sessions(database_at_0005: str) -> None:
    url = database_at_0005
    execute(url, "INSERT INTO clients (id, grant_types) VALUES ('old', '{password}')")
    user = execute(url, "INSERT INTO users (username, password_hash) VALUES ('old', 'x') RETURNING id::text")[0][0]
    execute(
        url,
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, client_id)"
        " VALUES ('\\x01', %s, 'fam', now() + interval '1 day', 'old')",
        user,
    )
    assert migrations.migrate(url)[0] == "0006_oidc.sql"  # and those after it
    assert execute(
        url, "SELECT redirect_uris, post_logout_redirect_uris, trusted, backchannel_logout_uri FROM clients"
    ) == [([], [], False, None)]
    assert execute(url, "SELECT parent_sid FROM refresh_tokens") == [(None,)]
    assert execute(url, "SELECT count(*) FROM consents") == [(0,)]
    execute(url, "INSERT INTO consents (user_id, client_id, scopes) VALUES (%s, 'old', '{openid}')", user)
    execute(url, "DELETE FROM clients WHERE id = 'old'")  # a consent goes with its client (and user)
    assert execute(url, "SELECT count(*) FROM consents") == [(0,)]


# --- clients: redirect URIs and the other OIDC fields --------------------------------------------


def test_client_with_oidc_fields_round_trips(database: Database) -> None:
    client, secret = oidc_client(
        database,
        redirect_uris=[RP, "http://127.0.0.1:8400/cb", RP],
        post_logout_redirect_uris=["https://rp.example.test/bye"],
        trusted=True,
        backchannel_logout_uri="https://rp.example.test/backchannel?x=1",
    )
    assert secret is not None and not client.public
    assert client.redirect_uris == (RP, "http://127.0.0.1:8400/cb")  # duplicates dropped, order kept
    assert client.post_logout_redirect_uris == ("https://rp.example.test/bye",)
    assert client.trusted and client.backchannel_logout_uri == "https://rp.example.test/backchannel?x=1"
    assert database.call(clients.find, client.id) == client
    assert client in database.call(clients.list_all)


def test_public_oidc_client_and_default_grant(database: Database) -> None:
    public, secret = oidc_client(database, public=True)
    assert secret is None and public.public and public.grant_types == ("authorization_code", "refresh_token")
    plain, _ = database.call(clients.create, new_id(), [], ["openid"], [], False, redirect_uris=[RP])
    assert plain.grant_types == ("authorization_code",) and not plain.trusted
    old_style, _ = database.call(clients.create, new_id(), [], [], [], False)
    assert old_style.grant_types == ("client_credentials",) and old_style.redirect_uris == ()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://rp.example.test/cb", "must use https"),
        ("http://localhost.evil.test/cb", "must use https"),
        ("https://rp.example.test/cb#frag", "fragment"),
        ("https://rp.example.test/cb#", "fragment"),
        ("/callback", "absolute"),
        ("rp.example.test/cb", "absolute"),
        ("https://user:pw@rp.example.test/cb", "user name or password"),
        ("https://rp.example.test/c b", "no spaces"),
        ("https://rp.example.test/\ncb", "control characters"),
        ("https://rp.example.test:99999/cb", "not a valid URI"),
        ("javascript:alert(1)", "absolute"),
        ("https://rp.example.test/" + "a" * 2000, "1 to 2000"),
        ("", "1 to 2000"),
    ],
)
def test_bad_redirect_uris_are_refused_naming_the_value(database: Database, uri: str, message: str) -> None:
    with pytest.raises(clients.ClientError, match=message) as refused:
        oidc_client(database, redirect_uris=[uri])
    assert "redirect URI" in str(refused.value) and repr(uri[:100]) in str(refused.value)


@pytest.mark.parametrize("uri", ["http://localhost:8080/cb", "http://127.0.0.1/cb", "http://[::1]:9/cb", RP])
def test_loopback_http_and_https_redirect_uris_are_accepted(database: Database, uri: str) -> None:
    assert oidc_client(database, redirect_uris=[uri])[0].redirect_uris == (uri,)


def test_oidc_fields_must_fit_the_grants(database: Database) -> None:
    with pytest.raises(clients.ClientError, match="needs a redirect URI"):
        database.call(clients.create, new_id(), ["authorization_code"], [], [], False)
    with pytest.raises(clients.ClientError, match="for the authorization_code grant"):
        database.call(clients.create, new_id(), ["password"], [], [], False, redirect_uris=[RP])
    with pytest.raises(clients.ClientError, match=r"back-channel logout URI 'http://rp\.example\.test/bc'"):
        oidc_client(database, backchannel_logout_uri="http://rp.example.test/bc")
    with pytest.raises(clients.ClientError, match="post-logout redirect URI"):
        oidc_client(database, post_logout_redirect_uris=["https://rp.example.test/bye#x"])
    with pytest.raises(clients.ClientError, match="public client"):
        database.call(clients.create, new_id(), ["client_credentials"], [], [], True)


# --- consents --------------------------------------------------------------------------------------


def events(database: Database, user_id: str, *kinds: str) -> list[tuple[str, dict[str, Any]]]:
    found = rows(
        database,
        "SELECT event, detail FROM audit_events WHERE user_id = %s AND event = ANY(%s) ORDER BY id",
        user_id,
        list(kinds),
    )
    return [(row[0], row[1]) for row in found]


def test_consents_grant_adds_revoke_forgets(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    app, _ = oidc_client(database)
    other, _ = oidc_client(database)
    assert database.call(consents.granted, user.id, app.id) == ()
    assert database.call(consents.grant, user.id, app.id, ["openid", "profile"], "192.0.2.1", user.username) == (
        "openid",
        "profile",
    )
    # A later grant widens it, earlier scopes first, nothing twice.
    assert database.call(consents.grant, user.id, app.id, ["email", "openid", "email"]) == (
        "openid",
        "profile",
        "email",
    )
    assert database.call(consents.granted, user.id, app.id) == ("openid", "profile", "email")
    database.call(consents.grant, user.id, other.id, ["openid"])
    listed = database.call(consents.of_user, user.id)
    assert [(c.client_id, c.scopes) for c in listed] == sorted(
        [(app.id, ("openid", "profile", "email")), (other.id, ("openid",))]
    )
    assert database.call(consents.revoke, user.id, app.id, None, user.username) is True
    assert database.call(consents.revoke, user.id, app.id) is False
    assert database.call(consents.granted, user.id, app.id) == ()
    assert database.call(consents.granted, user.id, other.id) == ("openid",)  # only that client's
    assert events(database, user.id, "consent_granted", "consent_revoked") == [
        ("consent_granted", {"client_id": app.id, "scopes": ["openid", "profile"]}),
        ("consent_granted", {"client_id": app.id, "scopes": ["email", "openid"]}),
        ("consent_granted", {"client_id": other.id, "scopes": ["openid"]}),
        ("consent_revoked", {"client_id": app.id, "scopes": ["openid", "profile", "email"]}),
    ]
    with pytest.raises(clients.ClientError):
        database.call(consents.grant, user.id, app.id, ["bad scope"])


# --- authorization codes ----------------------------------------------------------------------------


def a_code(**changes: Any) -> AuthorizationCode:
    fields: dict[str, Any] = {
        "client_id": "rp-1",
        "redirect_uri": RP,
        "user_id": "00000000-0000-0000-0000-000000000001",
        "username": "alice",
        "scope": "openid profile",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "sid": "browser-sid",
        "amr": ("pwd", "otp"),
        "auth_time": 1_700_000_000,
        "issued_at": 1_700_000_100,
        **changes,
    }
    return AuthorizationCode(**fields)


async def test_code_is_redeemed_once_and_only_by_its_value(redis_client: RedisClient, keys: RedisKeys) -> None:
    codes = Codes(redis_client, keys)
    issued = a_code()
    value = await codes.issue(issued)
    assert len(value) >= 43 and value != await codes.issue(issued)
    stored = [key async for key in redis_client.scan_iter(match=keys.prefix + "*")]
    assert stored and not any(value.encode() in key for key in stored)  # kept under a digest
    assert await codes.spent(value) is None  # not redeemed yet
    assert await codes.redeem(value) == issued
    assert await codes.redeem(value) is None
    for bogus in ("", "x" * 500, value + "x"):
        assert await codes.redeem(bogus) is None and await codes.spent(bogus) is None


async def test_code_expires(redis_client: RedisClient, keys: RedisKeys) -> None:
    codes = Codes(redis_client, keys)
    value = await codes.issue(a_code(nonce=None, code_challenge=None), ttl=60)
    assert 0 < await redis_client.ttl(keys.authorization_code(_digest(value))) <= 60
    await redis_client.delete(keys.authorization_code(_digest(value)))  # as expiry would
    assert await codes.redeem(value) is None and await codes.spent(value) is None


def _digest(value: str) -> str:
    from forwardauth.stores.codes import _digest as digest

    return digest(value)


async def test_replayed_code_finds_the_session_its_redemption_opened(
    redis_client: RedisClient, keys: RedisKeys
) -> None:
    codes = Codes(redis_client, keys)
    value = await codes.issue(a_code())
    assert await codes.redeem(value) is not None
    assert await codes.mark_issued(value, "child-sid") is True  # nobody came back with it yet
    assert await codes.redeem(value) is None
    assert await codes.spent(value) == "child-sid"
    assert 0 < await redis_client.ttl(keys.spent_code(_digest(value))) <= SPENT_TTL


async def test_replay_racing_the_first_exchange_is_seen_when_its_session_is_marked(
    redis_client: RedisClient, keys: RedisKeys
) -> None:
    codes = Codes(redis_client, keys)
    value = await codes.issue(a_code())
    assert await codes.redeem(value) is not None
    assert await codes.redeem(value) is None
    assert await codes.spent(value) == ""  # spent, its session not known yet
    assert await codes.mark_issued(value, "child-sid") is False  # the first exchange must revoke it
    assert await codes.spent(value) == "child-sid"


async def test_garbage_under_a_code_key_is_no_code(redis_client: RedisClient, keys: RedisKeys) -> None:
    codes = Codes(redis_client, keys)
    value = await codes.issue(a_code())
    await redis_client.set(keys.authorization_code(_digest(value)), b'{"client_id": 1}')
    assert await codes.redeem(value) is None


# --- the back-channel logout queue --------------------------------------------------------------------


def notice(n: int = 1) -> Notice:
    return Notice(f"rp-{n}", f"https://rp{n}.example.test/backchannel", "user-id", f"sid-{n}")


async def test_queue_hands_each_item_to_one_caller_until_done(redis_client: RedisClient, keys: RedisKeys) -> None:
    queue = BackchannelQueue(redis_client, keys)
    now = 1_800_000_000.0
    assert await queue.enqueue([notice(1), notice(2), notice(1)], now) == 2  # the same notice once
    claimed = await queue.due(now, limit=10)
    assert sorted(item.notice for item in claimed) == [notice(1), notice(2)]
    assert all(item.attempts == 0 for item in claimed)
    assert await queue.due(now + 1) == []  # leased: no other worker gets them
    assert await queue.size() == 2
    await queue.done(claimed[0])
    back = await queue.due(now + LEASE_SECONDS + 1)  # its sender never said: it comes back
    assert [item.notice for item in back] == [claimed[1].notice]
    await queue.done(back[0])
    assert await queue.size() == 0 and await queue.due(now + 10 * LEASE_SECONDS) == []


async def test_queue_retries_with_backoff_then_gives_up(redis_client: RedisClient, keys: RedisKeys) -> None:
    queue = BackchannelQueue(redis_client, keys)
    now = 1_800_000_000.0
    await queue.enqueue([notice()], now)
    item = (await queue.due(now))[0]
    for attempt in range(1, MAX_ATTEMPTS):
        assert await queue.retry_later(item, now) is True
        assert await queue.due(now + backoff(attempt) - 1) == []  # not due before its backoff
        now += backoff(attempt)
        (item,) = await queue.due(now)
        assert item.attempts == attempt and item.notice == notice()
    assert backoff(1) < backoff(2) < backoff(3)
    assert await queue.retry_later(item, now) is False  # the last attempt failed: dropped
    assert await queue.size() == 0


async def test_queue_keeps_what_redis_refused_and_writes_it_later(redis_client: RedisClient, keys: RedisKeys) -> None:
    dead = connect(RedisSettings.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        refused = BackchannelQueue(dead, keys)
        assert await refused.enqueue_or_keep([notice(1), notice(2)]) is False
        assert [item.notice for item in refused.kept] == [notice(1), notice(2)]
    finally:
        await close(dead)
    queue = BackchannelQueue(redis_client, keys)
    queue.kept = refused.kept  # as the worker's queue holds them once Redis is back
    claimed = await queue.due()
    assert sorted(item.notice for item in claimed) == [notice(1), notice(2)] and queue.kept == []


async def test_queue_drops_what_it_did_not_write(redis_client: RedisClient, keys: RedisKeys) -> None:
    queue = BackchannelQueue(redis_client, keys)
    await redis_client.zadd(keys.backchannel_queue(), {b"not json": 1.0, b'{"id": "x"}': 2.0})
    await queue.enqueue([notice()], 3.0)
    assert [item.notice for item in await queue.due(10.0)] == [notice()]
    assert await queue.size() == 1  # the two foreign members are gone, ours is leased


# --- sessions opened for OIDC clients end with their browser session --------------------------------


BACKCHANNEL = "https://rp.example.test/backchannel"


def browser_and_child(
    database: Database, user: users.User, backchannel: str | None = BACKCHANNEL
) -> tuple[sessions.Session, sessions.Session, clients.Client]:
    app, _ = oidc_client(database, backchannel_logout_uri=backchannel)
    browser = database.call(sessions.start, user, TTL)
    child = database.call(sessions.start, user, TTL, app.id, "openid", parent_sid=browser.sid)
    return browser, child, app


def live(database: Database, sid: str) -> bool:
    found = rows(database, "SELECT 1 FROM refresh_tokens WHERE family_id = %s AND revoked_at IS NULL", sid)
    return bool(found)


def test_logout_ends_the_children_and_names_the_clients_to_tell(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    quiet, _ = oidc_client(database)  # no back-channel URI: its session ends, nobody is told
    other = database.call(sessions.start, user, TTL, quiet.id, "openid", parent_sid=browser.sid)
    unrelated = database.call(sessions.start, user, TTL)
    assert sorted(database.call(sessions.children, browser.sid)) == sorted([child.sid, other.sid])
    assert database.call(sessions.children, unrelated.sid) == []

    ended = database.call(sessions.logout, browser.sid, None, None, "192.0.2.9")
    assert ended.sids[0] == browser.sid and sorted(ended.sids[1:]) == sorted([child.sid, other.sid])
    assert ended.notices == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]  # the browser session's sid
    assert not any(live(database, sid) for sid in ended.sids) and live(database, unrelated.sid)
    with pytest.raises(sessions.RefreshError):
        database.call(sessions.rotate, child.refresh_token, TTL, None, app.id)
    logged = rows(
        database,
        "SELECT user_id::text, username, detail FROM audit_events WHERE event = 'logout' AND detail->>'sid' = %s",
        browser.sid,
    )
    assert logged == [(user.id, user.username, {"sid": browser.sid, "children": 2})]
    again = database.call(sessions.logout, browser.sid, None, None, None)
    assert again.notices == [] and again.revoked == 0  # ended already: nobody is told twice


def test_a_child_opens_only_from_a_live_session_of_the_same_user(database: Database, make_user: MakeUser) -> None:
    user, stranger = make_user(), make_user()
    browser, _, app = browser_and_child(database, user)
    with pytest.raises(sessions.ParentEnded):
        database.call(sessions.start, stranger, TTL, app.id, "openid", parent_sid=browser.sid)
    database.call(sessions.logout, browser.sid, None, None, None)
    with pytest.raises(sessions.ParentEnded):
        database.call(sessions.start, user, TTL, app.id, "openid", parent_sid=browser.sid)


def test_revoking_a_user_keeps_the_kept_session_with_its_children(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    kept, kept_child, app = browser_and_child(database, user)
    gone = database.call(sessions.start, user, TTL)
    gone_child = database.call(sessions.start, user, TTL, app.id, "openid", parent_sid=gone.sid)
    ended = database.call(sessions.revoke_user, user.id, 3600, None, "password_change", kept.sid)
    assert sorted(ended.sids) == sorted([gone.sid, gone_child.sid])
    assert ended.notices == [Notice(app.id, BACKCHANNEL, user.id, gone.sid)]
    assert live(database, kept.sid) and live(database, kept_child.sid)
    assert not live(database, gone.sid) and not live(database, gone_child.sid)
    everything = database.call(sessions.revoke_user, user.id, 3600, None, "user_disabled")
    assert sorted(everything.sids) == sorted([kept.sid, kept_child.sid, gone.sid, gone_child.sid])
    assert everything.notices == [Notice(app.id, BACKCHANNEL, user.id, kept.sid)]
    assert not live(database, kept_child.sid)


def test_a_replayed_browser_refresh_token_ends_the_children(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    database.call(sessions.rotate, browser.refresh_token, TTL, None)
    with pytest.raises(sessions.RefreshError) as replay:
        database.call(sessions.rotate, browser.refresh_token, TTL, None)
    assert replay.value.reused_family == browser.sid
    assert replay.value.ended.sids == [browser.sid, child.sid]
    assert replay.value.ended.notices == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]
    assert not live(database, child.sid)


def test_a_child_being_opened_while_its_parent_ends_is_ended_too(
    database: Database, database_url: str, make_user: MakeUser
) -> None:
    """The child's transaction holds its parent's row: the logout waits for it, then ends it."""
    user = make_user()
    app, _ = oidc_client(database, backchannel_logout_uri=BACKCHANNEL)
    browser = database.call(sessions.start, user, TTL)
    opening = psycopg2.connect(database_url)
    ending = psycopg2.connect(database_url)
    try:
        child = sessions.start(opening, user, TTL, app.id, "openid", parent_sid=browser.sid)  # not committed
        with ThreadPoolExecutor(max_workers=1) as pool:

            def logout() -> cascade.Ended:
                ended = sessions.logout(ending, browser.sid, None, None, None)
                ending.commit()
                return ended

            result = pool.submit(logout)
            backend = ending.get_backend_pid()
            wait_until(
                lambda: rows(
                    database, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", backend
                ),
                timeout=10,
                what="the logout waiting for the child's transaction",
            )
            opening.commit()
            ended = result.result(timeout=10)
    finally:
        opening.close()
        ending.close()
    assert ended.sids == [browser.sid, child.sid]
    assert ended.notices == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]
    assert not live(database, child.sid)


def test_revoke_client_ends_only_that_clients_sessions_of_the_user(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    other_user_child = browser_and_child(database, make_user())[1]
    sids = database.call(cascade.revoke_client, user.id, app.id, 3600, "consent_revoked")
    assert sids == [child.sid]
    assert not live(database, child.sid) and live(database, browser.sid)
    assert live(database, other_user_child.sid)


# --- every logout path ends the children in Redis too, and queues the back-channel logouts --------------


@pytest.fixture
async def services(env: dict[str, str]) -> AsyncIterator[AccountServices]:
    """Account services on a Redis prefix of their own (their back-channel queue is this test's)."""
    own = {**env, "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}{secrets.token_hex(4)}:"}
    built = build_account_services(config.load(own))
    yield built
    await built.close()


async def with_access_tokens(services: AccountServices, *opened: sessions.Session) -> list[str]:
    """An access token per session, live in Redis; their ids."""
    jtis = []
    for session in opened:
        jti = secrets.token_hex(8)
        await services.revocations.register(session.sid, jti, 60)
        jtis.append(jti)
    return jtis


async def still_live(services: AccountServices, sessions_: tuple[sessions.Session, ...], jtis: list[str]) -> list[bool]:
    return [
        await services.revocations.is_live(s.sid, jti, int(time.time()) + 60)
        for s, jti in zip(sessions_, jtis, strict=True)
    ]


async def queued(services: AccountServices) -> list[Notice]:
    return sorted(item.notice for item in await services.backchannel.due(time.time() + 1))


async def test_end_sessions_revokes_children_in_redis_and_queues_their_logouts(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    bystander = database.call(sessions.start, user, TTL)
    opened = (browser, child, bystander)
    jtis = await with_access_tokens(services, *opened)
    assert await changes.end_sessions(services, [browser.sid], client_ip="192.0.2.3", client_id=app.id) is True
    assert await still_live(services, opened, jtis) == [False, False, True]
    assert await queued(services) == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]
    detail = rows(
        database, "SELECT detail FROM audit_events WHERE event = 'logout' AND detail->>'sid' = %s", browser.sid
    )
    assert detail == [({"sid": browser.sid, "children": 1, "client_id": app.id},)]


@pytest.mark.parametrize("path", ["passwd", "disable", "revoke", "mfa reset", "logout all"])
async def test_account_changes_end_children_and_queue_their_logouts(
    services: AccountServices, database: Database, make_user: MakeUser, path: str
) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    jtis = await with_access_tokens(services, browser, child)
    if path == "passwd":
        await changes.change_password(services, user.username, "a different passphrase 8274")
    elif path == "disable":
        await changes.set_user_disabled(services, user.username, True)
    elif path == "revoke":
        await changes.revoke_user(services, user.username)
    elif path == "mfa reset":
        await changes.reset_second_factors(services, user.username)
    else:
        await changes.end_user_sessions(services, user.id, None)
    assert await still_live(services, (browser, child), jtis) == [False, False]
    assert await queued(services) == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]


async def test_a_step_up_replacing_the_browser_session_ends_its_children(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    jtis = await with_access_tokens(services, browser, child)
    pending = Pending(user.id, user.username, (PASSWORD,), int(time.time()), replaces_sid=browser.sid)
    signed_in = await complete(services, pending, (OTP,), "192.0.2.4")
    assert signed_in.session.sid != browser.sid and live(database, signed_in.session.sid)
    assert await still_live(services, (browser, child), jtis) == [False, False]
    assert await queued(services) == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]


async def test_a_replayed_refresh_token_ends_the_children_in_redis(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    jtis = await with_access_tokens(services, child)
    await rotate_refresh(services, browser.refresh_token, "192.0.2.5")
    with pytest.raises(sessions.RefreshError):  # from elsewhere: no retry, a replay
        await rotate_refresh(services, browser.refresh_token, "192.0.2.6")
    assert await still_live(services, (child,), jtis) == [False]
    assert await queued(services) == [Notice(app.id, BACKCHANNEL, user.id, browser.sid)]


async def test_revoking_a_consent_ends_the_clients_sessions_of_the_user(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    browser, child, app = browser_and_child(database, user)
    database.call(consents.grant, user.id, app.id, ["openid"])
    jtis = await with_access_tokens(services, browser, child)
    assert await changes.revoke_consent(services, user.username, app.id) == (user, True, 1)
    assert await still_live(services, (browser, child), jtis) == [True, False]
    assert database.call(consents.granted, user.id, app.id) == ()
    assert (await changes.revoke_consent(services, user.username, app.id))[1:] == (False, 1)
