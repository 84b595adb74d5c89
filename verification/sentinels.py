"""What the sentinels say about the master right now, for writes that must survive a failover.

A durable write waits (``WAIT``) for replicas. How many is the question this module
answers on Sentinel: *every replica that could acknowledge it*, at least the configured
minimum. Waiting for fewer loses writes in a coordinated failover (measured: ``WAIT 1``
with two replicas lost 47 signups): the old master keeps taking writes after a replica was
promoted, the *other* replica acknowledges them, then resyncs from the promoted one and
drops them. Waiting for a fixed "all of them" is safe but refuses every durable write until
Sentinel turns the old master into a replica (about ten seconds after the failover, by
Sentinel's own timers), so recovery took 16 to 28 s.

So writes are refused while Sentinel reports a failover under way, and afterwards wait for
the replicas Sentinel lists as following the master: the demoted master, still reporting
itself a master, is not counted until it has rejoined. Counting a replica that cannot
acknowledge is safe (the write is refused); not counting one that can is what loses
writes, so the count errs upward.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# Flags on a replica that say it cannot be replicating now.
_GONE = frozenset({"s_down", "o_down"})


@dataclass(frozen=True)
class MasterView:
    """One sentinel's answer: the master, its replicas that can acknowledge, a failover."""

    address: tuple[str, int]
    replicas: int
    failing_over: bool


def read_view(master: dict[str, Any], replicas: list[dict[str, Any]]) -> MasterView:
    """A :class:`MasterView` from ``SENTINEL MASTER`` and ``SENTINEL REPLICAS`` replies."""
    flags = set(str(master["flags"]).split(","))
    following = 0
    promoting = False
    for replica in replicas:
        replica_flags = set(str(replica["flags"]).split(","))
        promoting |= "promoted" in replica_flags
        if not replica_flags & _GONE and replica.get("role-reported") != "master":
            following += 1
    return MasterView(
        address=(str(master["ip"]), int(master["port"])),
        replicas=following,
        failing_over=promoting or bool(flags & {"failover_in_progress", "s_down", "o_down"}),
    )


class SentinelWatch:
    """A view of the master at most ``every`` seconds old, refreshed by the writes that need it.

    One refresh runs at a time, however many writes wait on it; when no sentinel answers,
    the last view stands (redis-py needs the sentinels to reconnect anyway).
    """

    def __init__(self, pool: SentinelConnectionPool, every: float = 0.5) -> None:
        self._pool = pool
        self._every = every
        self._view: MasterView | None = None
        self._at = -math.inf
        self._refreshing: asyncio.Future[MasterView] | None = None

    @classmethod
    def of(cls, redis: Redis) -> SentinelWatch | None:
        """A watch for ``redis`` when it is a Sentinel client, else ``None``."""
        pool = getattr(redis, "connection_pool", None)
        return cls(pool) if isinstance(pool, SentinelConnectionPool) else None

    async def view(self) -> MasterView:
        """The master as the sentinels see it (at most ``every`` seconds old)."""
        loop = asyncio.get_running_loop()
        if self._view is not None and loop.time() - self._at < self._every:
            return self._view
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        # Shielded: a caller that gives up must not cancel the others' refresh.
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> MasterView:
        manager = self._pool.sentinel_manager
        name = self._pool.service_name
        view: MasterView | None = None
        for sentinel in list(manager.sentinels):
            try:
                async with sentinel.pipeline(transaction=False) as pipe:
                    pipe.sentinel_master(name)
                    pipe.sentinel_slaves(name)
                    master, replicas = await pipe.execute()
            except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError):
                continue
            view = read_view(master, replicas)
            break
        if view is None:
            if self._view is None:
                raise RedisConnectionError(f"no sentinel answered for {name!r}")
            return self._view
        previous, self._view = self._view, view
        self._at = asyncio.get_running_loop().time()
        if previous is not None and previous.address != view.address:
            logger.warning(
                "Sentinel reports a new master; reconnecting",
                extra={"master": f"{view.address[0]}:{view.address[1]}"},
            )
            # Connections in use are dropped too: one that wrote to the old master after
            # the switch is refused by its WAIT anyway, and its retry finds the new one.
            self._pool.master_address = view.address
            await self._pool.disconnect(inuse_connections=True)
        return view
