"""Real Redis topologies for tests: a Sentinel group and a Redis Cluster, from the shipped binary.

Every node is a ``redis-server`` process (``--sentinel`` for sentinels, ``--cluster-enabled``
for cluster nodes) on a free loopback port; failovers are the real ones.
"""

from __future__ import annotations

import random
import socket
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


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too."""
    while True:
        port = random.randint(20_000, 50_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _data_node(folder: Path, *extra: str) -> Node:
    port = _cluster_port() if "--cluster-enabled" in extra else free_port()
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
        _host, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER_NAME)
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
            healthy = [
                r
                for r in known
                if not ({"s_down", "o_down", "disconnected"} & set(r["flags"].split(",")))
            ]
            if (
                len(healthy) < replicas
                or len(client.sentinel_sentinels(MASTER_NAME)) < len(self.sentinels) - 1
            ):
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


@dataclass
class Cluster:
    """A Redis Cluster: masters owning equal slot ranges, one replica each."""

    folder: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def masters(self) -> list[Node]:
        return [n for n in self.alive() if n.client().info("replication")["role"] == "master"]

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def _healthy(self) -> bool:
        for node in self.alive():
            info = node.client().cluster("info")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) < len(
                self.alive()
            ):
                return False
        masters = self.masters()
        return (
            all(int(m.client().info("replication")["connected_slaves"]) >= 1 for m in masters)
            if len(self.alive()) >= 2 * len(masters)
            else True
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_until(self._healthy, timeout, "the cluster to be healthy")

    def keys_per_master(self) -> dict[int, int]:
        return {m.port: int(m.client().dbsize()) for m in self.masters()}

    def commands_per_master(self) -> dict[int, int]:
        return {
            m.port: int(m.client().info("stats")["total_commands_processed"])
            for m in self.masters()
        }

    def replica_of(self, master: Node) -> Node:
        master_id = master.client().cluster("myid")
        for node in self.alive():
            info = node.client().info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master.port:
                return node
        raise AssertionError(f"no replica of {master.port} ({master_id})")

    def failover(self, master: Node, timeout: float = 60.0) -> Node:
        """A coordinated ``CLUSTER FAILOVER`` run on ``master``'s replica; returns it."""
        replica = self.replica_of(master)
        wait_until(
            lambda: replica.client().info("replication")["master_link_status"] == "up",
            timeout,
            "the replica's link to its master",
        )
        deadline = time.monotonic() + timeout
        while True:
            # A manual failover the master does not answer in time is dropped: ask again.
            replica.client().execute_command("CLUSTER", "FAILOVER")
            try:
                wait_until(
                    lambda: replica.client().info("replication")["role"] == "master",
                    10,
                    "the replica's promotion",
                )
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        self.wait_healthy(timeout)
        return replica

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(masters: int = 3, node_timeout_ms: int = 2_000) -> Cluster:
    """Start ``masters`` masters with one replica each, slots split evenly, and wait."""
    folder = Path(tempfile.mkdtemp(prefix="tidings-cluster-"))
    cluster = Cluster(folder)
    for _ in range(masters * 2):
        node = _data_node(
            folder,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
        )  # fmt: skip
        node.start()
        cluster.nodes.append(node)
    try:
        first = cluster.nodes[0].client()
        for node in cluster.nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        for index, node in enumerate(cluster.nodes[:masters]):
            low = index * 16384 // masters
            high = (index + 1) * 16384 // masters - 1
            # ADDSLOTS, not ADDSLOTSRANGE: the shipped redis-server may be 6.2.
            node.client().execute_command("CLUSTER", "ADDSLOTS", *range(low, high + 1))

        def met() -> bool:
            return all(
                int(n.client().cluster("info")["cluster_known_nodes"]) == len(cluster.nodes)
                for n in cluster.nodes
            )

        wait_until(met, 30, "every node to meet the others")
        for master, replica in zip(cluster.nodes[:masters], cluster.nodes[masters:], strict=True):
            master_id = master.client().execute_command("CLUSTER", "MYID")
            wait_until(
                lambda r=replica, m=master_id: r.client().execute_command(
                    "CLUSTER", "REPLICATE", m
                ),
                30,
                "a replica to attach",
            )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster
