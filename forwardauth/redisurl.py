"""How to reach Redis, from ``FORWARDAUTH_REDIS_URL``: pure parsing, no connection.

Configuration checks the URL with it and stores.redis connects from it, so the configuration does
not import the Redis client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379


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
        return cls(
            url=url,
            mode="sentinel",
            nodes=nodes,
            service=unquote(parts[0]),
            db=int(parts[1]) if len(parts) == 2 else 0,
            username=username,
            password=password,
        )
