"""The connection to Redis, owned here and nowhere else: one client per worker from a plain,
Sentinel or Cluster URL, used from the event loop (redis.asyncio with hiredis), with retries on
connection errors so a Redis restart heals by itself.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from forwardauth.redisurl import RedisSettings

# Errors meaning "Redis is unreachable right now" (answered with 503, never 500), or "it refuses
# writes": out of memory under noeviction, a read-only replica (a failover under way), a cluster
# without a master for the slot.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError, ReadOnlyError, ClusterDownError)

# Whichever client the URL asks for: one server (also through Sentinel) or a Redis Cluster.
RedisClient = aioredis.Redis | RedisCluster


def connect(where: RedisSettings) -> RedisClient:
    """The client of ``where``'s mode, with the same timeouts and retries in every mode (no
    connection is opened until the first command)."""
    common: dict[str, Any] = {
        "socket_timeout": where.socket_timeout,
        "socket_connect_timeout": where.connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.01), where.retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
        "decode_responses": False,
    }
    if where.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in where.nodes],
            max_connections=where.max_connections,
            username=where.username,
            password=where.password,
            **common,
        )
    if where.mode == "sentinel":
        # Sentinels are asked for the master's address at every (re)connection, so after a
        # failover the pool reconnects to the new master by itself.
        sentinel = Sentinel(
            list(where.nodes),
            sentinel_kwargs={
                "socket_timeout": where.socket_timeout,
                "socket_connect_timeout": where.connect_timeout,
            },
        )
        master: aioredis.Redis = sentinel.master_for(
            where.service,
            db=where.db,
            username=where.username,
            password=where.password,
            max_connections=where.max_connections,
            **common,
        )
        return master
    return aioredis.Redis.from_url(where.url, max_connections=where.max_connections, **common)


async def subscriber(client: RedisClient, attempt: int = 0) -> PubSub:
    """A pub/sub connection for ``client``'s channels.

    Plain and Sentinel: on the (current) master, so after a failover a new subscriber follows the
    new master. Cluster: a PUBLISH on any node reaches every node, so one node is enough; each
    attempt takes the next known node, so a lost node is not asked again and again.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = sorted(client.get_nodes(), key=lambda node: node.name)
        return client.pubsub(node=nodes[attempt % len(nodes)])
    return client.pubsub()


async def close(client: RedisClient) -> None:
    """Close ``client`` and, for Sentinel, its connections to the sentinels (not in its pool)."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()
