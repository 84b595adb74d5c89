"""A taskiq schedule source in Redis that fires one-offs on time and everything once.

taskiq-redis's list source buckets one-off schedules per minute, finds them with a SCAN
of the keyspace, and fires every schedule once per running scheduler (see
``shared/notes/taskiq.md``). Here:

- one-off schedules sit in a sorted set by due time, so due work is a range query;
- a dispatcher inside each scheduler process sleeps until the next due time (at most
  ``POLL_SECONDS``) and claims due schedules in batches; taskiq's own once-a-second tick
  can send them too, and the claim (one Lua script) makes sure only one send happens;
- a claim is a short lease (``CLAIM_LEASE_MS``), renewed while a large batch is being
  sent: a scheduler killed between claiming and sending gives the schedule back within
  seconds, so nothing is lost or late by more than that (the tasks themselves are
  idempotent, so the rare second send after such a crash changes nothing);
- with a sharded layout every shard has its own due set; a verification's
  ``remind_after`` lives in its shard, everything else in the home shard;
- cron and interval runs are marked fired per run (``SET NX``), so two schedulers, or a
  restart within the same minute, send each run once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AsyncBroker, ScheduledTask, ScheduleSource
from taskiq.exceptions import ScheduledTaskCancelledError, SendTaskError
from taskiq.kicker import AsyncKicker

from tasks.metrics import schedule_sent
from tasks.stopping import stop_task
from verification.keys import Keys, Layout
from verification.models import now_ms
from verification.schedule_records import stage_schedule
from verification.scripts import Scripts, as_text

logger = logging.getLogger(__name__)

#: Longest the dispatcher sleeps between looks at the due set.
POLL_SECONDS = 0.05
#: A claimed schedule not confirmed sent within this goes back to the due set: what a
#: SIGKILLed scheduler can delay its claims by, so two schedulers fail over within it.
CLAIM_LEASE_MS = 4_000
#: A batch still being sent after this long renews the leases of what is left.
RENEW_AFTER_MS = CLAIM_LEASE_MS // 2
BATCH = 500
#: get_schedules hands taskiq's tick the one-offs due this soon (its fallback path).
LOOKAHEAD_MS = 2_000


class RedisScheduleSource(ScheduleSource):
    """Schedules in Redis; ``periodic`` are code-declared cron/interval jobs (stable ids)."""

    def __init__(
        self,
        redis: Redis,
        layout: Layout | Keys,
        broker: AsyncBroker,
        periodic: Sequence[ScheduledTask] = (),
        *,
        dispatch: bool = True,
    ) -> None:
        self._redis = redis
        self._layout = layout if isinstance(layout, Layout) else Layout(layout.prefix)
        self._broker = broker
        self._periodic = list(periodic)
        self._scripts = Scripts.register(redis)
        self._dispatch = dispatch
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def dispatching(self) -> bool:
        """The on-time dispatcher is running (what a scheduler's readiness asks)."""
        return self._dispatcher is not None and not self._dispatcher.done()

    async def startup(self) -> None:
        """Start the on-time dispatcher (in scheduler processes)."""
        if self._dispatch and self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="schedules")

    async def shutdown(self) -> None:
        """Stop the dispatcher; claims in flight are given back by their lease."""
        if self._dispatcher is not None:
            # One cancel can be swallowed inside redis-py on 3.11: the loop would run on.
            await stop_task(self._dispatcher)
            self._dispatcher = None
        await self._redis.aclose()

    # --- adding and removing -----------------------------------------------------------

    def _keys_of(self, schedule_id: str) -> Keys:
        """The shard of a schedule: a signup reminder's verification's, else the home one."""
        if schedule_id.startswith("remind_ver_"):
            return self._layout.of(schedule_id.removeprefix("remind_"))
        return self._layout.home

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        """Store a schedule; a one-off (``time``) fires once at that time."""
        async with self._redis.pipeline(transaction=True) as pipe:
            stage_schedule(pipe, self._keys_of(schedule.schedule_id), schedule)
            await pipe.execute()

    async def delete_schedule(self, schedule_id: str) -> None:
        """Forget a schedule; a one-off that has not been claimed will not fire."""
        keys = self._keys_of(schedule_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.schedules, schedule_id)
            pipe.zrem(keys.schedules_due, schedule_id)
            pipe.srem(keys.schedules_periodic, schedule_id)
            await pipe.execute()

    # --- taskiq's scheduler loop ---------------------------------------------------------

    async def get_schedules(self) -> list[ScheduledTask]:
        """Periodic schedules, and one-offs due within ``LOOKAHEAD_MS`` (no SCAN)."""
        found: list[ScheduledTask] = []
        for keys in self._layout.shards:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.smembers(keys.schedules_periodic)
                pipe.zrangebyscore(keys.schedules_due, "-inf", now_ms() + LOOKAHEAD_MS, 0, BATCH)
                periodic_ids, due_ids = await pipe.execute()
            ids = [*periodic_ids, *due_ids]
            stored = await self._redis.hmget(keys.schedules, ids) if ids else []
            found.extend(ScheduledTask.model_validate_json(raw) for raw in stored if raw)
        return [*self._periodic, *found]

    async def pre_send(self, task: ScheduledTask) -> None:
        """Claim this run; raise ScheduledTaskCancelledError if another scheduler has it."""
        if task.time is not None:
            reply = await self._claim(self._keys_of(task.schedule_id), only=task.schedule_id)
            if not reply:
                raise ScheduledTaskCancelledError
            return
        slot, seconds = _run_slot(task)
        fired = self._layout.home.schedule_fired(task.schedule_id, slot)
        # The marker only has to outlive its run's window (restarts, the other scheduler).
        if not await self._redis.set(fired, "1", nx=True, ex=max(2 * seconds, 120)):
            raise ScheduledTaskCancelledError

    async def post_send(self, task: ScheduledTask) -> None:
        """A one-off was sent: forget it."""
        if task.time is not None:
            schedule_sent(task.time.timestamp() * 1000, now_ms())
            await self._done(self._keys_of(task.schedule_id), [task.schedule_id])

    # --- the on-time dispatcher ------------------------------------------------------------

    async def _claim(self, keys: Keys, only: str = "") -> list[tuple[str, str]]:
        reply = as_text(
            await self._scripts.sched_claim(
                keys=[keys.schedules_due, keys.schedules_claimed, keys.schedules],
                args=[now_ms(), CLAIM_LEASE_MS, BATCH, only],
            )
        )
        return list(zip(reply[::2], reply[1::2], strict=True))

    async def _done(self, keys: Keys, ids: list[str]) -> None:
        await self._scripts.sched_done(keys=[keys.schedules_claimed, keys.schedules], args=ids)

    async def _renew(self, keys: Keys, ids: list[str]) -> None:
        """Push the leases of claims still being sent a lease ahead (only if still claimed)."""
        until = now_ms() + CLAIM_LEASE_MS
        await self._redis.zadd(keys.schedules_claimed, dict.fromkeys(ids, until), xx=True)

    async def _next_due_in(self) -> float:
        soonest = POLL_SECONDS
        for keys in self._layout.shards:
            first = await self._redis.zrange(keys.schedules_due, 0, 0, withscores=True)
            if first:
                soonest = min(soonest, max(0.0, (float(first[0][1]) - now_ms()) / 1000))
        return soonest

    async def _dispatch_loop(self) -> None:
        delay = 0.5
        failing = False
        while True:
            try:
                sent_any = False
                for keys in self._layout.shards:
                    claimed = await self._claim(keys)
                    if claimed:
                        await self._send(keys, claimed)
                        sent_any = True
                if failing:
                    logger.warning("schedules: dispatch works again")
                    failing = False
                delay = 0.5
                if not sent_any:
                    await asyncio.sleep(await self._next_due_in())
                # else: there may be more due right now
            except asyncio.CancelledError:
                raise
            except Exception:  # the dispatcher must outlive any one failure
                if not failing:  # one line when it stops working, not one per attempt
                    logger.warning(
                        "schedules: dispatch failed; retrying with backoff", exc_info=True
                    )
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(self, keys: Keys, claimed: list[tuple[str, str]]) -> None:
        finished = []
        renew_at = now_ms() + RENEW_AFTER_MS
        for index, (schedule_id, raw) in enumerate(claimed):
            if now_ms() >= renew_at:
                await self._renew(keys, [sid for sid, _ in claimed[index:]])
                renew_at = now_ms() + RENEW_AFTER_MS
            try:
                task = ScheduledTask.model_validate_json(raw)
            except ValidationError:
                logger.error(
                    "schedules: dropping a schedule that cannot be read",
                    extra={"schedule": schedule_id},
                )
                finished.append(schedule_id)
                continue
            try:
                await (
                    AsyncKicker(task.task_name, self._broker, task.labels)
                    .with_labels(schedule_id=task.schedule_id)
                    .with_task_id(task_id=task.task_id)
                    .kiq(*task.args, **task.kwargs)
                )
            except (SendTaskError, RedisError, OSError):
                # Not confirmed: the lease gives this one (and the rest of the batch) back.
                logger.warning("schedules: could not send; will retry", exc_info=True)
                break
            if task.time is not None:
                schedule_sent(task.time.timestamp() * 1000, now_ms())
            finished.append(schedule_id)
        if finished:
            await self._done(keys, finished)


def _run_slot(task: ScheduledTask) -> tuple[int, int]:
    """Which run of a periodic schedule this is, and the run's length in seconds.

    The minute for cron schedules, else the interval slot.
    """
    now = int(datetime.now(UTC).timestamp())
    interval = task.interval
    if interval is not None:
        seconds = interval if isinstance(interval, int) else int(interval.total_seconds())
        seconds = max(seconds, 1)
        return now // seconds, seconds
    return now // 60, 60
