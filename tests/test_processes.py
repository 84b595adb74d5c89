"""The production roles as real processes: `tidings worker`, plain `taskiq worker`, scheduler."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import SmtpSink, code_from, post_event, signup_event, wait_for
from tests.processes import running


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
