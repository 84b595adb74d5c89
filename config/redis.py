"""Where Redis is and how it is made highly available: one URL, three topologies.

``TIDINGS_REDIS_URL`` takes the usual ``redis://`` / ``rediss://`` / ``unix://`` forms for
one server, and two more:

- ``redis+sentinel://[user:password@]host:port[,host:port…]/<master name>[/<db>]``: the
  sentinels to ask, the monitored master's name; the password is the data nodes'
  (``TIDINGS_REDIS__SENTINEL_PASSWORD`` is the sentinels' own);
- ``redis+cluster://[user:password@]host:port[,host:port…]``: seed nodes of a Redis Cluster.

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS to every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, unquote

from pydantic import BaseModel, ConfigDict, Field, SecretStr

URL_KEY = "TIDINGS_REDIS_URL"


class Topology(StrEnum):
    """How the Redis data is served."""

    STANDALONE = "standalone"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


class RedisOptions(BaseModel):
    """Settings beside the URL (``TIDINGS_REDIS__*``)."""

    model_config = ConfigDict(frozen=True)

    # The sentinels' own password (``requirepass`` in sentinel.conf), if any.
    sentinel_password: SecretStr | None = None
    # TLS: a CA bundle to trust, and whether to check the node's certificate.
    ca_file: Path | None = None
    validate_certs: bool = True
    # Durable acceptance: answers that promise something was stored wait until this many
    # replicas have it (Redis WAIT). None: 1 on Sentinel and Cluster, 0 on one server.
    durable_replicas: Annotated[int | None, Field(ge=0, le=16)] = None
    durable_timeout_ms: Annotated[int, Field(ge=10, le=60_000)] = 500
    # Logical shards the data is spread over (each one hash tag). None: 12 on a Redis
    # Cluster (4 per master on 3 masters), else 1, which is the layout of a single server.
    shards: Annotated[int | None, Field(ge=1, le=255)] = None
    # How long a command keeps retrying through a failover before the caller sees the
    # error (and a web request answers 503 + Retry-After).
    retry_seconds: Annotated[float, Field(gt=0, le=120)] = 6.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``TIDINGS_REDIS_URL``: what to connect to, without secrets in ``repr``."""

    topology: Topology
    url: str  # the standalone URL as given (other topologies: empty)
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        return f"RedisTarget({self.describe()})"

    def describe(self) -> str:
        """A one-line description that is safe to print (no password)."""
        if self.topology == Topology.STANDALONE:
            scheme, _, rest = self.url.partition("://")
            host = rest.rpartition("@")[2]
            return f"{scheme}://{host}"
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.topology == Topology.SENTINEL:
            return f"sentinel {nodes} master {self.master!r} db {self.db}"
        return f"cluster {nodes}"

    @property
    def has_replicas(self) -> bool:
        """Whether the topology is built around replicas (so durable acceptance is on)."""
        return self.topology != Topology.STANDALONE


class RedisUrlError(ValueError):
    """A ``TIDINGS_REDIS_URL`` that cannot work; the message never repeats a password."""


def _nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for raw in netloc.split(","):
        part = raw.strip()
        if not part:
            raise RedisUrlError("an empty host in the node list")
        if part.startswith("["):  # [::1]:26379
            host, _, port = part[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        if not host:
            raise RedisUrlError(f"no host in {part!r}")
        try:
            number = int(port) if port else default_port
        except ValueError:
            raise RedisUrlError(f"port {port!r} is not a number") from None
        if not 0 < number < 65_536:
            raise RedisUrlError(f"port {number} is out of range")
        nodes.append((host, number))
    return tuple(nodes)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None


def _sentinel_path(parts: list[str]) -> tuple[str, int]:
    if not parts:
        raise RedisUrlError("no master name: redis+sentinel://host:26379/<master name>")
    if len(parts) > 2:
        raise RedisUrlError("expected /<master name>[/<db>] after the sentinels")
    if len(parts) == 2 and not parts[1].isdigit():
        raise RedisUrlError(f"database {parts[1]!r} is not a number")
    return unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL of any supported topology; :class:`RedisUrlError` if it cannot work."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RedisUrlError("expected a URL such as redis://localhost:6379/0")
    scheme = scheme.lower()
    if scheme in {"redis", "rediss", "unix"}:
        return RedisTarget(Topology.STANDALONE, url)
    base, plus, kind = scheme.partition("+")
    if not plus or base not in {"redis", "rediss"} or kind not in {"sentinel", "cluster"}:
        raise RedisUrlError(
            f"unknown scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    username, password = _credentials(userinfo)
    if not hosts:
        raise RedisUrlError("no node addresses")
    parts = [p for p in path.split("/") if p]
    if kind == "sentinel":
        nodes = _nodes(hosts, 26_379)
        topology, (master, db) = Topology.SENTINEL, _sentinel_path(parts)
    else:
        nodes = _nodes(hosts, 6_379)
        if parts:
            raise RedisUrlError("a cluster has no databases or names: nothing after the nodes")
        topology, master, db = Topology.CLUSTER, "", 0
    if query and parse_qs(query):
        raise RedisUrlError("query options are not read here: use TIDINGS_REDIS__* settings")
    return RedisTarget(
        topology,
        "",
        nodes=nodes,
        master=master,
        db=db,
        username=username,
        password=password,
        tls=base == "rediss",
    )
