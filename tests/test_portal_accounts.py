"""The account portal's stores and actions (issue 16), on real PostgreSQL and Redis, without HTTP:
where a session was opened and renewed (migration 0007), live sessions listed, the audit trail
searched, one's own sessions ended, and one's password changed under sign-in regulation."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from forwardauth import config
from forwardauth.accounts import portal
from forwardauth.accounts.secondfactor import complete
from forwardauth.accounts.services import AccountServices, build_account_services
from forwardauth.accounts.signin import SignedIn, Throttled, sign_in
from forwardauth.core.authn import OTP
from forwardauth.core.authn import PASSWORD as PWD
from forwardauth.core.devices import MAX_USER_AGENT
from forwardauth.stores import audit, sessionlist, sessions, users
from forwardauth.stores.pending import Pending
from forwardauth.stores.postgres import Database

from .support import PASSWORD, MakeClient, rows
from .test_accounts import basic

TTL = 3600
MAX_FAILURES = 3
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
NEW_PASSWORD = "a different passphrase 8274 orbit"
MakeUser = Callable[..., users.User]


@pytest.fixture
async def services(env: dict[str, str]) -> AsyncIterator[AccountServices]:
    """Account services on a Redis prefix of their own, with a low sign-in failure limit."""
    own = {
        **env,
        "FORWARDAUTH_REDIS_PREFIX": f"{env['FORWARDAUTH_REDIS_PREFIX']}{secrets.token_hex(4)}:",
        "FORWARDAUTH_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
    }
    built = build_account_services(config.load(own))
    yield built
    await built.close()


def seen(database: Database, sid: str) -> list[tuple[Any, ...]]:
    """(user_agent, client_ip, revoked) of each row of session ``sid``, oldest first."""
    return rows(
        database,
        "SELECT user_agent, client_ip, revoked_at IS NOT NULL FROM refresh_tokens WHERE family_id = %s ORDER BY id",
        sid,
    )


async def live_token(services: AccountServices, session: sessions.Session) -> str:
    jti = secrets.token_hex(8)
    await services.revocations.register(session.sid, jti, 60)
    return jti


async def is_live(services: AccountServices, session: sessions.Session, jti: str) -> bool:
    return await services.revocations.is_live(session.sid, jti, int(time.time()) + 60)


def events(database: Database, user: users.User, event: str) -> list[dict[str, Any]]:
    found = rows(
        database, "SELECT detail FROM audit_events WHERE user_id = %s AND event = %s ORDER BY id", user.id, event
    )
    return [row[0] for row in found]


# --- where a session was opened and renewed ----------------------------------------------------------


def test_a_session_keeps_its_user_agent_and_each_row_its_address(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    opened = database.call(sessions.start, user, TTL, user_agent=FIREFOX, client_ip="192.0.2.1")
    renewed = database.call(sessions.rotate, opened.refresh_token, TTL, "198.51.100.7")
    assert renewed.sid == opened.sid
    assert seen(database, opened.sid) == [(FIREFOX, "192.0.2.1", True), (FIREFOX, "198.51.100.7", False)]


def test_a_long_user_agent_is_cut_and_none_is_kept_as_none(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    long = database.call(sessions.start, user, TTL, user_agent="x" * 5000)
    bare = database.call(sessions.start, user, TTL)  # the callers from before issue 16
    assert seen(database, long.sid) == [("x" * MAX_USER_AGENT, None, False)]
    assert seen(database, bare.sid) == [(None, None, False)]
    garbled = database.call(sessions.start, user, TTL, user_agent="bad\udcff\x00bytes")  # not UTF-8: no error
    assert seen(database, garbled.sid) == [("bad\ufffd\ufffdbytes", None, False)]


def test_a_client_session_shows_its_browser_sessions_device(
    database: Database, make_user: MakeUser, make_client: MakeClient
) -> None:
    user = make_user()
    app, _ = make_client()
    browser = database.call(sessions.start, user, TTL, user_agent=FIREFOX, client_ip="192.0.2.1")
    child = database.call(sessions.start, user, TTL, app.id, "read", parent_sid=browser.sid, client_ip="203.0.113.9")
    assert seen(database, child.sid) == [(FIREFOX, "203.0.113.9", False)]


async def test_sign_ins_record_the_user_agent(
    services: AccountServices, make_user: MakeUser, database: Database
) -> None:
    user = make_user()
    signed = await sign_in(services, user.username, PASSWORD, "192.0.2.2", lambda *_: None, user_agent=FIREFOX)
    assert isinstance(signed, SignedIn)
    assert seen(database, signed.session.sid) == [(FIREFOX, "192.0.2.2", False)]
    pending = Pending(user.id, user.username, (PWD,), int(time.time()))
    stepped = await complete(services, pending, (OTP,), "192.0.2.3", user_agent="curl/8.4.0")
    assert seen(database, stepped.session.sid) == [("curl/8.4.0", "192.0.2.3", False)]


async def test_the_login_and_the_password_grant_record_the_user_agent(
    client: Any, make_user: MakeUser, make_client: MakeClient, database: Database
) -> None:
    """The header as the HTTP layer passes it (an API client sends whatever it likes: cut, kept)."""
    user = make_user()
    app, secret = make_client()
    agent = "git/2.39.2 " + "y" * 600
    form = {"username": user.username, "password": PASSWORD}
    login = await client.post("/login", json=form, headers={"User-Agent": FIREFOX})
    granted = await client.post(
        "/oauth/token",
        data={"grant_type": "password", **form},
        headers={"User-Agent": agent, **basic(app.id, secret or "")},
    )
    assert login.status == 200 and granted.status == 200
    agents = {s.user_agent for s in database.call(sessionlist.of_user, user.id)}
    assert agents == {FIREFOX, agent[:MAX_USER_AGENT]}


# --- live sessions listed -------------------------------------------------------------------------------


def test_of_user_lists_live_sessions_newest_renewal_first(database: Database, make_user: MakeUser) -> None:
    user, other = make_user(), make_user()
    first = database.call(sessions.start, user, TTL, user_agent=FIREFOX, client_ip="192.0.2.1")
    second = database.call(sessions.start, user, TTL, client_ip="192.0.2.2")
    ended = database.call(sessions.start, user, TTL)
    database.call(sessions.logout, ended.sid, user.id, user.username, None)
    database.call(sessions.start, other, TTL)
    assert [s.sid for s in database.call(sessionlist.of_user, user.id)] == [second.sid, first.sid]

    database.call(sessions.rotate, first.refresh_token, TTL, "198.51.100.7")
    listed = database.call(sessionlist.of_user, user.id)
    assert [s.sid for s in listed] == [first.sid, second.sid]  # renewed last: now first
    renewed = listed[0]
    assert (renewed.user_id, renewed.username, renewed.client_id, renewed.parent_sid) == (
        user.id,
        user.username,
        None,
        None,
    )
    assert (renewed.user_agent, renewed.client_ip, renewed.amr) == (FIREFOX, "198.51.100.7", ("pwd",))
    assert renewed.signed_in < renewed.last_renewal < renewed.expires_at
    assert renewed.auth_time == first.auth.auth_time


def test_expired_sessions_are_not_live(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    opened = database.call(sessions.start, user, TTL)
    assert database.call(sessionlist.live_owner, opened.sid) == user.id
    rows(
        database,
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE family_id = %s RETURNING 1",
        opened.sid,
    )
    assert database.call(sessionlist.of_user, user.id) == []
    assert database.call(sessionlist.live_owner, opened.sid) is None


def test_live_owner(database: Database, make_user: MakeUser) -> None:
    user = make_user()
    opened = database.call(sessions.start, user, TTL)
    assert database.call(sessionlist.live_owner, opened.sid) == user.id
    database.call(sessions.logout, opened.sid, user.id, user.username, None)
    assert database.call(sessionlist.live_owner, opened.sid) is None
    assert database.call(sessionlist.live_owner, "no such session") is None
    assert database.call(sessionlist.live_owner, "nul\x00sid\udcff") is None  # from a form: no error


def test_everyone_searches_and_pages(database: Database, make_user: MakeUser, make_client: MakeClient) -> None:
    tag = secrets.token_hex(3)
    alice, bob = make_user(name=f"alice-{tag}"), make_user(name=f"bob-{tag}")
    app, _ = make_client()
    a1 = database.call(sessions.start, alice, TTL, client_ip=f"10.{int(tag[:2], 16)}.0.1")
    a2 = database.call(sessions.start, alice, TTL, app.id, "read")
    b1 = database.call(sessions.start, bob, TTL)

    assert [s.sid for s in database.call(sessionlist.everyone, tag)] == [b1.sid, a2.sid, a1.sid]
    assert [s.sid for s in database.call(sessionlist.everyone, f"ALICE-{tag}")] == [a2.sid, a1.sid]
    assert [s.sid for s in database.call(sessionlist.everyone, app.id.upper())] == [a2.sid]
    assert [s.sid for s in database.call(sessionlist.everyone, f"10.{int(tag[:2], 16)}.0.")] == [a1.sid]
    assert [s.sid for s in database.call(sessionlist.everyone, tag, 2, 1)] == [a2.sid, a1.sid]
    everyone = database.call(sessionlist.everyone)
    assert {a1.sid, a2.sid, b1.sid} <= {s.sid for s in everyone} and len(everyone) <= 50
    # What a form may send: nothing fails
    assert database.call(sessionlist.everyone, tag + "\x00", -5, -1) == []
    assert database.call(sessionlist.everyone, tag + "\udcff", -5, -1) == []
    assert [s.sid for s in database.call(sessionlist.everyone, tag, -5, -1)] == [b1.sid]
    assert database.call(sessionlist.everyone, "%_" + tag, 10**12, 10**30) == []


# --- the audit trail searched --------------------------------------------------------------------------


def test_audit_search_filters_newest_first(database: Database) -> None:
    tag = secrets.token_hex(3)
    name = f"Carol-{tag}"
    for event in ("login_failure", "login_success", "logout"):
        database.call(audit.record, event, None, name.lower(), "192.0.2.1")
    database.call(audit.record, "login_success", None, f"other-{tag}", "192.0.2.1")

    found = database.call(audit.search, username=name.upper())
    assert [e.event for e in found] == ["logout", "login_success", "login_failure"]
    assert [e.id for e in found] == sorted((e.id for e in found), reverse=True)
    assert [e.event for e in database.call(audit.search, username=name, event="login_success")] == ["login_success"]
    assert [e.event for e in database.call(audit.search, username=name, before_id=found[0].id)] == [
        "login_success",
        "login_failure",
    ]
    assert [e.event for e in database.call(audit.search, username=name, limit=1)] == ["logout"]
    assert database.call(audit.search, username=name[:-1]) == []  # exact, not a prefix

    now = dt.datetime.now(dt.UTC)
    assert len(database.call(audit.search, username=name, since=now - dt.timedelta(minutes=1))) == 3
    assert database.call(audit.search, username=name, since=now + dt.timedelta(minutes=1)) == []
    assert database.call(audit.search, username=name, until=now - dt.timedelta(minutes=1)) == []
    recent = database.call(audit.search, event="logout", limit=1000)
    assert 0 < len(recent) <= 500 and all(e.event == "logout" for e in recent)
    assert database.call(audit.search, username="x\x00\udcff", event="nothing", limit=-3) == []


# --- one's own sessions ---------------------------------------------------------------------------------


async def test_sessions_of_describes_devices_and_marks_the_current_one(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    mine = database.call(sessions.start, user, TTL, user_agent=FIREFOX, client_ip="192.0.2.1")
    other = database.call(sessions.start, user, TTL, user_agent="curl/8.4.0")
    views = await portal.sessions_of(services, user.id, mine.sid)
    assert [(v.sid, v.device, v.current, v.username) for v in views] == [
        (other.sid, "curl", False, user.username),
        (mine.sid, "Firefox on Linux", True, user.username),
    ]
    assert views[1].client_ip == "192.0.2.1" and views[1].amr == ("pwd",) and views[1].client_id is None
    listed = await portal.all_sessions(services, user.username)
    assert {v.sid for v in listed} == {mine.sid, other.sid} and not any(v.current for v in listed)


async def test_end_own_session_only_ends_ones_own(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user, stranger = make_user(), make_user()
    mine, theirs = database.call(sessions.start, user, TTL), database.call(sessions.start, stranger, TTL)
    jtis = [await live_token(services, s) for s in (mine, theirs)]

    assert await portal.end_own_session(services, user.id, theirs.sid, "192.0.2.1") is False
    assert await portal.end_own_session(services, user.id, "no such session", "192.0.2.1") is False
    assert await is_live(services, theirs, jtis[1]) and database.call(sessionlist.live_owner, theirs.sid)

    assert await portal.end_own_session(services, user.id, mine.sid, "192.0.2.1") is True
    assert not await is_live(services, mine, jtis[0])  # Redis at once, not at the token's expiry
    assert await portal.sessions_of(services, user.id, None) == []
    assert events(database, user, "logout") == [{"sid": mine.sid}]
    assert await portal.end_own_session(services, user.id, mine.sid, "192.0.2.1") is False  # ended already


async def test_end_other_sessions_keeps_the_current_one(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user, bystander = make_user(), make_user()
    keep, *others = (database.call(sessions.start, user, TTL) for _ in range(3))
    theirs = database.call(sessions.start, bystander, TTL)
    jtis = {s.sid: await live_token(services, s) for s in (keep, *others, theirs)}

    assert await portal.end_other_sessions(services, user.id, keep.sid, "192.0.2.1") == 2
    assert [v.sid for v in await portal.sessions_of(services, user.id, keep.sid)] == [keep.sid]
    assert [await is_live(services, s, jtis[s.sid]) for s in (keep, *others, theirs)] == [True, False, False, True]
    [detail] = events(database, user, "revoke")
    assert detail["reason"] == "logout_others" and detail["kept_sid"] == keep.sid


# --- one's password --------------------------------------------------------------------------------------


async def test_change_own_password_ends_the_other_sessions(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    keep, other = database.call(sessions.start, user, TTL), database.call(sessions.start, user, TTL)
    jtis = [await live_token(services, s) for s in (keep, other)]
    assert await portal.change_own_password(services, user, PASSWORD, NEW_PASSWORD, "192.0.2.1", keep.sid) == 1
    assert [await is_live(services, s, j) for s, j in zip((keep, other), jtis, strict=True)] == [True, False]
    assert [v.sid for v in await portal.sessions_of(services, user.id, keep.sid)] == [keep.sid]
    authenticate = users.authenticate
    assert database.call(authenticate, services.passwords, user.username, NEW_PASSWORD, None) is not None
    assert database.call(authenticate, services.passwords, user.username, PASSWORD, None) is None
    assert events(database, user, "user_change")[-1]["action"] == "passwd"
    assert [v.sid for v in await portal.sessions_of(services, user.id, None)] == [keep.sid]  # no session opened


async def test_a_wrong_current_password_counts_as_a_failed_sign_in(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    keep = database.call(sessions.start, user, TTL)
    for _ in range(MAX_FAILURES):
        with pytest.raises(portal.WrongPassword):
            await portal.change_own_password(services, user, "not it", NEW_PASSWORD, "192.0.2.9", keep.sid)
    assert [d["reason"] for d in events(database, user, "login_failure")] == ["wrong password"] * MAX_FAILURES
    with pytest.raises(Throttled) as throttled:  # even with the right one now, as a sign-in would be
        await portal.change_own_password(services, user, PASSWORD, NEW_PASSWORD, "192.0.2.9", keep.sid)
    assert throttled.value.retry_after > 0
    with pytest.raises(Throttled):  # the same counters as the login form
        await sign_in(services, user.username, PASSWORD, "192.0.2.9", lambda *_: None)
    assert database.call(users.authenticate, services.passwords, user.username, PASSWORD, None) is not None
    assert [d["for"] for d in events(database, user, "login_throttled")] == ["portal"]


async def test_check_own_password_opens_no_session(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user()
    assert await portal.check_own_password(services, user, PASSWORD, "192.0.2.8") is None
    with pytest.raises(portal.WrongPassword):
        await portal.check_own_password(services, user, PASSWORD + "x", "192.0.2.8")
    assert database.call(sessionlist.of_user, user.id) == []
    assert events(database, user, "login_success") == []  # not a sign-in
    assert [d["reason"] for d in events(database, user, "login_failure")] == ["wrong password"]


async def test_a_new_password_the_policy_refuses_changes_nothing(
    services: AccountServices, database: Database, make_user: MakeUser
) -> None:
    user = make_user(email="dora.example@example.test")
    keep, other = database.call(sessions.start, user, TTL), database.call(sessions.start, user, TTL)
    for weak in ("short", "password1234567890", "dora.example@example.test", "x\x00" * 10, "p" * 2000):
        with pytest.raises(ValueError, match="password") as refused:
            await portal.change_own_password(services, user, PASSWORD, weak, "192.0.2.1", keep.sid)
        assert weak not in str(refused.value)
    assert {v.sid for v in await portal.sessions_of(services, user.id, None)} == {keep.sid, other.sid}
    assert database.call(users.authenticate, services.passwords, user.username, PASSWORD, None) is not None
