"""Several forwardauth instances on Redis Cluster or Redis Sentinel, one PostgreSQL.

The URL forms are checked without servers; the rest runs on a real local cluster and a real
Sentinel group (tests/clusters.py), with two ``forwardauth serve`` instances that share only
what the README says they share: the signing keys (copied files), Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from forwardauth.config import ConfigError, load
from forwardauth.constants import RedisKeys
from forwardauth.core.cache import LiveTokens
from forwardauth.redisurl import RedisSettings
from forwardauth.stores import users
from forwardauth.stores.redis import close, connect
from forwardauth.stores.regulation import Regulation
from forwardauth.stores.revocation import Revocations

from .clusters import Group, RedisClusterGroup, RedisSentinelGroup, ask
from .http import bearer, get, login, post_json
from .support import PASSWORD, Service, wait_until

# The bound for a logout on one instance to be refused on another. Measured on a loaded
# 2-core test machine it is a few milliseconds (README, "Running several instances").
CROSS_INSTANCE_SECONDS = 0.05
PROBE_SECONDS = 0.02  # the prober's pace during a failover: light load, not a benchmark


# --- the URL forms, no server needed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "mode", "nodes", "service", "db"),
    [
        ("redis://cache:6379/2", "single", (), "", 0),
        ("unix:///run/redis.sock", "single", (), "", 0),
        (
            "redis+sentinel://s1:26379,s2:26380,s3/mymaster/3",
            "sentinel",
            (("s1", 26379), ("s2", 26380), ("s3", 26379)),
            "mymaster",
            3,
        ),
        ("redis+sentinel://[::1]:26379/cache", "sentinel", (("::1", 26379),), "cache", 0),
        ("redis+cluster://n1:7000,n2:7001/", "cluster", (("n1", 7000), ("n2", 7001)), "", 0),
        ("redis+cluster://n1", "cluster", (("n1", 6379),), "", 0),
    ],
)
def test_redis_url_forms(url: str, mode: str, nodes: tuple[tuple[str, int], ...], service: str, db: int) -> None:
    settings = RedisSettings.from_url(url)
    assert (settings.mode, settings.nodes, settings.service, settings.db) == (mode, nodes, service, db)


def test_credentials_in_userinfo_are_decoded_and_never_shown() -> None:
    settings = RedisSettings.from_url("redis+sentinel://app:p%40ss@s1:26379/mymaster")
    assert (settings.username, settings.password) == ("app", "p@ss")
    assert "p%40ss" not in repr(settings) and "p@ss" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+cluster://n1:7000/1", "only database 0"),
        ("redis+sentinel://s1:26379", "names the master"),
        ("redis+sentinel://s1:26379/mymaster/x", "must be a number"),
        ("redis+sentinel://s1:99999/mymaster", "not a TCP port"),
        ("redis+cluster://n1:7000,,n2/", "host is missing"),
        ("redis+cluster://n1/?ssl=true", "no query"),
        ("memcached://n1:11211", "scheme must be one of"),
        ("n1:6379", "not a URL"),
    ],
)
def test_bad_redis_urls_name_the_variable_but_not_the_secret(url: str, complaint: str) -> None:
    secret_url = url.replace("://", "://app:hunter2@", 1) if "://" in url else url
    with pytest.raises(ConfigError) as error:
        load({"FORWARDAUTH_REDIS_URL": secret_url})
    message = str(error.value)
    assert message.startswith("FORWARDAUTH_REDIS_URL: ") and complaint in message
    assert "hunter2" not in message


async def test_each_form_gets_redis_pys_own_client() -> None:
    """Built without connecting: the clients connect on first use."""
    cluster = connect(RedisSettings.from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"))
    sentinel = connect(RedisSettings.from_url("redis+sentinel://127.0.0.1:26379/mymaster/2"))
    plain = connect(RedisSettings.from_url("redis://127.0.0.1:6379/0"))
    try:
        assert isinstance(cluster, RedisCluster)
        assert not isinstance(sentinel, RedisCluster) and not isinstance(plain, RedisCluster)
        assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
        assert sentinel.connection_pool.service_name == "mymaster"
        assert sentinel.connection_pool.connection_kwargs["db"] == 2
        # The same timeouts and retries in every mode.
        pools = (
            cluster.get_connection_kwargs(),
            sentinel.connection_pool.connection_kwargs,
            plain.connection_pool.connection_kwargs,
        )
        assert {(kw["socket_timeout"], kw["socket_connect_timeout"]) for kw in pools} == {(1.0, 1.0)}
        assert {r._retries for r in (cluster.retry, pools[1]["retry"], pools[2]["retry"])} == {2}
    finally:
        for client in (cluster, sentinel, plain):
            await client.aclose()


# --- two instances on a real cluster / Sentinel group --------------------------------------------


def running(group: Group) -> Iterator[Any]:
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    yield from running(RedisClusterGroup(tmp_path / "cluster"))


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinelGroup]:
    yield from running(RedisSentinelGroup(tmp_path / "sentinel"))


def two_instances(service: Callable[..., Service], tmp_path: Path, redis_url: str) -> tuple[Service, Service]:
    """A and B, two workers each, as on two hosts: B's data folder holds copies of A's key files."""
    a = service(workers=2, extra={"FORWARDAUTH_REDIS_URL": redis_url})
    shutil.copytree(tmp_path / "data" / "keys", tmp_path / "host-b" / "keys")
    b = service(workers=2, extra={"FORWARDAUTH_REDIS_URL": redis_url, "FORWARDAUTH_DATA_DIR": str(tmp_path / "host-b")})
    return a, b


def auth_status(svc: Service, token: str) -> int:
    return get(svc.base + "/auth", bearer(token)).status


def every_worker_answers(svc: Service, token: str, status: int) -> bool:
    """Several checks in a row, so each worker of ``svc`` answers at least once in practice."""
    return all(auth_status(svc, token) == status for _ in range(6))


def core_flow(a: Service, b: Service, user: users.User, record_property: Callable[[str, object], None]) -> None:
    tokens = login(a.base, user.username, PASSWORD).json()
    assert every_worker_answers(b, tokens["access_token"], 200)
    assert every_worker_answers(a, tokens["access_token"], 200)  # and now remembered by A's workers

    assert post_json(b.base + "/logout", {}, bearer(tokens["access_token"])).status == 200
    logged_out = time.monotonic()
    wait_until(lambda: auth_status(a, tokens["access_token"]) == 401, 5, "A to refuse the token")
    took = time.monotonic() - logged_out
    record_property("cross_instance_revocation_seconds", round(took, 4))
    print(f"logout on B refused on A after {took * 1000:.1f} ms")
    assert took < CROSS_INSTANCE_SECONDS
    assert every_worker_answers(a, tokens["access_token"], 401)

    first = login(a.base, user.username, PASSWORD).json()
    renewed = post_json(a.base + "/refresh", {"refresh_token": first["refresh_token"]})
    assert renewed.status == 200
    second = renewed.json()
    assert every_worker_answers(b, second["access_token"], 200)
    thief = {"X-Forwarded-For": "203.0.113.66"}  # not the client itself retrying (see test_retry.py)
    assert post_json(b.base + "/refresh", {"refresh_token": first["refresh_token"]}, thief).status == 401
    # Replaying a rotated refresh token ends the session, on every instance at once.
    wait_until(lambda: every_worker_answers(a, second["access_token"], 401), 5, "the replayed session to end")
    assert post_json(a.base + "/refresh", {"refresh_token": second["refresh_token"]}).status == 401
    for svc in (a, b):
        assert "Traceback" not in svc.log.read_text()


@pytest.mark.parametrize("group", ["redis_cluster", "redis_sentinel"])
def test_two_instances(
    group: str,
    request: pytest.FixtureRequest,
    service: Callable[..., Service],
    tmp_path: Path,
    make_user: Callable[..., users.User],
    record_property: Callable[[str, object], None],
) -> None:
    redis_group: RedisClusterGroup | RedisSentinelGroup = request.getfixturevalue(group)
    a, b = two_instances(service, tmp_path, redis_group.url)
    core_flow(a, b, make_user(), record_property)


async def test_login_throttling_on_a_cluster(redis_cluster: RedisClusterGroup, redis_prefix: str) -> None:
    """A login's three counters hash to different slots: the (non-transactional) pipelines that
    read and write them together are split by node by the cluster client."""
    client = connect(RedisSettings.from_url(redis_cluster.url))
    regulation = Regulation(client, RedisKeys(redis_prefix), max_failures=2, window=60)
    try:
        for _ in range(2):
            assert (await regulation.check("alice", "192.0.2.1")).allowed
            await regulation.failed("alice", "192.0.2.1")
        verdict = await regulation.check("alice", "192.0.2.1")
        assert not verdict.allowed and 0 < verdict.retry_after <= 61
        assert (await regulation.check("alice", "192.0.2.2")).allowed  # another address: its own pair
        await regulation.succeeded("alice", "192.0.2.1")
        assert (await regulation.check("alice", "192.0.2.1")).allowed
    finally:
        await close(client)


def owned_slots(cluster: RedisClusterGroup, port: int) -> set[int]:
    """The slots of node ``port``, as another node tells."""
    other = next(server for server in cluster.servers if server.port != port)
    ranges = ask(other, lambda c: c.execute_command("CLUSTER SLOTS"))
    return {slot for start, end, (_, owner, *_) in ranges if owner == port for slot in range(start, end + 1)}


def subscribed_nodes(cluster: RedisClusterGroup, channel: str, skip: int = 0) -> list[int]:
    return [
        server.port
        for server in cluster.servers
        if server.port != skip and ask(server, lambda c: c.pubsub_numsub(channel))[0][1] > 0
    ]


async def test_a_cluster_subscriber_moves_to_another_node_when_its_node_dies(
    redis_cluster: RedisClusterGroup,
    redis_prefix: str,
) -> None:
    """Any node hears every PUBLISH; the feed resubscribes on the next node when its own is lost.

    Blocking checks run in a thread (``asyncio.to_thread``), so the feed keeps running meanwhile.
    """
    keys = RedisKeys(redis_prefix)
    channel = keys.revocations_channel()
    publisher = Revocations(connect(RedisSettings.from_url(redis_cluster.url)), keys)
    follower = Revocations(connect(RedisSettings.from_url(redis_cluster.url)), keys, LiveTokens())
    local = follower.local
    assert local is not None
    stop = asyncio.Event()
    feed = asyncio.create_task(follower.follow(stop))
    try:
        # Connected before the loss: a cluster client that first starts while a master is down
        # (and has no replica) may pick that node for its COMMAND table and fail (redis-py).
        assert await publisher.ping()
        [first] = await asyncio.to_thread(
            wait_until, lambda: subscribed_nodes(redis_cluster, channel), 10, "the feed to subscribe"
        )
        lost = next(server for server in redis_cluster.servers if server.port == first)
        lost.kill()
        [second] = await asyncio.to_thread(
            wait_until,
            lambda: local.subscribed and subscribed_nodes(redis_cluster, channel, skip=first),
            20,
            "the feed to move to another node",
        )
        assert second != first
        # A session whose slot a surviving node serves: its revocation reaches the moved feed.
        dead = owned_slots(redis_cluster, first)
        sid = next(
            f"moved-{n}" for n in range(1000) if key_slot(keys.session_tokens(f"moved-{n}").encode()) not in dead
        )
        await publisher.register(sid, "jti", 60)
        assert await follower.is_live(sid, "jti", int(time.time()) + 60)
        assert local.is_live(sid, "jti", time.time())  # remembered: only the feed can make it forget
        await publisher.revoke(sid, "jti")
        await asyncio.to_thread(
            wait_until, lambda: not local.is_live(sid, "jti", time.time()), 5, "the revocation to reach the moved feed"
        )
    finally:
        stop.set()
        await feed
        await publisher.close()
        await follower.close()


class Prober(threading.Thread):
    """Checks tokens on instances at a light pace and keeps every answer, with its time."""

    def __init__(self, checks: dict[str, tuple[Service, str]]) -> None:
        super().__init__(daemon=True)
        self.checks = checks
        self.answers: list[tuple[float, str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, (svc, token) in self.checks.items():
                self.answers.append((time.monotonic(), name, auth_status(svc, token)))
            self.stop.wait(PROBE_SECONDS)

    def statuses(self, name: str, since: float = 0.0) -> list[int]:
        return [status for at, who, status in self.answers if who == name and at >= since]


def test_sentinel_failover_heals_without_a_restart_and_never_passes_a_revoked_token(
    redis_sentinel: RedisSentinelGroup,
    service: Callable[..., Service],
    tmp_path: Path,
    make_user: Callable[..., users.User],
    record_property: Callable[[str, object], None],
) -> None:
    a, b = two_instances(service, tmp_path, redis_sentinel.url)
    user = make_user()
    kept = login(a.base, user.username, PASSWORD).json()["access_token"]
    ended = login(b.base, user.username, PASSWORD).json()["access_token"]
    assert post_json(a.base + "/logout", {}, bearer(ended)).status == 200
    old_master = redis_sentinel.server(redis_sentinel.master_port())
    assert ask(old_master, lambda c: c.wait(1, 5000)) == 1  # the replica has every write so far

    prober = Prober({"kept@A": (a, kept), "kept@B": (b, kept), "ended@A": (a, ended), "ended@B": (b, ended)})
    prober.start()
    try:
        wait_until(lambda: len(prober.statuses("kept@B")) >= 5, 10, "the prober to run")
        killed = time.monotonic()
        old_master.kill()
        wait_until(lambda: redis_sentinel.master_port() != old_master.port, 30, "the sentinels to fail over")
        promoted = time.monotonic()
        # Healed: the kept token passes on both instances again, without a restart.
        wait_until(
            lambda: (
                prober.statuses("kept@A", promoted)[-3:] == [200] * 3
                and prober.statuses("kept@B", promoted)[-3:] == [200] * 3
            ),
            30,
            "/auth to heal",
        )
    finally:
        prober.stop.set()
        prober.join()

    for name in ("ended@A", "ended@B"):
        assert 200 not in prober.statuses(name), f"a revoked token passed on {name.split('@')[1]}"
    assert {status for _, _, status in prober.answers} <= {200, 401, 503}  # never a 500
    failing = [at for at, who, status in prober.answers if who.startswith("kept") and status != 200]
    gap = (max(failing) - killed) if failing else 0.0
    record_property("failover_promotion_seconds", round(promoted - killed, 2))
    record_property("failover_gap_seconds", round(gap, 2))
    print(f"master killed: promoted after {promoted - killed:.2f} s, /auth failing (503) for {gap:.2f} s")

    # After the failover, revocation still reaches every worker: the feeds follow the new master.
    for svc in (a, b):
        wait_until(lambda s=svc: s.log.read_text().count("revocation feed back") >= 2, 10, "the feeds to resume")
        assert "Traceback" not in svc.log.read_text()
    assert every_worker_answers(a, kept, 200)  # remembered again by A's workers
    assert post_json(b.base + "/logout", {}, bearer(kept)).status == 200
    wait_until(lambda: every_worker_answers(a, kept, 401), 5, "a logout after the failover to reach A")
    assert login(a.base, user.username, PASSWORD).status == 200
