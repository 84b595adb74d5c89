"""The schedule store (``tasks/schedules.py``) in real ``tidings scheduler`` processes.

One-off schedules fire on time (within ``BOUND_MS`` of their due time, never early) and
exactly once, with one or two schedulers and across a SIGKILL; cancelled ones never fire;
periodic runs fire once per slot with two schedulers; ``get_schedules`` never scans.

Firing is observed without a worker: a kicked schedule is an entry of the taskiq stream
``Keys(prefix).queue`` (field ``data``: the taskiq message, with the ``schedule_id``
label), and the millisecond part of the entry id is when it was kicked (Redis's clock, on
the same host as the test's clock that set the due times).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from taskiq import ScheduledTask, TaskiqScheduler
from taskiq.api import run_scheduler_task

from config.settings import Settings
from tasks.broker import build_broker
from tasks.schedules import RedisScheduleSource
from tasks.scheduling import periodic_jobs, schedule_source
from tasks.stopping import stop_task
from tests.conftest import wait_for
from tests.processes import running
from verification.connections import open_redis
from verification.keys import Keys
from verification.models import now_ms

#: A one-off must be sent at most this long after its due time.
BOUND_MS = 1_000
#: ...and not before it; due times are whole milliseconds and both clocks truncate to ms.
EARLY_MS = 5
#: After every expected send arrived: how long to keep watching for a late second one.
#: A duplicate would come from another dispatcher (polls every 50 ms) or from taskiq's
#: tick (once a second), so within a second; a re-send after a claim's 30 s lease is ruled
#: out separately by asserting that the store holds no claim any more.
QUIET_S = 1.0
#: What the scheduler logs once its sources (the dispatcher) and broker have started.
STARTED = "Startup completed."
TASK = "tidings.sweep_expired"  # any name: the stream does not care, no worker runs


@dataclass
class Scheduler:
    """A running ``tidings scheduler`` and the log lines it wrote so far."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    # Always drained: a full stderr pipe would block the scheduler's event loop.
    async for line in stream:
        lines.append(line.decode(errors="replace").rstrip())


@contextlib.asynccontextmanager
async def scheduler(settings: Settings, *options: str) -> AsyncIterator[Scheduler]:
    """``tidings scheduler`` as a real process, once it has started up."""
    drain: asyncio.Task[None] | None = None
    try:
        async with running("tidings", "scheduler", *options, settings=settings) as process:
            assert process.stderr is not None
            running_one = Scheduler(process)
            drain = asyncio.create_task(_collect(process.stderr, running_one.lines))
            await wait_for(
                lambda: (
                    process.returncode is not None
                    or any(STARTED in line for line in running_one.lines)
                ),
                timeout=30,
                what="the scheduler to start",
            )
            assert process.returncode is None, "\n".join(running_one.lines)
            yield running_one
    finally:
        if drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain, 5)


@dataclass(frozen=True)
class Kick:
    schedule_id: str
    at_ms: int
    args: list[object]


class Stream:
    """What was sent: the taskiq stream, read incrementally (cheap to poll)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._queue = keys.queue
        self._last = "-"
        self._seen: list[Kick] = []

    async def kicks(self, id_prefix: str) -> list[Kick]:
        """Every message sent so far for a schedule whose id starts with ``id_prefix``."""
        while batch := await self._redis.xrange(self._queue, self._last, "+", count=1000):
            for entry_id, fields in batch:
                message = json.loads(fields["data"])
                schedule_id = message["labels"].get("schedule_id", "")
                self._seen.append(Kick(schedule_id, int(entry_id.split("-")[0]), message["args"]))
            self._last = "(" + batch[-1][0]
        return [k for k in self._seen if k.schedule_id.startswith(id_prefix)]

    async def wait_for(self, expected: set[str], id_prefix: str, timeout: float) -> None:
        """Until every schedule in ``expected`` was sent (at least once)."""

        async def all_sent() -> bool:
            return expected <= {k.schedule_id for k in await self.kicks(id_prefix)}

        await wait_for(all_sent, timeout, f"{len(expected)} schedules to be sent")


def one_off(schedule_id: str, due_ms: int) -> ScheduledTask:
    return ScheduledTask(
        task_name=TASK,
        labels={},
        args=[schedule_id],
        kwargs={},
        schedule_id=schedule_id,
        time=datetime.fromtimestamp(due_ms / 1000, UTC),
    )


async def add_all(source: RedisScheduleSource, due: dict[str, int]) -> None:
    for schedule_id, due_ms in due.items():
        await source.add_schedule(one_off(schedule_id, due_ms))


def spread(tag: str, count: int, first_ms: int, last_ms: int) -> dict[str, int]:
    """``count`` schedule ids with due times evenly from ``first_ms`` to ``last_ms``."""
    step = (last_ms - first_ms) / max(count - 1, 1)
    return {f"{tag}{i:05d}": first_ms + round(i * step) for i in range(count)}


def assert_once_each(sent: list[Kick], due: dict[str, int]) -> None:
    per_id = Counter(k.schedule_id for k in sent)
    doubled = {i: n for i, n in per_id.items() if n > 1}
    missing = set(due) - set(per_id)
    unknown = set(per_id) - set(due)
    assert not doubled, (
        f"{len(doubled)} schedules sent more than once: {sorted(doubled.items())[:10]}"
    )
    assert not missing, f"{len(missing)} schedules never sent: {sorted(missing)[:10]}"
    assert not unknown, f"sent but not expected: {sorted(unknown)[:10]}"
    assert all(k.args == [k.schedule_id] for k in sent)


def lateness(sent: list[Kick], due: dict[str, int]) -> dict[str, int]:
    return {k.schedule_id: k.at_ms - due[k.schedule_id] for k in sent if k.schedule_id in due}


def assert_on_time(late: dict[str, int]) -> None:
    early = {i: ms for i, ms in late.items() if ms < -EARLY_MS}
    slow = {i: ms for i, ms in late.items() if ms > BOUND_MS}
    worst = sorted(late.values())
    assert not early, f"{len(early)} sent before due (ms): {sorted(early.items())[:10]}"
    assert not slow, (
        f"{len(slow)} of {len(late)} sent more than {BOUND_MS} ms late; worst {worst[-5:]} ms, "
        f"e.g. {sorted(slow.items(), key=lambda kv: -kv[1])[:5]}"
    )


async def store_counts(redis: Redis, keys: Keys) -> tuple[int, int, int]:
    """(due, claimed, stored) one-offs: all zero once everything was sent."""
    return (
        await redis.zcard(keys.schedules_due),
        await redis.zcard(keys.schedules_claimed),
        await redis.hlen(keys.schedules),
    )


async def _store_empty(redis: Redis, keys: Keys) -> bool:
    return await store_counts(redis, keys) == (0, 0, 0)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def source(settings: Settings) -> AsyncIterator[RedisScheduleSource]:
    """The store as the web app uses it: adds and deletes, never dispatches."""
    broker = build_broker(settings)
    store = schedule_source(settings, broker, dispatch=False)
    yield store
    await store.shutdown()
    await broker.shutdown()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


@pytest.fixture
def stream(redis: Redis, keys: Keys) -> Stream:
    return Stream(redis, keys)


@pytest.fixture
def tag() -> str:
    return f"s{uuid.uuid4().hex[:8]}-"


async def test_one_offs_fire_on_time_and_once(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    far = one_off(f"{tag}far", now_ms() + 3_600_000)
    await source.add_schedule(far)  # the next due time the dispatcher knows: an hour away
    async with scheduler(settings):
        start = now_ms()
        # Added while the dispatcher waits for the far one: a few due almost at once...
        due = spread(f"{tag}a", 5, start + 200, start + 400)
        # ...and the rest due in 1 to 3 s.
        due |= spread(f"{tag}b", 40, start + 1_000, start + 3_000)
        await add_all(source, due)
        await stream.wait_for(set(due), tag, timeout=3 + BOUND_MS / 1000 + 5)
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
    assert_once_each(sent, due)
    assert_on_time(lateness(sent, due))
    assert await store_counts(redis, keys) == (1, 0, 1)  # only the far one is left


async def test_a_thousand_due_at_the_same_instant(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    async with scheduler(settings):
        at = (now_ms() + 5_000) // 1000 * 1000  # the start of a second, 4 to 5 s away
        due = {f"{tag}{i:04d}": at for i in range(1000)}
        await add_all(source, due)
        assert now_ms() < at - 100, "adding 1,000 schedules took too long for this test"
        await stream.wait_for(set(due), tag, timeout=(at - now_ms()) / 1000 + 10)
        # A sent one-off is forgotten right after its kick, while the schedulers run.
        await wait_for(lambda: _store_empty(redis, keys), 30, "sent one-offs forgotten")
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
    assert_once_each(sent, due)
    assert_on_time(lateness(sent, due))
    assert await store_counts(redis, keys) == (0, 0, 0)


async def test_two_schedulers_send_each_one_off_once(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    # The second scheduler also re-reads the store every second, so its taskiq tick claims
    # due one-offs too (``pre_send``): two dispatchers and a tick compete for each one.
    async with scheduler(settings), scheduler(settings, "--update-interval", "1"):
        start = now_ms()
        due = spread(tag, 300, start + 700, start + 3_700)
        await add_all(source, due)
        await stream.wait_for(set(due), tag, timeout=3.7 + BOUND_MS / 1000 + 5)
        # A sent one-off is forgotten right after its kick, while the schedulers run.
        await wait_for(lambda: _store_empty(redis, keys), 30, "sent one-offs forgotten")
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
        sweeps = await stream.kicks("sweep-expired")
    assert_once_each(sent, due)
    assert_on_time(lateness(sent, due))
    assert await store_counts(redis, keys) == (0, 0, 0)
    # Both schedulers send the every-minute cron at their first tick: one send per minute.
    per_minute = Counter(k.at_ms // 60_000 for k in sweeps)
    assert sweeps, "the sweep-expired cron was never sent"
    assert set(per_minute.values()) == {1}, per_minute


async def test_sigkilled_scheduler_loses_and_doubles_nothing(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    start = now_ms()
    before = spread(f"{tag}a", 20, start + 800, start + 1_200)  # sent before the kill
    far = one_off(f"{tag}far", start + 3_600_000)  # must stay pending throughout
    await add_all(source, before)
    await source.add_schedule(far)
    async with scheduler(settings) as first:
        await stream.wait_for(set(before), tag, timeout=1.2 + BOUND_MS / 1000 + 5)
        # Pending at the kill: some due while no scheduler runs, some after the restart.
        kill_at = now_ms()
        missed = spread(f"{tag}b", 20, kill_at + 500, kill_at + 1_000)
        after = spread(f"{tag}c", 20, kill_at + 3_500, kill_at + 4_000)
        await add_all(source, {**missed, **after})
        # Nothing is due or claimed at this instant, so the kill cannot catch a send
        # between claim and kick (which the design re-sends once after the 30 s lease).
        assert await redis.zcard(keys.schedules_claimed) == 0
        assert now_ms() < kill_at + 400, "too slow to kill before the next one-off is due"
        first.kill()
        await first.process.wait()
    # Let every ``missed`` one-off fall due while no scheduler is running.
    await asyncio.sleep(max(0, kill_at + 1_300 - now_ms()) / 1000)
    async with scheduler(settings):
        ready = now_ms()
        expected = {**before, **missed, **after}
        await stream.wait_for(set(expected), tag, timeout=(kill_at + 4_000 - ready) / 1000 + 6)
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
    assert_once_each(sent, expected)
    late = lateness(sent, expected)
    assert_on_time({i: late[i] for i in [*before, *after]})
    # Overdue at the restart: sent at once by the new scheduler, not before they were due.
    restart_late = {i: (late[i], due - ready) for i, due in missed.items()}
    assert all(ms >= -EARLY_MS for ms, _ in restart_late.values()), restart_late
    assert all(ms + offset <= BOUND_MS for ms, offset in restart_late.values()), restart_late
    # The far-future one is still there, untouched.
    assert await store_counts(redis, keys) == (1, 0, 1)
    assert await redis.zscore(keys.schedules_due, far.schedule_id) == start + 3_600_000


async def test_cancelled_before_due_is_never_sent(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    # ``--update-interval 1``: the taskiq tick already holds the one-offs due within 2 s
    # when they are cancelled, so its ``pre_send`` must refuse them too.
    async with scheduler(settings, "--update-interval", "1"):
        start = now_ms()
        cancelled = spread(f"{tag}x", 20, start + 1_600, start + 2_000)
        kept = spread(f"{tag}k", 20, start + 1_610, start + 2_010)
        last = {f"{tag}last": start + 2_200}  # after every cancelled one: the sync point
        await add_all(source, {**cancelled, **kept, **last})
        await asyncio.sleep(max(0, start + 1_100 - now_ms()) / 1000)  # a tick refresh or two
        for schedule_id in cancelled:
            await source.delete_schedule(schedule_id)
        assert now_ms() < start + 1_500, "too slow to cancel before due"
        expected = {**kept, **last}
        await stream.wait_for(set(expected), tag, timeout=2.2 + BOUND_MS / 1000 + 5)
        # A sent one-off is forgotten right after its kick, while the schedulers run.
        await wait_for(lambda: _store_empty(redis, keys), 30, "sent one-offs forgotten")
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
    assert not [k for k in sent if k.schedule_id in cancelled], "a cancelled one-off was sent"
    assert_once_each(sent, expected)
    assert_on_time(lateness(sent, expected))
    assert await store_counts(redis, keys) == (0, 0, 0)


async def test_a_failed_send_does_not_stop_the_dispatcher(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    # One send fails (the stream key holds a string, so XADD answers WRONGTYPE: a Redis
    # error, as in an outage). The dispatcher must go on sending the next one-offs on
    # time; the failed one stays claimed, and its lease gives it back for a later send.
    async def wrongtype_errors() -> int:
        stats = await redis.info("errorstats")
        return int(stats.get("errorstat_WRONGTYPE", {}).get("count", 0))

    async def send_failed() -> bool:
        claimed = await redis.zscore(keys.schedules_claimed, failing) is not None
        return claimed and await wrongtype_errors() > errors_before

    failing = f"{tag}fails"
    async with scheduler(settings):
        # The first tick sends the every-minute sweep: let that through before the stream
        # breaks, so that the failed XADD is the dispatcher's.
        await wait_for(lambda: stream.kicks("sweep-expired"), 5, "the first sweep")
        await redis.delete(keys.queue)
        await redis.set(keys.queue, "not a stream")
        errors_before = await wrongtype_errors()
        await source.add_schedule(one_off(failing, now_ms() + 200))
        await wait_for(send_failed, 5, "the send to fail")
        # The XADD follows the claim at once; this margin only makes sure it has been made.
        await asyncio.sleep(0.2)
        await redis.delete(keys.queue)  # XADD works again (and recreates the stream)
        start = now_ms()
        due = spread(f"{tag}ok", 5, start + 300, start + 600)
        await add_all(source, due)
        await stream.wait_for(set(due), f"{tag}ok", timeout=0.6 + BOUND_MS / 1000 + 2)
        await asyncio.sleep(QUIET_S)
        sent = await stream.kicks(tag)
        lease = await redis.zscore(keys.schedules_claimed, failing)
    assert_once_each(sent, due)
    assert_on_time(lateness(sent, due))
    assert lease is not None, "the one-off whose send failed was dropped"
    assert lease <= now_ms() + 30_000


async def test_interval_runs_fire_once_per_slot_with_two_schedulers(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    stream: Stream,
    tag: str,
) -> None:
    def every(seconds: int) -> ScheduledTask:
        return ScheduledTask(
            task_name=TASK,
            labels={},
            args=[],
            kwargs={},
            schedule_id=f"{tag}every{seconds}",
            interval=seconds,
        )

    jobs = [every(1), every(2)]
    started: list[tuple[asyncio.Task[None], TaskiqScheduler]] = []

    async def start_one() -> None:
        broker = build_broker(settings)
        store = RedisScheduleSource(open_redis(settings), keys, broker, jobs, dispatch=True)
        taskiq_scheduler = TaskiqScheduler(broker, sources=[store])
        task = asyncio.create_task(run_scheduler_task(taskiq_scheduler, run_startup=True))
        started.append((task, taskiq_scheduler))

    try:
        await start_one()
        await asyncio.sleep(0.5)  # the two start at different moments, tick at the same ones
        await start_one()
        first = await wait_for(lambda: stream.kicks(tag), 5, "the first interval run")
        until = first[0].at_ms + 4_200
        await asyncio.sleep(max(0, until - now_ms()) / 1000)
    finally:
        for task, taskiq_scheduler in started:
            await stop_task(task)
            for store in taskiq_scheduler.sources:
                await store.shutdown()
            await taskiq_scheduler.shutdown()
    sent = await stream.kicks(tag)
    for job in jobs:
        assert isinstance(job.interval, int)
        ms = job.interval * 1000
        runs = [k.at_ms for k in sent if k.schedule_id == job.schedule_id]
        slots = Counter(at // ms for at in runs)
        assert set(slots.values()) == {1}, f"{job.schedule_id}: runs per slot {slots}"
        # No slot skipped between the first and the last run, and the run lasted > 4 s.
        assert sorted(slots) == list(range(min(slots), max(slots) + 1)), sorted(slots)
        assert len(slots) >= 4 // job.interval, sorted(slots)
        fired = await redis.keys(keys.schedule_fired(job.schedule_id, 0)[:-1] + "*")
        assert len(fired) == len(runs), "each claimed slot is sent exactly once"


async def test_get_schedules_reads_only_periodic_and_soon_due_ones(
    settings: Settings,
    source: RedisScheduleSource,
    redis: Redis,
    keys: Keys,
    tag: str,
) -> None:
    # 10,000 unrelated keys (some under the schedule keys' own prefix) and 10,000 one-offs
    # due in a day or more: none of them may be read, and nothing is scanned.
    far_from = now_ms() + 86_400_000
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(10_000):
            pipe.set(f"{settings.redis_prefix}:sched:unrelated:{i}", "x")
        for i in range(10_000):
            far = one_off(f"{tag}far{i:05d}", far_from + i * 1_000)
            pipe.hset(keys.schedules, far.schedule_id, far.model_dump_json())
            pipe.zadd(keys.schedules_due, {far.schedule_id: far_from + i * 1_000})
        await pipe.execute()
    start = now_ms()
    soon = {
        **spread(f"{tag}overdue", 3, start - 60_000, start - 1_000),
        **spread(f"{tag}soon", 4, start + 200, start + 1_500),
    }
    await add_all(source, soon)
    dynamic = ScheduledTask(
        task_name=TASK, labels={}, args=[], kwargs={}, schedule_id=f"{tag}poll", interval=30
    )
    await source.add_schedule(dynamic)
    await source.add_schedule(one_off(f"{tag}later", start + 60_000))  # beyond the lookahead

    def scans(stats: dict[str, dict[str, int]]) -> int:
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("scan", "keys"))

    scans_before = scans(await redis.info("commandstats"))
    found = await source.get_schedules()
    scans_after = scans(await redis.info("commandstats"))

    expected = {job.schedule_id for job in periodic_jobs()} | set(soon) | {dynamic.schedule_id}
    assert len(found) == len(expected)
    assert {s.schedule_id for s in found} == expected
    assert scans_after == scans_before, "get_schedules scanned the keyspace"
