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

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from verification.connections import NotDurable, follow_master, is_unavailable, pipelined
from verification.keys import Keys
from verification.sentinels import SentinelWatch

if TYPE_CHECKING:
    from config.settings import Settings

# A write after the caller's own: replication is ordered, so replicas that hold this hold
# everything the shard's master took before it.
_BARRIER = "redis.call('SET', KEYS[1], '1', 'PX', 10000) return 1"


class Durability:
    """Runs the scripts whose outcome is promised to someone, then waits for replicas."""

    def __init__(self, redis: Redis, replicas: int, timeout_ms: int) -> None:
        self._redis = redis
        # Checked once: isinstance() against redis-py's cluster class is slow (~0.5 us).
        self._clustered = isinstance(redis, RedisCluster)
        self.replicas = replicas
        self._timeout_ms = timeout_ms
        self._barrier = redis.register_script(_BARRIER)
        # On Sentinel, also without durable acceptance: the watch notices a new master
        # within half a second, where redis-py would keep writing to the old one until it
        # is demoted (about ten seconds of writes lost in a failover).
        self._watch = SentinelWatch.of(redis)

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> Durability:
        """The durability the settings ask for (``TIDINGS_REDIS__DURABLE_*``)."""
        return cls(redis, settings.durable_replicas, settings.redis.durable_timeout_ms)

    async def barrier(self, keys: Keys) -> None:
        """Return once replicas hold every write already made in ``keys``' shard.

        For writes that are transactions rather than one script (a reminder with its
        schedule): a later write to the same master, waited for, covers them.
        """
        if self.replicas:
            await self.run(self._barrier, [keys.readiness], [])

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
            if self._watch is not None:
                await self._watch.view()
            return await self.unpromised(script, keys, args)
        required = await self._required()
        run = self._on_node if self._clustered else self._with_wait
        try:
            reply, acked = await run(script, keys, args, required)
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            reply, acked = await run(script, keys, args, required)
        if int(acked) < required and promised(reply):
            await follow_master(self._redis)  # the next attempt may find the new master
            raise NotDurable(
                f"{acked} of {required} replica(s) acknowledged within {self._timeout_ms} ms"
            )
        return reply

    async def _required(self) -> int:
        """How many replicas must acknowledge: on Sentinel, every one following the master.

        See :mod:`verification.sentinels` for why a fixed count either loses writes in a
        failover or refuses them for long after it.
        """
        if self._watch is None:
            return self.replicas
        view = await self._watch.view()
        if view.failing_over:
            raise NotDurable("Sentinel reports a failover in progress")
        return max(self.replicas, view.replicas)

    async def unpromised(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """Run ``script`` on the lean path without waiting for replicas.

        For writes that tell nobody anything was stored (a send's outcome, which is
        idempotent per attempt; a lease renewal).
        """
        if self._clustered:
            return await script(keys=keys, args=args)
        return await self._plain(script, keys, args)

    async def _plain(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script alone, on the lean path (:func:`pipelined`)."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            [reply] = await pipelined(self._redis, [command])
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            [reply] = await pipelined(self._redis, [("EVALSHA", script.sha, *command[2:])])
        return reply

    async def _with_wait(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], required: int
    ) -> list[Any]:
        return await pipelined(
            self._redis,
            [
                ("EVALSHA", script.sha, len(keys), *keys, *args),
                ("WAIT", required, self._timeout_ms),
            ],
        )

    async def _on_node(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], required: int
    ) -> list[Any]:
        """The same on a Redis Cluster: the script and WAIT on one connection to its master.

        A cluster pipeline cannot carry a keyless WAIT, so this takes a connection of the
        node that owns the script's slot. Redirections and lost nodes make the client
        reload its slot map and try again within a few seconds.
        """
        cluster: RedisCluster = self._redis  # type: ignore[assignment]
        delay = 0.05
        for attempt in range(8):
            try:
                return await self._send_on_node(cluster, script, keys, args, required)
            except (
                ResponseError,
                RedisConnectionError,
                RedisTimeoutError,
                SlotNotCoveredError,
                OSError,
            ) as exc:
                if isinstance(exc, NoScriptError) or not is_unavailable(exc) or attempt == 7:
                    raise
                # The client's own way to reload the slot map (under its lock): its
                # commands would do the same after a MOVED or a lost node.
                cluster._initialize = True
                await cluster.initialize()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_on_node(
        self,
        cluster: RedisCluster,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        required: int,
    ) -> list[Any]:
        node = cluster.get_node_from_key(keys[0])
        if node is None:
            raise RedisConnectionError("no node serves the script's slot")
        connection = node.acquire_connection()
        try:
            await node.disconnect_if_needed(connection)
            await connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("EVALSHA", script.sha, len(keys), *keys, *args),
                        ("WAIT", required, self._timeout_ms),
                    ]
                )
            )
            error: ResponseError | RedisConnectionError | None = None
            reply: Any = None
            try:
                reply = await connection.read_response()
            except ResponseError as exc:  # the WAIT's answer still follows
                error = exc
            try:
                acked = await connection.read_response()
            except ResponseError as exc:
                # WAIT refused: this node is a replica now (a failover the slot map has
                # not seen yet); the script was refused too, or redirected.
                error = error or RedisConnectionError(f"not the slot's master: {exc}")
        except (RuntimeError, AttributeError) as exc:  # the node died under the connection
            await connection.disconnect()
            raise RedisConnectionError(f"connection lost: {type(exc).__name__}") from exc
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
        if error is not None:
            raise error
        return [reply, acked]
