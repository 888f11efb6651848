"""Live-token lookups batched into one round trip (forwardauth/stores/livekeys.py), on real Redis:
the machine's own, a Redis that is not there, and a local 3-master cluster (tests/clusters.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from forwardauth.constants import RedisKeys
from forwardauth.redisurl import RedisSettings
from forwardauth.stores.livekeys import KeyBatch
from forwardauth.stores.redis import REDIS_DOWN, RedisClient, close, connect
from forwardauth.stores.revocation import Revocations

from .clusters import RedisClusterGroup
from .support import free_port

pytestmark = pytest.mark.servers  # the cluster tests start their own nodes

DEADLINE = 10.0  # no lookup may wait longer, whatever Redis does
TTL = 60


async def answers(revocations: Revocations, tokens: list[tuple[str, str]]) -> list[bool]:
    """Every token's check at once, as concurrent requests would ask."""
    expires = int(time.time()) + TTL
    checks = (revocations.is_live(sid, jti, expires) for sid, jti in tokens)
    return await asyncio.wait_for(asyncio.gather(*checks), DEADLINE)


async def mixed_tokens(revocations: Revocations, sessions: int) -> dict[tuple[str, str], bool]:
    """Tokens of ``sessions`` sessions, by whether each must pass: live ones, ones revoked alone,
    ones revoked with their session, and ones never registered."""
    expected: dict[tuple[str, str], bool] = {}
    for n in range(sessions):
        sid = f"s{n}-{secrets.token_hex(2)}"
        for jti in ("a", "b", "c"):
            await revocations.register(sid, jti, TTL)
            expected[sid, jti] = True
        expected[sid, "never"] = False
        if n % 3 == 1:
            await revocations.revoke(sid, "b")
            expected[sid, "b"] = False
        elif n % 3 == 2:
            await revocations.revoke_session(sid)
            expected.update({(sid, jti): False for jti in ("a", "b", "c")})
    return expected


async def test_concurrent_checks_share_a_few_round_trips(redis_client: RedisClient, keys: RedisKeys) -> None:
    revocations = Revocations(redis_client, keys)
    expected = await mixed_tokens(revocations, 50)
    tokens = list(expected)
    assert len(tokens) == 200 and sum(expected.values()) == 85  # 17 sessions all live, 17 with one revoked

    assert await answers(revocations, tokens) == [expected[token] for token in tokens]
    batch = revocations.live_keys
    assert revocations.lookups == 200 and batch.keys == 200
    assert batch.commands < 20
    print(f"200 concurrent checks: {batch.commands} round trip(s)")


async def test_a_key_asked_twice_in_a_batch_is_sent_once(redis_client: RedisClient, keys: RedisKeys) -> None:
    live, gone = keys.access_token("dup", "live"), keys.access_token("dup", "gone")
    await redis_client.set(live, b"1", ex=TTL)
    batch = KeyBatch(redis_client)
    asked = [live, gone, live, live, gone]
    found = await asyncio.wait_for(asyncio.gather(*(batch.exists(key) for key in asked)), DEADLINE)
    assert found == [True, False, True, True, False]
    assert (batch.commands, batch.keys) == (1, 2)


async def test_a_big_batch_goes_as_several_commands(redis_client: RedisClient, keys: RedisKeys) -> None:
    names = [keys.access_token(f"big{n}", "t") for n in range(30)]
    await redis_client.mset({name: b"1" for name in names[::2]})
    batch = KeyBatch(redis_client, max_keys=8)
    found = await asyncio.wait_for(asyncio.gather(*(batch.exists(name) for name in names)), DEADLINE)
    assert found == [n % 2 == 0 for n in range(30)]
    assert (batch.commands, batch.keys) == (4, 30)


async def test_keys_asked_while_a_batch_is_out_go_together_next(redis_client: RedisClient, keys: RedisKeys) -> None:
    batch = KeyBatch(redis_client)
    first = asyncio.ensure_future(batch.exists(keys.access_token("next", "0")))
    while batch.commands == 0:  # the first batch is sent, its answer not read yet
        await asyncio.sleep(0)
    later = [batch.exists(keys.access_token("next", str(n))) for n in range(1, 10)]
    assert await asyncio.wait_for(asyncio.gather(first, *later), DEADLINE) == [False] * 10
    assert (batch.commands, batch.keys) == (2, 10)


async def test_unreachable_redis_fails_every_waiter_and_none_hangs(keys: RedisKeys) -> None:
    nowhere = RedisSettings.from_url(f"redis://127.0.0.1:{free_port()}/0")
    client = connect(dataclasses.replace(nowhere, retries=0, connect_timeout=0.5, socket_timeout=0.5))
    revocations = Revocations(client, keys)
    try:
        for _ in range(2):  # and the batch after a failed one fails the same way
            checks = (revocations.is_live(f"s{n}", "t", int(time.time()) + TTL) for n in range(40))
            outcomes = await asyncio.wait_for(asyncio.gather(*checks, return_exceptions=True), DEADLINE)
            assert all(isinstance(outcome, REDIS_DOWN) for outcome in outcomes), outcomes
        assert revocations.lookups == 80
    finally:
        await close(client)


async def test_a_cancelled_waiter_leaves_the_others_answered(redis_client: RedisClient, keys: RedisKeys) -> None:
    live = [keys.access_token("cancel", str(n)) for n in range(6)]
    await redis_client.mset({name: b"1" for name in live})
    batch = KeyBatch(redis_client)
    # 0: cancelled before the batch is sent; 1: while it is out; 2 and 3 ask the same key, 2 is
    # cancelled (each waiter has its own future: 3 is still answered).
    asked = [live[0], live[1], live[2], live[2], live[3], live[4], keys.access_token("cancel", "never")]
    waiters = [asyncio.ensure_future(batch.exists(name)) for name in asked]
    await asyncio.sleep(0)  # all of them joined the batch; it is sent at the next turn
    waiters[0].cancel()
    while batch.commands == 0:
        await asyncio.sleep(0)
    waiters[1].cancel()
    waiters[2].cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), DEADLINE)
    assert [isinstance(o, asyncio.CancelledError) for o in outcomes[:3]] == [True, True, True]
    assert outcomes[3:] == [True, True, True, False]
    assert batch.keys == 5  # live[0] was not sent: nobody waited for it any more
    assert await batch.exists(live[5])  # and the next batch works


async def test_a_cancelled_flush_fails_its_waiters(redis_client: RedisClient, keys: RedisKeys) -> None:
    """No lost futures: the batch in flight and the one waiting for it both fail (fail closed)."""
    batch = KeyBatch(redis_client)
    waiters = [asyncio.ensure_future(batch.exists(keys.access_token("flush", str(n)))) for n in range(5)]
    while batch.commands == 0:
        await asyncio.sleep(0)
    # No turn of the loop between seeing the batch sent and cancelling: its answer is not read yet.
    more = asyncio.ensure_future(batch.exists(keys.access_token("flush", "later")))  # joins the next batch
    flush = batch._flush  # the one task sending batches, cancelled as a worker's shutdown would
    assert flush is not None
    flush.cancel()
    outcomes = await asyncio.wait_for(asyncio.gather(*waiters, more, return_exceptions=True), DEADLINE)
    assert all(isinstance(outcome, REDIS_DOWN) for outcome in outcomes), outcomes
    assert batch.commands == 1
    assert await batch.exists(keys.access_token("flush", "0")) is False  # a new flush for the next key


# --- a Redis Cluster: the keys of a batch are in many slots --------------------------------------


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(tmp_path / "cluster")
    try:
        group.start()
        yield group
    finally:
        group.stop()


async def test_a_batch_on_a_cluster_asks_each_node_once(redis_cluster: RedisClusterGroup, redis_prefix: str) -> None:
    client = connect(RedisSettings.from_url(redis_cluster.url))
    revocations = Revocations(client, RedisKeys(redis_prefix))
    try:
        expected = await mixed_tokens(revocations, 30)
        tokens = list(expected)
        assert await answers(revocations, tokens) == [expected[token] for token in tokens]
        assert isinstance(client, RedisCluster)
        assert revocations.live_keys.commands == 3  # one per master
    finally:
        await close(client)


def node_port(client: RedisCluster, key: str) -> int:
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def test_a_lost_master_fails_only_the_lookups_of_its_slots(
    redis_cluster: RedisClusterGroup, redis_prefix: str
) -> None:
    settings = RedisSettings.from_url(redis_cluster.url)
    client = connect(dataclasses.replace(settings, retries=0, connect_timeout=0.5, socket_timeout=0.5))
    assert isinstance(client, RedisCluster)
    keys = RedisKeys(redis_prefix)
    revocations = Revocations(client, keys)
    try:
        expected = await mixed_tokens(revocations, 30)
        tokens = list(expected)
        lost = redis_cluster.servers[0]
        on_lost = [node_port(client, keys.access_token(*token)) == lost.port for token in tokens]
        lost.kill()
        expires = int(time.time()) + TTL
        checks = (revocations.is_live(sid, jti, expires) for sid, jti in tokens)
        outcomes = await asyncio.wait_for(asyncio.gather(*checks, return_exceptions=True), DEADLINE)
        assert any(on_lost) and not all(on_lost)
        for token, outcome, failed in zip(tokens, outcomes, on_lost, strict=True):
            if failed:
                assert isinstance(outcome, REDIS_DOWN), (token, outcome)
            else:
                assert outcome == expected[token], (token, outcome)
    finally:
        await close(client)
