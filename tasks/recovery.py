"""Crash recovery that does not wait for traffic: worker heartbeats and a reaper.

taskiq-redis reclaims a dead worker's stream entries only with XAUTOCLAIM after a new
message arrives, and by idle time alone, which also steals slow tasks from live workers.
Here every worker keeps a heartbeat key; any worker that finds a consumer of the group
without one moves that consumer's unacknowledged entries back onto the stream (atomically,
in one script) and removes it from the group.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from importlib import resources
from types import FrameType
from typing import Any

from redis.asyncio import Redis

from tasks.broker import TidingsStreamBroker
from verification.keys import Layout

logger = logging.getLogger(__name__)

_REAP = (resources.files("tasks") / "reap.lua").read_text()


class Recovery:
    """Heartbeat of this worker and reaping of dead ones, for one broker."""

    def __init__(
        self, redis: Redis, broker: TidingsStreamBroker, layout: Layout, beat: float
    ) -> None:
        self._redis = redis
        self._broker = broker
        self._layout = layout
        self._ttl_ms = int(beat * 3 * 1000)
        self._reap = redis.register_script(_REAP)

    async def beat(self) -> None:
        """Say this worker is alive, beside every shard's stream (the reaper's slot)."""
        who = f"{socket.gethostname()}:{os.getpid()}"
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in self._layout.shards:
                pipe.set(keys.heartbeat(self._broker.consumer_name), who, px=self._ttl_ms)
            await pipe.execute()

    async def retire(self) -> None:
        """Drop the heartbeats at shutdown, so anything left is handed back at once."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in self._layout.shards:
                pipe.delete(keys.heartbeat(self._broker.consumer_name))
            await pipe.execute()

    async def reap(self, batch: int = 100) -> int:
        """Hand back the entries of every consumer without a heartbeat; returns how many."""
        group = self._broker.consumer_group_name
        moved = 0
        for keys in self._layout.shards:
            consumers: list[dict[str, Any]] = await self._redis.xinfo_consumers(keys.queue, group)
            for consumer in consumers:
                name = consumer["name"]
                if name == self._broker.consumer_name:
                    continue
                count = await self._reap(
                    keys=[keys.queue, keys.heartbeat(name)],
                    args=[group, name, self._broker.maxlen or 1_000_000, batch],
                )
                if count and int(count) > 0:
                    logger.warning("requeued a dead worker's tasks", extra={"count": int(count)})
                    moved += int(count)
        return moved


def stop_on_signals(broker: TidingsStreamBroker) -> None:
    """Make SIGTERM/SIGINT also stop the broker's reads, then call the previous handler.

    taskiq's own handler only sets an event the stream read may never notice.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            broker.stop_listening()
            if callable(previous):
                previous(sig, frame)

        signal.signal(signum, handler)
