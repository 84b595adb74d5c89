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

logger = logging.getLogger(__name__)

_REAP = (resources.files("tasks") / "reap.lua").read_text()


class Recovery:
    """Heartbeat of this worker and reaping of dead ones, for one broker."""

    def __init__(self, redis: Redis, broker: TidingsStreamBroker, prefix: str, beat: float) -> None:
        self._redis = redis
        self._broker = broker
        self._prefix = prefix
        self._ttl_ms = int(beat * 3 * 1000)
        self._reap = redis.register_script(_REAP)

    def _heartbeat_key(self, consumer: str) -> str:
        return f"{self._prefix}:consumer:{consumer}"

    async def beat(self) -> None:
        """Say this worker is alive."""
        who = f"{socket.gethostname()}:{os.getpid()}"
        await self._redis.set(self._heartbeat_key(self._broker.consumer_name), who, px=self._ttl_ms)

    async def retire(self) -> None:
        """Drop the heartbeat at shutdown, so anything left is handed back at once."""
        await self._redis.delete(self._heartbeat_key(self._broker.consumer_name))

    async def reap(self, batch: int = 100) -> int:
        """Hand back the entries of every consumer without a heartbeat; returns how many."""
        stream, group = self._broker.queue_name, self._broker.consumer_group_name
        consumers: list[dict[str, Any]] = await self._redis.xinfo_consumers(stream, group)
        moved = 0
        for consumer in consumers:
            name = consumer["name"]
            if name == self._broker.consumer_name:
                continue
            count = await self._reap(
                keys=[stream, self._heartbeat_key(name)],
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
