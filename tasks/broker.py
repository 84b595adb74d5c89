"""The taskiq broker: a Redis stream tuned for short, idempotent delivery tasks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, TaskiqFormatter
from taskiq.message import TaskiqMessage
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from config.redis import Topology
from config.settings import Settings
from tasks.telemetry import TelemetryMiddleware
from verification.connections import (
    is_unavailable,
    open_redis,
    pipelined,
    retry_options,
    until_available,
)
from verification.keys import Layout

logger = logging.getLogger(__name__)


#: Stream entry field of a compact task (see :class:`CompactTask`); full messages use ``data``.
COMPACT_FIELD = b"d"


@dataclass(frozen=True)
class CompactTask:
    """A task queued as one short field instead of a whole taskiq message.

    A delivery queued by a signup is ``d = "<delivery id> <request id> [<traceparent>]"``
    (a fifth of a taskiq message's 236 bytes, kept in Redis until a worker has sent it);
    the worker's broker rebuilds the message that ``kiq()`` would have queued. When it was
    queued is the entry's id; the task id is derived from the stream and entry id, so a
    re-read of the same entry is the same task.
    """

    task_name: str
    labels: dict[str, Any] = field(default_factory=dict)
    labels_types: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def entry(argument: str, request_id: str | None, traceparent: str | None) -> bytes:
        """The stream field's value for a task run with ``argument``."""
        parts = [argument, request_id or "-", *([traceparent] if traceparent else [])]
        return " ".join(parts).encode()

    def message(self, stream: bytes, entry_id: bytes, value: bytes) -> bytes:
        """The taskiq message (JSON) of a compact entry, carrying its parsed form."""
        argument, request_id, *rest = value.decode().split(" ")
        labels = {**self.labels, "enqueued_ms": entry_id.split(b"-", 1)[0].decode()}
        if request_id != "-":
            labels["request_id"] = request_id
        if rest:
            labels["traceparent"] = rest[0]
        # Built from fields of the right types: no need for pydantic to check them again.
        parsed = TaskiqMessage.model_construct(
            task_id=hashlib.blake2b(stream + b" " + entry_id, digest_size=16).hexdigest(),
            task_name=self.task_name,
            labels=labels,
            labels_types=dict(self.labels_types),
            args=[argument],
            kwargs={},
        )
        rebuilt = Rebuilt(orjson.dumps(parsed.__dict__))
        rebuilt.parsed = parsed
        return rebuilt


class Rebuilt(bytes):
    """A rebuilt message's JSON and the :class:`TaskiqMessage` it parses to."""

    parsed: TaskiqMessage


class RebuiltFormatter(TaskiqFormatter):
    """The broker's formatter, taking a rebuilt compact message as it is.

    The receiving worker would otherwise parse the JSON just made from it again, and
    validate every field with pydantic (~5 us a task). Anything else goes to ``inner``.
    """

    def __init__(self, inner: TaskiqFormatter) -> None:
        self.inner = inner

    def dumps(self, message: TaskiqMessage) -> BrokerMessage:
        """What ``inner`` makes of ``message``."""
        return self.inner.dumps(message)

    def loads(self, message: bytes) -> TaskiqMessage:
        """The parsed form of a rebuilt message, else what ``inner`` parses."""
        if isinstance(message, Rebuilt):
            return message.parsed  # made for this one delivery of the entry
        return self.inner.loads(message)


class TidingsStreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker with the holes measured in ``shared/notes/taskiq.md`` closed.

    - Acknowledging deletes the entry (XACK + XDEL), so the stream holds only unfinished
      work and ``maxlen`` is a safety valve that never trims live tasks.
    - ``listen`` only reads new entries and never XAUTOCLAIMs: a live worker's slow task is
      never stolen. Entries left by a dead worker are handed back by
      :mod:`tasks.recovery`, which notices the missing heartbeat without waiting for traffic.
    - ``listen`` ends within one read block after :meth:`stop_listening`, however the
      cancellation of the read fares (Python 3.11 + redis-py 8 can swallow it), so SIGTERM
      always stops an idle worker.
    - Losing Redis does not kill the worker: reads back off and resume when it returns.
    """

    _client: Redis | None = None
    _own_client = False
    _acker: GroupAcker | None = None
    _stopping = False
    #: How to rebuild compact entries (set by ``tasks.worker.register_tasks``).
    compact: CompactTask | None = None

    def use_client(self, client: Redis) -> None:
        """Talk to Redis through ``client`` (Sentinel, Cluster) instead of the URL's pool."""
        self._client = client
        self._own_client = True

    #: Entries handed to taskiq and not yet acknowledged (so a re-read skips them).
    _in_hand: set[str]
    #: An idle stream re-reads this worker's own pending entries this often (seconds):
    #: an XREADGROUP whose reply was lost (a connection cut after Redis delivered it, then
    #: a client-side retry) left entries assigned to us that nobody would ever run.
    OWN_RECHECK_SECONDS = 5.0
    #: Every shard's stream (the first is ``queue_name``); kicks go round them in turn.
    streams: tuple[str, ...] = ()
    _next_stream = 0

    async def _declare_consumer_group(self) -> None:
        """Create the consumer group (and stream) if missing; taskiq-redis logs and forgets."""
        for stream in self.streams or (self.queue_name,):
            try:
                await self.client.xgroup_create(
                    stream, self.consumer_group_name, id=self.consumer_id, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def startup(self) -> None:
        """Start, then declare the streams' consumer group once Redis takes it.

        Without Redis the process waits (one log line) instead of crash-looping.
        """
        await AsyncBroker.startup(self)
        if not self.wait_at_startup:
            await self._declare_consumer_group()
            return
        await until_available(
            self._declare_consumer_group, what="the task broker", where=self.where
        )

    #: Where Redis is, for log lines (no password).
    where = ""
    #: Workers and schedulers wait for Redis at start-up; the web starts without it.
    wait_at_startup = True

    async def shutdown(self) -> None:
        """Close the broker's connections."""
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        await super().shutdown()

    def stop_listening(self) -> None:
        """Stop fetching new messages (safe to call from a signal handler)."""
        self._stopping = True

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield new entries of every shard's stream until :meth:`stop_listening`.

        One stream is read inline. Several (a sharded layout) are each read by a task of
        their own, since a Redis Cluster serves one XREADGROUP per slot; their entries
        meet in a small queue, and each reader waits while it is full, so no worker
        buffers more than ``xread_count`` entries per stream.
        """
        if len(self.streams) <= 1:
            async for message in self._read(self.queue_name):
                yield message
            return
        queue: asyncio.Queue[AckableMessage | None] = asyncio.Queue((self.count or 1) * 2)

        async def read(stream: str) -> None:
            try:
                while not self._stopping:
                    try:
                        async for message in self._read(stream):
                            await queue.put(message)
                    except Exception:  # a stream nobody reads would strand its tasks
                        logger.exception("reading a stream failed; reading it again")
                        await asyncio.sleep(1.0)
            finally:
                await queue.put(None)

        readers = [
            asyncio.create_task(read(stream), name=f"read {stream}") for stream in self.streams
        ]
        try:
            running = len(readers)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                    continue
                yield item
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, stream: str) -> AsyncGenerator[AckableMessage, None]:
        """New entries of one stream.

        After a read error this worker first re-reads its own unacknowledged entries (an
        ack may have failed while Redis was away); the reaper only helps dead workers.
        """
        delay = 0.1
        unavailable = False
        if not hasattr(self, "_in_hand"):
            self._in_hand = set()
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + self.OWN_RECHECK_SECONDS
        # None: read new entries (">"); else the id after which to re-read our own.
        own_cursor: str | None = None
        while not self._stopping:
            try:
                fetched = await self.client.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    {stream: own_cursor or ">"},
                    block=None if own_cursor else self.block,
                    count=self.count,
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis came back without the stream (no persistence): declare it again.
                    await self._declare_consumer_group()
                    continue
                if not is_unavailable(exc):
                    raise
                own_cursor, delay, unavailable = await self._wait_out(exc, delay, unavailable)
                continue
            except (RedisError, OSError) as exc:
                own_cursor, delay, unavailable = await self._wait_out(exc, delay, unavailable)
                continue
            if unavailable:
                logger.warning("stream reads work again", extra={"stream": stream})
                unavailable = False
            delay = 0.1
            # Raw replies (the broker's client does not decode): [[stream, [[id, {field: value}]]]].
            replies = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], fetched)
            entries = [(name, entry) for name, batch in replies or [] for entry in batch]
            if own_cursor is not None:
                if not entries:
                    own_cursor = None
                    continue
                own_cursor = entries[-1][1][0].decode()
            elif not entries and loop.time() >= recheck_at:
                recheck_at = loop.time() + self.OWN_RECHECK_SECONDS
                own_cursor = "0"
                continue
            for name, (entry_id, fields) in entries:
                # A re-read of an entry deleted meanwhile, or of one a task is running.
                skip = not fields or (own_cursor is not None and entry_id.decode() in self._in_hand)
                data = None if skip else await self._message_data(name, entry_id, fields)
                if data is not None:
                    yield AckableMessage(
                        data=data,
                        ack=self._ack_generator(id=entry_id.decode(), queue_name=name.decode()),
                    )

    async def _message_data(
        self, stream: bytes, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> bytes | None:
        """The taskiq message of an entry: a whole one (``data``) or a compact one rebuilt.

        An entry of neither kind is acknowledged and dropped (with one error line): a
        delivery's due-set entry queues it again in full.
        """
        data = fields.get(b"data")
        if data is None and self.compact is not None and COMPACT_FIELD in fields:
            data = self.compact.message(stream, entry_id, fields[COMPACT_FIELD])
        if data is None:
            logger.error("a stream entry this worker cannot read; dropped")
            await self._ack_generator(id=entry_id.decode(), queue_name=stream.decode())()
        return data

    async def _wait_out(
        self, exc: BaseException, delay: float, unavailable: bool
    ) -> tuple[str, float, bool]:
        """Back off after a failed read: one log line when reads stop working, not per try."""
        if not unavailable:
            logger.warning(
                "stream reads failed (%s: %s); retrying with backoff",
                type(exc).__name__,
                str(exc)[:200],
            )
        await asyncio.sleep(delay)
        return "0", min(delay * 2, 5.0), True

    @property
    def client(self) -> Redis:
        """One client over the broker's pool, instead of a new one per kick and ack."""
        if self._client is None:
            self._client = Redis(connection_pool=self.connection_pool)
        return self._client

    async def kick(self, message: BrokerMessage) -> None:
        """Append a task message to a stream (any shard's: workers read them all)."""
        queue = message.labels.get("queue_name")
        if not queue:
            streams = self.streams or (self.queue_name,)
            self._next_stream = (self._next_stream + 1) % len(streams)
            queue = streams[self._next_stream]
        await self.client.xadd(
            queue, {b"data": message.message}, maxlen=self.maxlen, approximate=self.approximate
        )

    @property
    def acker(self) -> GroupAcker:
        """The one acknowledger of this process's finished entries."""
        if self._acker is None:
            self._acker = GroupAcker(self.client, self.consumer_group_name)
        return self._acker

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        self._in_hand.add(id)

        async def _ack() -> None:
            try:
                await self.acker.ack(queue_name, id)
            finally:
                self._in_hand.discard(id)

        return _ack


class GroupAcker:
    """Acknowledges finished entries (XACK + XDEL) in batches, like a group commit.

    Acks that arrive while a batch is on its way go together in the next one: under load
    one round trip serves many tasks; an idle worker's ack still leaves at once. Each
    ``ack`` returns only once its entry is acknowledged, so shutdown loses none. An entry
    whose ack fails stays pending: :meth:`TidingsStreamBroker.listen` re-reads it after
    Redis returns (or the reaper hands it on), and the task's own idempotency makes the
    second run harmless.
    """

    def __init__(self, client: Redis, group: str) -> None:
        self._client = client
        self._group = group
        self._batch: list[tuple[str, str]] = []
        self._done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, stream: str, entry_id: str) -> None:
        """Acknowledge and delete ``entry_id`` of ``stream``."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        self._batch.append((stream, entry_id))
        done = self._done
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="stream acks")
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._batch and self._done is not None:
            batch, done = self._batch, self._done
            self._batch, self._done = [], None
            try:
                await self._send(batch)
            except Exception as exc:  # every waiter gets it; taskiq logs it per task
                done.set_exception(exc)
                done.exception()  # retrieved here, so an abandoned waiter logs nothing
            else:
                done.set_result(None)

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in batch:
            by_stream.setdefault(stream, []).append(entry_id)
        # Not a transaction: on a cluster the shards' streams are in different slots. An
        # XACK whose XDEL was lost leaves an acknowledged entry that nobody reads again.
        if not isinstance(self._client, RedisCluster):
            # One server: the lean path, a third of a redis-py pipeline's CPU per batch.
            commands = [
                command
                for stream, ids in by_stream.items()
                for command in (("XACK", stream, self._group, *ids), ("XDEL", stream, *ids))
            ]
            await pipelined(self._client, commands)
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self._group, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()


def build_broker(settings: Settings) -> TidingsStreamBroker:
    """The broker every role uses (web and bot only kick; workers also listen)."""
    target = settings.redis_target()
    layout = Layout.for_settings(settings)
    q = settings.queue
    # One server: taskiq-redis's blocking pool from the URL. Sentinel and Cluster: our
    # client for that topology (the placeholder URL's pool is never connected).
    url = target.url if target.topology == Topology.STANDALONE else "redis://"
    broker = TidingsStreamBroker(
        url,
        queue_name=layout.home.queue,
        consumer_group_name=f"{settings.redis_prefix}:workers",
        # '0': a group created after tasks were queued still reads them.
        consumer_id="0",
        xread_count=q.xread_count,
        idle_timeout=q.idle_timeout_ms,
        maxlen=q.maxlen,
        unacknowledged_lock_timeout=30,
        max_connection_pool_size=q.max_async_tasks + 10,
        **retry_options(),
    )
    broker.formatter = RebuiltFormatter(broker.formatter)
    # Request id, trace context and queueing time ride in every task's labels.
    broker.add_middlewares(TelemetryMiddleware())
    broker.streams = tuple(keys.queue for keys in layout.shards)
    broker.where = target.describe()
    if target.topology != Topology.STANDALONE:
        broker.use_client(open_redis(settings, decode=False))
    if not q.keep_results:
        # Every outcome is recorded on its delivery or event; a result per task would
        # only cost a write.
        return broker
    backend: RedisAsyncResultBackend[object] = RedisAsyncResultBackend(
        url,
        result_ex_time=q.result_ttl_seconds,
        prefix_str=f"{settings.redis_prefix}:result",
        **retry_options(),
    )
    return broker.with_result_backend(backend)
