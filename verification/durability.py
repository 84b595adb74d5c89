"""Durable acceptance: an answer that promises a write waits until replicas hold it.

Redis replicates asynchronously, so a master can acknowledge a write and then lose it to
a failover (Sentinel or Cluster promotes a replica that never received it). ``WAIT n t``
blocks until ``n`` replicas have acknowledged every write *this connection* made, so it
has to follow the write on the same connection: the script and the ``WAIT`` go out as one
pipeline. When fewer replicas answer in time the caller gets :class:`NotDurable` (a 503 at
the edge): the write may or may not survive, and the site's retry with the same
``webhook-id`` either finds it or makes it anew.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from verification.connections import NotDurable, follow_master


class Durability:
    """Runs the scripts whose outcome is promised to someone, then waits for replicas."""

    def __init__(self, redis: Redis, replicas: int, timeout_ms: int) -> None:
        self._redis = redis
        self.replicas = replicas
        self._timeout_ms = timeout_ms

    async def run(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        promised: Callable[[Any], bool] = lambda reply: True,
    ) -> Any:
        """Run ``script``; with replicas configured, return only once enough hold its writes.

        ``promised(reply)`` says whether this reply tells someone a write happened (a
        refusal promises nothing, so it is answered even while replicas lag).
        """
        if not self.replicas:
            return await script(keys=keys, args=args)
        try:
            reply, acked = await self._with_wait(script, keys, args)
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            reply, acked = await self._with_wait(script, keys, args)
        if int(acked) < self.replicas and promised(reply):
            await follow_master(self._redis)  # the next attempt may find the new master
            raise NotDurable(
                f"{acked} of {self.replicas} replica(s) acknowledged within {self._timeout_ms} ms"
            )
        return reply

    async def _with_wait(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas, self._timeout_ms)
            result: list[Any] = await pipe.execute()
        return result
