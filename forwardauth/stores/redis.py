"""The connection to Redis, owned here and nowhere else: one client per worker from a plain,
Sentinel or Cluster URL, used from the event loop (redis.asyncio with hiredis), with retries on
connection errors so a Redis restart heals by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors meaning "Redis is unreachable right now" (answered with 503, never 500), or "it refuses
# writes": out of memory under noeviction, a read-only replica (a failover under way), a cluster
# without a master for the slot.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError, ReadOnlyError, ClusterDownError)

REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379

# Whichever client the URL asks for: one server (also through Sentinel) or a Redis Cluster.
RedisClient = aioredis.Redis | RedisCluster


def _nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``host1:26379,[::1]:26380,host3`` as (host, port) pairs."""
    nodes = []
    for item in (part.strip() for part in netloc.split(",")):
        if item.startswith("["):  # [IPv6]:port
            host, _, tail = item[1:].partition("]")
            if tail and not tail.startswith(":"):
                raise ValueError("a node is neither host:port nor [IPv6]:port")
            port = tail[1:]
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError("a host is missing in the node list")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("a node's port is not a TCP port")
        nodes.append((host, int(port) if port else default_port))
    return tuple(nodes)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach Redis, from ``FORWARDAUTH_REDIS_URL``; pure parsing, no connection.

    Three forms: a plain ``redis://``, ``rediss://`` or ``unix://`` URL (one server);
    ``redis+sentinel://[user:password@]host1:26379,host2:26379/SERVICE[/DB]`` (the master of
    SERVICE, asked from those sentinels; the password is the master's); and
    ``redis+cluster://[user:password@]host1:6379,host2:6379/`` (a seed list of a Redis Cluster).
    Error messages never repeat the URL: it may hold a password.
    """

    url: str = field(repr=False)
    mode: Literal["single", "sentinel", "cluster"] = "single"
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    max_connections: int = 64
    socket_timeout: float = 1.0
    connect_timeout: float = 1.0
    retries: int = 2

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse and validate; raises ValueError (without the URL in it) when malformed."""
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep:
            raise ValueError("not a URL (expected e.g. redis://host:6379/0)")
        if scheme in REDIS_SCHEMES:
            return cls(url=url)
        if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
            raise ValueError(f"scheme must be one of {', '.join((*REDIS_SCHEMES, SENTINEL_SCHEME, CLUSTER_SCHEME))}")
        netloc, _, path = rest.partition("/")
        if "?" in path or "#" in path or "?" in netloc or "#" in netloc:
            raise ValueError(f"{scheme} URLs take no query or fragment")
        userinfo, _, hosts = netloc.rpartition("@")
        username, password = None, None
        if userinfo:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(secret) if colon else None
        cluster = scheme == CLUSTER_SCHEME
        nodes = _nodes(hosts, CLUSTER_PORT if cluster else SENTINEL_PORT)
        parts = [p for p in path.split("/") if p]
        if cluster:
            if parts not in ([], ["0"]):
                raise ValueError("a Redis Cluster has only database 0: end the URL with / or /0")
            return cls(url=url, mode="cluster", nodes=nodes, username=username, password=password)
        if not 1 <= len(parts) <= 2:
            raise ValueError("a Sentinel URL names the master: redis+sentinel://host:26379/SERVICE[/DB]")
        if len(parts) == 2 and not parts[1].isdigit():
            raise ValueError("the database of a Sentinel URL must be a number")
        return cls(url=url, mode="sentinel", nodes=nodes, service=unquote(parts[0]),
                   db=int(parts[1]) if len(parts) == 2 else 0, username=username, password=password)

    def client(self) -> RedisClient:
        """The client of this mode, with the same timeouts and retries in every mode."""
        common: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.01), self.retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 30,
            "decode_responses": False,
        }
        if self.mode == "cluster":
            return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                                max_connections=self.max_connections, username=self.username,
                                password=self.password, **common)
        if self.mode == "sentinel":
            # Sentinels are asked for the master's address at every (re)connection, so after a
            # failover the pool reconnects to the new master by itself.
            sentinel = Sentinel(list(self.nodes), sentinel_kwargs={  # type: ignore[no-untyped-call]
                "socket_timeout": self.socket_timeout, "socket_connect_timeout": self.connect_timeout})
            master: aioredis.Redis = sentinel.master_for(
                self.service, db=self.db, username=self.username, password=self.password,
                max_connections=self.max_connections, **common)
            return master
        return aioredis.Redis.from_url(self.url, max_connections=self.max_connections, **common)


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


