"""Real Redis topologies for tests: a Sentinel group and a Redis Cluster, from the shipped binary.

Every node is a ``redis-server`` process (``--sentinel`` for sentinels, ``--cluster-enabled``
for cluster nodes) on a free loopback port; failovers are the real ones.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis

from tidings.embedded_redis import free_port, redis_server_binary

MASTER_NAME = "tidings-test"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a blocking ``predicate`` until truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (sync_redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Node:
    """One redis-server process."""

    port: int
    folder: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), *self.args],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.client().ping, 30, f"redis-server on port {self.port}")

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _data_node(folder: Path, *extra: str) -> Node:
    port = free_port()
    node_dir = folder / str(port)
    node_dir.mkdir()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
    args += ["--save", "", "--appendonly", "no", *extra]
    return Node(port, node_dir, args)


@dataclass
class SentinelGroup:
    """One master, its replicas and three sentinels watching them."""

    folder: Path
    data: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def sentinel(self) -> sync_redis.Redis:
        return self.sentinels[0].client()

    def master_port(self) -> int:
        host, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def master(self) -> Node:
        port = self.master_port()
        return next(n for n in self.data if n.port == port)

    def replicas(self) -> list[Node]:
        port = self.master_port()
        return [n for n in self.data if n.port != port]

    def _settled(self, replicas: int) -> bool:
        """Every sentinel agrees on a master that says so, and on its healthy replicas."""
        ports = set()
        for s in self.sentinels:
            client = s.client()
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            ports.add(int(port))
            known = client.sentinel_slaves(MASTER_NAME)
            healthy = [r for r in known if not ({"s_down", "o_down", "disconnected"} & set(r["flags"].split(",")))]
            if len(healthy) < replicas or len(client.sentinel_sentinels(MASTER_NAME)) < len(self.sentinels) - 1:
                return False
        if len(ports) != 1:
            return False
        port = ports.pop()
        master = next(n for n in self.data if n.port == port)
        info = master.client().info("replication")
        return info["role"] == "master" and int(info["connected_slaves"]) >= replicas

    def wait_settled(self, timeout: float = 60.0) -> None:
        replicas = sum(1 for n in self.data if n.process and n.process.poll() is None) - 1
        wait_until(lambda: self._settled(replicas), timeout, "the sentinel group to settle")

    def failover(self, timeout: float = 60.0) -> tuple[int, int]:
        """A coordinated failover (SENTINEL FAILOVER); returns (old, new) master ports."""
        old = self.master_port()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)

        def promoted() -> int | None:
            port = self.master_port()
            if port == old:
                return None
            new = next(n for n in self.data if n.port == port)
            return port if new.client().info("replication")["role"] == "master" else None

        new = wait_until(promoted, timeout, "a new master")
        return old, new

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()


def start_sentinel_group(replicas: int = 1, down_after_ms: int = 1_000) -> SentinelGroup:
    """Start a master, ``replicas`` replicas and three sentinels; wait until they agree."""
    folder = Path(tempfile.mkdtemp(prefix="tidings-sentinel-"))
    group = SentinelGroup(folder)
    master = _data_node(folder)
    master.start()
    group.data.append(master)
    for _ in range(replicas):
        replica = _data_node(folder, "--replicaof", "127.0.0.1", str(master.port))
        replica.start()
        group.data.append(replica)
    for _ in range(3):
        port = free_port()
        node_dir = folder / f"sentinel-{port}"
        node_dir.mkdir()
        conf = node_dir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {node_dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        sentinel = Node(port, node_dir, [str(conf), "--sentinel"])
        sentinel.start()
        group.sentinels.append(sentinel)
    try:
        group.wait_settled()
    except AssertionError:
        group.stop()
        raise
    return group
