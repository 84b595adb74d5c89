"""The admins' daily report and the hourly cleanup, against real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import SmtpSink, auth, code_from, signup, wait_for
from verification.cleanup import clean_up
from verification.connections import open_redis
from verification.keys import Keys
from verification.models import now_ms
from verification.reports import DAY_MS, day_report


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(settings)
    yield client
    await client.aclose()


async def test_the_day_report_counts_by_status_and_channel(
    client: TestClient, smtp: SmtpSink, settings: Settings, redis: Redis, worker: None
) -> None:
    approved = await signup(client, email="yes@example.com", user_id="yes")
    await signup(client, email="later@example.com", user_id="later")
    canceled = await signup(client, email="no@example.com", user_id="no")
    await client.post(f"/v1/verifications/{canceled['id']}/cancel", headers=auth())

    def mine_sent() -> list[object]:
        return [m for m in smtp.messages if "yes@example.com" in str(m["To"])]

    await wait_for(mine_sent, 10, "the email to yes@example.com")
    [mine] = [m for m in smtp.messages if "yes@example.com" in str(m["To"])]
    await client.post(
        f"/v1/verifications/{approved['id']}/check", json={"code": code_from(mine)}, headers=auth()
    )
    await redis.zadd(Keys(settings.redis_prefix).subscribers, {"42": now_ms()})

    lines = await day_report(redis, Keys(settings.redis_prefix), now_ms() // DAY_MS)
    assert lines[0].startswith("Report for ")
    assert "Verifications created: 3 (email 3)" in lines
    assert "Verifications approved: 1 (email 1)" in lines
    assert "Verifications canceled: 1 (email 1)" in lines
    assert "Delivery failures: none" in lines
    assert "New subscribers: Telegram 1, email 0" in lines


async def test_cleanup_drops_index_entries_whose_records_expired(
    settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.redis_prefix)
    await redis.rpush(keys.dead_letters, "dlv_gone", "dlv_kept")
    await redis.hset(keys.delivery("dlv_kept"), mapping={"status": "failed"})
    removed = await clean_up(redis, keys)
    assert removed["dead_letters"] == 1
    assert await redis.lrange(keys.dead_letters, 0, -1) == ["dlv_kept"]
