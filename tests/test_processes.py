"""The production roles as real processes: `tidings worker`, plain `taskiq worker`, scheduler."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import SmtpSink, code_from, post_event, signup_event, wait_for
from tests.processes import running
from tidings.embedded_redis import free_port, redis_server_binary
from webhooks.app import create_app


@pytest.mark.parametrize(
    "argv",
    [
        ("tidings", "worker", "--workers", "1"),
        ("taskiq", "worker", "tasks.worker:create_broker", "--workers", "1"),
    ],
    ids=["tidings-worker", "taskiq-worker"],
)
async def test_worker_process_delivers(
    argv: tuple[str, ...], client: TestClient, smtp: SmtpSink, settings: Settings
) -> None:
    async with running(*argv, settings=settings) as process:
        response = await post_event(client, signup_event())
        assert response.status == 202
        [message] = await smtp.wait_for_messages(1, timeout=30)
        code = code_from(message)
        vid = (await response.json())["id"]
        check = await client.post(
            f"/v1/verifications/{vid}/check",
            json={"code": code},
            headers={"Authorization": f"Bearer {settings.sites[0].api_keys[0].get_secret_value()}"},
        )
        assert (await check.json())["status"] == "approved"
    assert process.returncode == 0
    assert process.stderr is not None
    logs = (await process.stderr.read()).decode()
    assert code not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    sent = [line for line in lines if line.get("msg") == "delivery sent"]
    assert sent and sent[0]["task_id"]
    assert "alice@example.com" not in logs


async def test_scheduler_process_runs_periodic_sweep(settings: Settings, smtp: SmtpSink) -> None:
    # The sweep runs every minute on cron; `--skip-first-run` is not used, so the first
    # tick sends it immediately: a pending verification past expiry becomes expired.
    redis = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    prefix = settings.redis_prefix
    await redis.hset(
        f"{prefix}:v:ver_x", mapping={"site": "shop", "status": "pending", "expires_at": 1}
    )
    await redis.zadd(f"{prefix}:v:expiring", {"ver_x": 1})
    try:
        async with (
            running("tidings", "worker", "--workers", "1", settings=settings),
            running("tidings", "scheduler", settings=settings),
        ):
            await wait_for(
                lambda: _status_is(redis, f"{prefix}:v:ver_x", "expired"),
                timeout=30,
                what="the scheduler's sweep",
            )
    finally:
        await redis.aclose()


async def _status_is(redis: Redis, key: str, status: str) -> bool:
    return bool(await redis.hget(key, "status") == status)


async def test_scheduler_stops_cleanly_on_sigterm(settings: Settings) -> None:
    """``docker stop`` sends SIGTERM: the scheduler shuts its sources down and exits 0."""
    async with running("tidings", "scheduler", settings=settings) as process:
        assert process.stderr is not None
        started = await asyncio.wait_for(process.stderr.readuntil(b"Startup completed."), 30)
        assert started
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 20)
        assert await process.wait() == 0
        assert b"Scheduler shut down" in rest, rest.decode()[-500:]


async def _lines_until(process: asyncio.subprocess.Process, needle: str, seen: list[str]) -> None:
    """Read the process's stderr into ``seen`` until a line contains ``needle``."""
    assert process.stderr is not None
    while True:
        line = (await process.stderr.readline()).decode()
        assert line, f"the process ended before saying {needle!r}: {seen[-5:]}"
        seen.append(line)
        if needle in line:
            return


async def test_roles_wait_for_redis_instead_of_crash_looping(
    aiohttp_client: Any, make_settings: Callable[..., Settings], smtp: SmtpSink
) -> None:
    """Redis is not there at start-up: worker and scheduler stay up, say so once, and get
    to work when it comes; the web answers 503 meanwhile, never 500."""
    port = free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    client = await aiohttp_client(create_app(settings))
    worker_lines: list[str] = []
    scheduler_lines: list[str] = []
    async with (
        running("tidings", "worker", "--workers", "1", settings=settings) as worker,
        running("tidings", "scheduler", settings=settings) as scheduler,
    ):
        await asyncio.wait_for(_lines_until(worker, "Redis is not available", worker_lines), 60)
        await asyncio.wait_for(
            _lines_until(scheduler, "Redis is not available", scheduler_lines), 60
        )
        assert (await client.get("/readyz")).status == 503
        refused = await post_event(client, signup_event())
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) > 0

        folder = tempfile.mkdtemp(prefix="tidings-late-redis-")
        redis_server = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(
                _lines_until(worker, "Redis is available again", worker_lines), 60
            )

            async def ready() -> bool:
                return (await client.get("/readyz")).status == 200

            await wait_for(ready, 30, "the web to be ready")
            accepted = await post_event(client, signup_event())
            assert accepted.status == 202
            await smtp.wait_for_messages(1, timeout=30)
            assert worker.returncode is None and scheduler.returncode is None
        finally:
            redis_server.terminate()
            redis_server.wait(10)
    # One line when waiting starts (not one per attempt), and no traceback.
    assert sum("Redis is not available" in line for line in worker_lines) == 1
    assert not any("Traceback" in line for line in worker_lines + scheduler_lines)
