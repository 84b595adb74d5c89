"""Faults with real processes, a real Redis and a real SMTP server.

Two workers sharing a slow backlog, a Redis outage under intake load, and SIGTERM on idle
and busy workers. Every check waits for a condition with a deadline; the only sleep holds
the Redis outage open for its planned length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import RecordingHandler, SmtpSink, auth, post_event, signup_event, wait_for
from tests.processes import running
from tidings.embedded_redis import EmbeddedRedis
from verification.keys import Keys, Layout
from webhooks.app import create_app

# ---------------------------------------------------------------- helpers


class SlowHandler(RecordingHandler):
    """An SMTP server that takes ``delay`` seconds to accept each message."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0
        self.peers: set[Any] = set()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.in_flight += 1
        self.peers.add(session.peer)
        try:
            await asyncio.sleep(self.delay)  # the server is slow, not the test
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.in_flight -= 1


class Logs:
    """Collects a child process's JSON log lines from its stderr while it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        self.entries: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            text = raw.decode(errors="replace").rstrip()
            try:
                entry = json.loads(text) if text.startswith("{") else {"msg": text}
            except ValueError:
                entry = {"msg": text}
            self.entries.append(entry if isinstance(entry, dict) else {"msg": text})

    def with_msg(self, msg: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry.get("msg") == msg]

    def tail(self, n: int = 30) -> str:
        return "\n".join(json.dumps(entry) for entry in self.entries[-n:])

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._task, 5)
        self._task.cancel()


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, *argv: str, workers: int = 1
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Logs]]:
    """``tidings worker --workers N`` with its logs read; yields once every child is ready."""
    async with running(
        "tidings", "worker", "--workers", str(workers), *argv, settings=settings
    ) as process:
        logs = Logs(process)
        try:
            await wait_for(
                lambda: len(logs.with_msg("worker ready")) >= workers,
                timeout=60,
                what=f"{workers} worker process(es) to be ready",
            )
            yield process, logs
        finally:
            # Give the process its normal stop before reading the rest of its output.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 20)
            await logs.close()


def group_alive(pgid: int) -> list[int]:
    """Pids of processes (not zombies) still in process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


async def sigterm_parent_and_wait(
    process: asyncio.subprocess.Process, limit: float
) -> tuple[float, int | None]:
    """SIGTERM only the parent (as a container runtime does); time until it has exited."""
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), limit)
    return time.monotonic() - started, process.returncode


def recipients(sink: SmtpSink) -> Counter[str]:
    return Counter(parseaddr(str(message["To"]))[1] for message in sink.messages)


async def signup(client: TestClient, n: int, tag: str) -> tuple[int, str, dict[str, Any]]:
    """Post one signup for a distinct address; returns (status, address, body)."""
    address = f"{tag}-{n}@example.com"
    response = await post_event(client, signup_event(user_id=f"{tag}-{n}", email=address))
    body = await response.json(content_type=None)
    return response.status, address, body


async def deliveries(client: TestClient, vid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/verifications/{vid}", headers=auth())
    assert response.status == 200, await response.text()
    return list((await response.json())["deliveries"])


async def unsent(client: TestClient, vids: list[str]) -> list[dict[str, Any]]:
    """Deliveries of these verifications that are not ``sent`` yet."""
    return [d for vid in vids for d in await deliveries(client, vid) if d["status"] != "sent"]


async def queue_state(redis: Redis, settings: Settings, delivery_ids: list[str]) -> str:
    """What the queue holds for these deliveries: due-set timing, stream and pending entries."""
    keys = Keys(settings.redis_prefix)
    now = time.time()
    due = {d: await redis.zscore(keys.due, d) for d in delivery_ids}
    due_in = {d: None if at is None else round(at / 1000 - now, 1) for d, at in due.items()}
    group = f"{settings.redis_prefix}:workers"
    pending = await redis.xpending(keys.queue, group)
    return (
        f"due in seconds: {due_in}; stream length {await redis.xlen(keys.queue)}; "
        f"pending {pending['pending']} {pending['consumers']}"
    )


async def wait_all_sent(
    client: TestClient,
    vids: list[str],
    timeout: float,
    logs: Logs,
    redis: Redis,
    settings: Settings,
) -> None:
    """Wait until every delivery of ``vids`` is sent; on timeout say which and why."""

    async def done() -> bool:
        return not await unsent(client, vids)

    try:
        await wait_for(done, timeout=timeout, what=f"all {len(vids)} deliveries sent")
    except AssertionError as exc:
        left = await unsent(client, vids)
        state = await queue_state(redis, settings, [d["id"] for d in left])
        raise AssertionError(
            f"{exc}; not sent: {left}; {state}; worker logs:\n{logs.tail()}"
        ) from None


async def wait_drained(redis: Redis, settings: Settings, logs: Logs, timeout: float = 10) -> None:
    """Wait until nothing is left that could still send: no stream entry, nothing due."""
    keys = Keys(settings.redis_prefix)

    async def drained() -> bool:
        return await redis.xlen(keys.queue) == 0 and await redis.zcard(keys.due) == 0

    try:
        await wait_for(drained, timeout=timeout, what="the queue to drain")
    except AssertionError as exc:
        due = [str(d) for d in await redis.zrange(keys.due, 0, -1)]
        state = await queue_state(redis, settings, due)
        entries = await redis.xrange(keys.queue)
        raise AssertionError(
            f"{exc}: {state}; stream entries {entries}; worker logs:\n{logs.tail()}"
        ) from None


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


@pytest.fixture
async def redis_of() -> AsyncIterator[Callable[[Settings], Redis]]:
    opened: list[Redis] = []

    def open_(settings: Settings) -> Redis:
        redis = Redis.from_url(settings.require_redis_url(), decode_responses=True)
        opened.append(redis)
        return redis

    yield open_
    for redis in opened:
        await redis.aclose()


# ---------------------------------------------------------------- 1. two workers, slow backlog


async def test_two_workers_share_a_slow_backlog_exactly_once(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    redis_of: Callable[[Settings], Redis],
) -> None:
    smtp.handler = handler = SlowHandler(delay=0.3)
    redis = redis_of(settings)
    count = 40
    async with (
        worker_process(settings) as (_, logs_a),
        worker_process(settings) as (_, logs_b),
    ):
        # Both are reading the stream (a consumer appears with its first read), so the
        # backlog can be shared however slowly either process started.
        queue = Layout.for_settings(settings).home.queue
        group = f"{settings.redis_prefix}:workers"

        async def both_reading() -> bool:
            return len(await redis.xinfo_consumers(queue, group)) >= 2

        await wait_for(both_reading, 60, "both workers to read the stream")
        gate = asyncio.Semaphore(10)

        async def one(n: int) -> tuple[int, str, dict[str, Any]]:
            async with gate:
                return await signup(client, n, "backlog")

        results = await asyncio.gather(*(one(n) for n in range(count)))
        assert [status for status, _, _ in results] == [202] * count
        vids = [body["id"] for _, _, body in results]
        addresses = {address for _, address, _ in results}

        await wait_all_sent(client, vids, 40, logs_a, redis, settings)
        await wait_drained(redis, settings, logs_a)

        for vid in vids:
            [delivery] = await deliveries(client, vid)
            assert (delivery["status"], delivery["attempts"]) == ("sent", 1), delivery
        got = recipients(smtp)
        assert set(got) == addresses, "lost or unexpected emails"
        assert [a for a, n in got.items() if n > 1] == [], "duplicate emails"
        assert len(smtp.messages) == count

        sent_a = logs_a.with_msg("delivery sent")
        sent_b = logs_b.with_msg("delivery sent")
        assert all(entry.get("task_id") for entry in sent_a + sent_b)
        assert len(sent_a) + len(sent_b) == count
        assert sent_a and sent_b, (
            f"one worker did all the work: {len(sent_a)} vs {len(sent_b)} "
            f"({len(handler.peers)} SMTP connections)"
        )


# ---------------------------------------------------------------- 2. Redis outage under load


async def test_redis_outage_under_intake_load(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    smtp: SmtpSink,
    redis_of: Callable[[Settings], Redis],
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    await server.start()
    try:
        settings = make_settings(redis_url=server.url)
        client = await aiohttp_client(create_app(settings))
        redis = redis_of(settings)
        async with worker_process(settings) as (_, logs):
            phase = "before"
            results: list[dict[str, Any]] = []
            errors: list[str] = []
            stop = asyncio.Event()

            async def load() -> None:
                n = 0
                while not stop.is_set() and n < 600:
                    started = time.monotonic()
                    started_in = phase
                    address = f"load-{n}@example.com"
                    event = signup_event(user_id=f"load-{n}", email=address)
                    try:
                        async with asyncio.timeout(15):
                            response = await post_event(client, event)
                            body = await response.json(content_type=None)
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        errors.append(f"{phase} #{n}: {type(exc).__name__}: {exc}")
                    else:
                        results.append(
                            {
                                "n": n,
                                "phase": phase,
                                "started_in": started_in,
                                "status": response.status,
                                "retry_after": response.headers.get("Retry-After"),
                                "address": address,
                                "id": body.get("id") if isinstance(body, dict) else None,
                                "seconds": time.monotonic() - started,
                            }
                        )
                    n += 1
                    await asyncio.sleep(0.02)  # pacing of the load, not a wait for anything

            def accepted(which: str) -> list[dict[str, Any]]:
                return [r for r in results if r["phase"] == which and r["status"] == 202]

            loader = asyncio.create_task(load())
            try:
                await wait_for(lambda: len(accepted("before")) >= 10, 15, "signups before")
                phase = "outage"
                await server.stop()
                # Hold the outage open for its planned length: longer than the web's
                # retry budget for a dead connection (~1.5 s), so it must answer 503.
                await asyncio.sleep(4.0)
                phase = "restarting"
                await server.start()
                phase = "after"

                async def ready() -> bool:
                    return (await client.get("/readyz")).status == 200

                await wait_for(ready, timeout=15, what="/readyz 200 after Redis returned")
                await wait_for(lambda: len(accepted("after")) >= 10, 15, "signups after")
            finally:
                stop.set()
                await asyncio.wait_for(loader, 30)

            statuses = Counter((r["phase"], r["status"]) for r in results)
            assert errors == [], errors
            bad = [r for r in results if r["status"] not in (202, 503)]
            assert bad == [], f"only 202 or 503 may be answered: {bad[:5]} ({statuses})"
            unavailable = [r for r in results if r["status"] == 503]
            assert all(r["retry_after"] and int(r["retry_after"]) > 0 for r in unavailable)
            assert all(r["phase"] != "before" for r in unavailable), statuses
            assert any(r["started_in"] == "outage" for r in results), (
                "no request was made while Redis was down"
            )
            assert unavailable, f"Redis was down for 4 s and nobody got a 503: {statuses}"

            ok = [r for r in results if r["status"] == 202]
            vids = [r["id"] for r in ok]

            await wait_all_sent(client, vids, 30, logs, redis, settings)
            await wait_drained(redis, settings, logs)

            got = recipients(smtp)
            missing = [r["address"] for r in ok if got[r["address"]] == 0]
            assert missing == [], f"accepted but never emailed: {missing}"
            duplicates = {address: n for address, n in got.items() if n > 1}
            assert duplicates == {}, f"emailed more than once: {duplicates}"
            # A 503 may hide a signup Redis did record (reply lost): at most one email then.
            known = {r["address"] for r in results}
            assert set(got) <= known
            for vid in vids:
                [delivery] = await deliveries(client, vid)
                assert delivery["status"] == "sent", delivery
            # The worker recovered by itself: signups made after the outage were sent by it.
            after = accepted("after")
            assert after and all(got[r["address"]] == 1 for r in after)
            assert logs.with_msg("delivery sent"), logs.tail()
    finally:
        await server.stop()


# ---------------------------------------------------------------- 3. SIGTERM on workers


async def blocked_stream_reads(redis: Redis) -> int:
    """Clients of this Redis blocked in XREADGROUP right now."""
    clients = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))


@pytest.mark.parametrize("target", ["parent", "group"])
async def test_sigterm_stops_an_idle_worker(
    settings: Settings, redis_of: Callable[[Settings], Redis], target: str
) -> None:
    redis = redis_of(settings)
    async with worker_process(settings, workers=2) as (process, logs):
        # Signal while both children sit idle in a blocking stream read (the case that
        # can hang on Python 3.11 + redis-py 8).
        await wait_for(
            lambda: _at_least(blocked_stream_reads(redis), 2),
            timeout=10,
            what="both children blocked in XREADGROUP",
        )
        started = time.monotonic()
        if target == "parent":
            os.kill(process.pid, signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 15)
        took = time.monotonic() - started
        assert process.returncode is not None, (
            f"`tidings worker --workers 2` still running 15 s after SIGTERM ({target}); "
            f"last logs:\n{logs.tail()}"
        )
        assert process.returncode == 0, logs.tail()
        await wait_for(lambda: not group_alive(process.pid), timeout=2, what="no child left behind")
        assert took < 15


async def test_sigterm_on_a_busy_worker_loses_and_duplicates_nothing(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    redis_of: Callable[[Settings], Redis],
) -> None:
    smtp.handler = handler = SlowHandler(delay=2.0)
    redis = redis_of(settings)
    limit = settings.queue.task_timeout_seconds + 10
    async with worker_process(settings) as (first, first_logs):
        results = [await signup(client, n, "busy") for n in range(3)]
        assert [status for status, _, _ in results] == [202] * 3
        vids = [body["id"] for _, _, body in results]
        addresses = {address for _, address, _ in results}
        await wait_for(lambda: handler.in_flight == 3, timeout=15, what="3 sends in flight")

        took, code = await sigterm_parent_and_wait(first, limit)
        assert code is not None, (
            f"busy worker still running {limit:.0f} s after SIGTERM; last logs:\n"
            f"{first_logs.tail()}"
        )
        assert code == 0, first_logs.tail()
        await wait_for(lambda: not group_alive(first.pid), timeout=2, what="no child left")
        finished_by_first = len(first_logs.with_msg("delivery sent"))

    async with worker_process(settings) as (_, second_logs):
        await wait_all_sent(client, vids, 40, second_logs, redis, settings)
        await wait_drained(redis, settings, second_logs)
        finished_by_second = len(second_logs.with_msg("delivery sent"))

    got = recipients(smtp)
    assert set(got) == addresses, f"lost emails: {addresses - set(got)}"
    assert all(n == 1 for n in got.values()), f"duplicates: {got}"
    assert finished_by_first + finished_by_second == 3, (finished_by_first, finished_by_second)
    assert took < limit
