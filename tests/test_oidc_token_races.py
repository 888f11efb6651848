"""Races on the OIDC token side: a code replayed while its first exchange is under way, and a
client's session rotating its refresh token while its browser session ends (two real PostgreSQL
transactions, the rotation held open until the logout is seen waiting for it)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

from forwardauth.stores import cascade, sessions
from forwardauth.stores.postgres import Database

from .support import wait_until
from .test_oidc_token import issue, redeem, refused, relying_party, sign_in
from .test_web import MakeUser, services_of

Client = Any


def waiting_for_a_lock(database: Database, pid: int) -> bool:
    def query(conn: Any) -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = cur.fetchone()
        return row is not None and row[0] == "Lock"

    return database.call(query)


async def test_logout_during_a_child_rotation_ends_its_successor(
    client: Client, database: Database, database_url: str, make_user: MakeUser
) -> None:
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    status, body = await redeem(client, rp, secret, await issue(client, browser, rp, scope="openid offline_access"))
    assert status == 200
    rotating, ending = psycopg2.connect(database_url), psycopg2.connect(database_url)
    try:
        successor = sessions.rotate(rotating, body["refresh_token"], 3600, "127.0.0.1", rp.id)  # not committed
        ended: list[cascade.Ended] = []

        def log_out() -> None:
            ended.append(cascade.end(ending, [browser.sid], "logout"))
            ending.commit()

        thread = threading.Thread(target=log_out)
        thread.start()
        wait_until(lambda: waiting_for_a_lock(database, ending.get_backend_pid()), what="the logout to wait")
        rotating.commit()
        thread.join(timeout=20)
        assert not thread.is_alive() and ended
    finally:
        rotating.close()
        ending.close()
    assert successor.sid in ended[0].sids
    assert database.call(sessions.refresh_info, successor.refresh_token) is None


async def test_a_replay_during_the_first_exchange_leaves_it_nothing(
    client: Client, database: Database, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy arrives while the first exchange is under way, before its session is recorded: the
    first exchange then learns of it, ends its session and hands nothing out."""
    rp, secret = relying_party(database)
    browser = await sign_in(client, make_user())
    codes = services_of(client).codes
    record = codes.mark_issued
    opened: list[str] = []

    async def replayed_meanwhile(value: str, family_sid: str) -> bool:
        assert await codes.spent(value) == ""  # the replay: spent, its session not known yet
        opened.append(family_sid)
        return await record(value, family_sid)

    monkeypatch.setattr(codes, "mark_issued", replayed_meanwhile)
    assert refused(await redeem(client, rp, secret, await issue(client, browser, rp, scope="openid offline_access")))

    def live_tokens(conn: Any) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM refresh_tokens WHERE family_id = %s AND revoked_at IS NULL", opened)
            return int(cur.fetchone()[0])

    assert len(opened) == 1 and database.call(live_tokens) == 0
