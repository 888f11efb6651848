"""A refresh whose answer was lost: the same client presenting the same refresh token again, at
once, gets a fresh pair of the same session instead of being taken for a thief (issue 21.3). Only
once, only from the same address, only while the successor is unused, only within
REFRESH_RETRY_GRACE; and if the successor it replaced shows up later, that was theft after all."""

from __future__ import annotations

from typing import Any

import jwt

from forwardauth.constants import REFRESH_RETRY_GRACE
from forwardauth.stores.postgres import Database

from .support import MakeClient
from .test_oauth import basic, password_grant, token
from .test_renewal import backdate
from .test_web import MakeUser, auth_status, login

Client = Any
ELSEWHERE = {"X-Forwarded-For": "203.0.113.66"}  # the tests' client is 127.0.0.1, a trusted proxy


def sid(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def refresh(client: Client, refresh_token: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/refresh", json={"refresh_token": refresh_token}, headers=headers or {})


async def test_the_same_client_retrying_gets_a_fresh_pair_once(client: Client, make_user: MakeUser) -> None:
    first = await login(client, make_user())
    lost = await refresh(client, first["refresh_token"])  # its answer never arrives
    assert lost.status == 200
    retry = await refresh(client, first["refresh_token"])
    assert retry.status == 200
    got = await retry.json()
    assert sid(got["access_token"]) == sid(first["access_token"])
    assert got["refresh_token"] not in (first["refresh_token"], (await lost.json())["refresh_token"])
    assert await auth_status(client, got["access_token"]) == 200
    # The session goes on from the retry's tokens.
    onwards = await refresh(client, got["refresh_token"])
    assert onwards.status == 200 and await auth_status(client, (await onwards.json())["access_token"]) == 200


async def test_a_third_try_is_a_replay(client: Client, make_user: MakeUser) -> None:
    first = await login(client, make_user())
    assert (await refresh(client, first["refresh_token"])).status == 200
    retry = await (await refresh(client, first["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"])).status == 401
    assert await auth_status(client, retry["access_token"]) == 401  # the session is over


async def test_another_address_is_a_replay(client: Client, make_user: MakeUser) -> None:
    first = await login(client, make_user())
    second = await (await refresh(client, first["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"], ELSEWHERE)).status == 401
    assert await auth_status(client, second["access_token"]) == 401


async def test_after_the_grace_it_is_a_replay(client: Client, make_user: MakeUser, database: Database) -> None:
    first = await login(client, make_user())
    second = await (await refresh(client, first["refresh_token"])).json()
    backdate(database, first["refresh_token"], "revoked_at", REFRESH_RETRY_GRACE + 1)
    assert (await refresh(client, first["refresh_token"])).status == 401
    assert await auth_status(client, second["access_token"]) == 401


async def test_once_the_successor_is_used_it_is_a_replay(client: Client, make_user: MakeUser) -> None:
    first = await login(client, make_user())
    second = await (await refresh(client, first["refresh_token"])).json()
    third = await (await refresh(client, second["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"])).status == 401
    assert await auth_status(client, third["access_token"]) == 401


async def test_the_superseded_successor_showing_up_ends_the_session(client: Client, make_user: MakeUser) -> None:
    """The retry took the successor back; whoever presents it received it, so the retry was a copy's."""
    first = await login(client, make_user())
    superseded = await (await refresh(client, first["refresh_token"])).json()
    retry = await (await refresh(client, first["refresh_token"])).json()
    assert (await refresh(client, superseded["refresh_token"])).status == 401
    assert await auth_status(client, retry["access_token"]) == 401
    assert (await refresh(client, retry["refresh_token"])).status == 401


async def test_the_oauth_refresh_grant_retries_alike(
    client: Client, make_client: MakeClient, make_user: MakeUser
) -> None:
    app, secret = make_client()
    assert secret is not None
    first = await password_grant(client, app, secret, make_user())
    grant = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert (await token(client, grant, basic(app.id, secret)))[0] == 200
    status, retry = await token(client, grant, basic(app.id, secret))
    assert status == 200 and await auth_status(client, retry["access_token"]) == 200
    other, other_secret = make_client()  # the same token from another client is never a retry
    status, _ = await token(client, grant, basic(other.id, other_secret or ""))
    assert status == 400
