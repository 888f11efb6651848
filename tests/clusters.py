"""A Redis Cluster and a Redis Sentinel group of a test's own, on free loopback ports.

Each node is a real ``redis-server`` (stores.OwnRedis), killed by pid at the end; readiness is
polled with a deadline (``wait_until``), never slept for.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from .stores import OwnRedis, redis_program
from .support import free_port, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000  # a master silent this long is down: failover starts about a second later
FAILOVER_TIMEOUT_MS = 5000
BUS_OFFSET = 10000


class Group:
    """Servers started together and killed together."""

    def __init__(self) -> None:
        self.servers: list[OwnRedis] = []

    def start(self) -> None:
        raise NotImplementedError

    def add(self, server: OwnRedis) -> OwnRedis:
        self.servers.append(server)
        server.start()
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def ask(server: OwnRedis, question: Callable[[redis.Redis], Any]) -> Any:
    """``question(client)`` on a short-lived connection to ``server``."""
    client = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
    try:
        return question(client)
    finally:
        client.close()


def _port_with_bus() -> int:
    """A free port whose cluster bus port (port + 10000, fixed before Redis 7) is free too."""

    def pick() -> int:
        port = free_port()
        if port + BUS_OFFSET > 65535:
            return 0
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port + BUS_OFFSET))
        return port

    return int(wait_until(pick, 10, "a free port with a free bus port"))


def cluster_ok(node: redis.Redis) -> bool:
    return bool(node.execute_command("CLUSTER INFO")["cluster_state"] == "ok")


class RedisClusterGroup(Group):
    """``masters`` cluster-enabled nodes joined by ``redis-cli --cluster create`` (no replicas)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        super().__init__()
        self.directory = directory
        self.masters = masters

    def start(self) -> None:
        for index in range(self.masters):
            folder = self.directory / f"node{index}"
            self.add(
                OwnRedis(
                    folder,
                    (
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(folder / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        # A lost node leaves the others serving their slots.
                        "--cluster-require-full-coverage",
                        "no",
                    ),
                    port=_port_with_bus(),
                )
            )
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [redis_program("redis-cli"), "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for server in self.servers:
            wait_until(lambda s=server: ask(s, cluster_ok), 30, f"cluster node {server.port} ok")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers) + "/"


def knows_everyone(sentinel: redis.Redis) -> bool:
    """A sentinel can fail over once it knows the replica and its two peers."""
    return len(sentinel.sentinel_slaves(SERVICE)) == 1 and len(sentinel.sentinel_sentinels(SERVICE)) == 2


class RedisSentinelGroup(Group):
    """One master, one replica and three sentinels (quorum 2) watching ``SERVICE``."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.sentinels: list[OwnRedis] = []

    def start(self) -> None:
        master = self.add(OwnRedis(self.directory / "master"))
        replica = self.add(OwnRedis(self.directory / "replica", ("--replicaof", "127.0.0.1", str(master.port))))
        wait_until(
            lambda: ask(replica, lambda c: c.info("replication")["master_link_status"] == "up"), 30, "replication"
        )
        for index in range(3):
            folder = self.directory / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # rewritten by the sentinel as it learns
            conf.write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            )
            self.sentinels.append(self.add(OwnRedis(folder, ("--sentinel",), config=conf)))
        for sentinel in self.sentinels:  # each must know the replica and its two peers to fail over
            wait_until(lambda s=sentinel: ask(s, knows_everyone), 30, f"sentinel {sentinel.port} ready")

    def master_port(self) -> int:
        """The master's port as the sentinels see it now."""
        return int(ask(self.sentinels[0], lambda c: c.sentinel_get_master_addr_by_name(SERVICE)[1]))

    def server(self, port: int) -> OwnRedis:
        return next(s for s in self.servers if s.port == port)

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SERVICE}/0"
