"""``remind_after``: one reminder with a fresh code while the signup is pending, none after."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from email.utils import parseaddr

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import SmtpSink, auth, code_from, signup, wait_for
from verification.connections import open_redis
from verification.keys import Keys


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(settings)
    yield client
    await client.aclose()


async def bring_forward(redis: Redis, settings: Settings, vid: str) -> None:
    """Make the reminder due now instead of in ``remind_after`` (60 s at the least)."""
    keys = Keys(settings.redis_prefix)
    due = await redis.zscore(keys.schedules_due, f"remind_{vid}")
    assert due is not None, "the reminder was not scheduled with the signup"
    await redis.zadd(keys.schedules_due, {f"remind_{vid}": int(time.time() * 1000)})


def mails_to(smtp: SmtpSink, address: str) -> list[str]:
    return [str(m["Subject"]) for m in smtp.messages if parseaddr(str(m["To"]))[1] == address]


async def test_a_pending_signup_gets_one_reminder_with_a_fresh_code(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    accepted = await signup(client, email="later@example.com", remind_after=3600)
    await smtp.wait_for_messages(1)
    first_code = code_from(smtp.messages[0])
    keys = Keys(settings.redis_prefix)
    due = await redis.zscore(keys.schedules_due, f"remind_{accepted['id']}")
    assert due is not None
    assert abs(due / 1000 - (time.time() + 3600)) < 10

    await bring_forward(redis, settings, accepted["id"])
    await wait_for(lambda: len(mails_to(smtp, "later@example.com")) >= 2, 10, "the reminder")
    subjects = mails_to(smtp, "later@example.com")
    assert subjects[1] == "Reminder: confirm your Acme Shop sign-up"
    reminder = next(m for m in smtp.messages if str(m["Subject"]) == subjects[1])
    new_code = code_from(reminder)
    assert "/v/" in reminder.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # The first code stopped working; the reminder's code approves.
    old = await client.post(
        f"/v1/verifications/{accepted['id']}/check", json={"code": first_code}, headers=auth()
    )
    if first_code != new_code:
        assert (await old.json())["valid"] is False
    check = await client.post(
        f"/v1/verifications/{accepted['id']}/check", json={"code": new_code}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"
    assert await redis.zscore(keys.schedules_due, f"remind_{accepted['id']}") is None


async def test_an_approved_signup_gets_no_reminder(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    accepted = await signup(client, email="done@example.com", remind_after=3600)
    [message] = await smtp.wait_for_messages(1)
    check = await client.post(
        f"/v1/verifications/{accepted['id']}/check",
        json={"code": code_from(message)},
        headers=auth(),
    )
    assert (await check.json())["status"] == "approved"

    # Approval removed the reminder's schedule with it.
    keys = Keys(settings.redis_prefix)
    assert await redis.zscore(keys.schedules_due, f"remind_{accepted['id']}") is None
    assert await redis.hget(keys.schedules, f"remind_{accepted['id']}") is None

    # A control signup arrives: the worker has caught up, and sent no reminder.
    await signup(client, email="control@example.com", user_id="control")
    await wait_for(lambda: mails_to(smtp, "control@example.com"), 10, "the control email")
    assert mails_to(smtp, "done@example.com") == ["Your Acme Shop verification code"]


async def test_a_canceled_signup_loses_its_reminder(
    client: TestClient, settings: Settings, redis: Redis
) -> None:
    accepted = await signup(client, email="gone@example.com", remind_after=600)
    keys = Keys(settings.redis_prefix)
    assert await redis.zscore(keys.schedules_due, f"remind_{accepted['id']}") is not None
    response = await client.post(f"/v1/verifications/{accepted['id']}/cancel", headers=auth())
    assert response.status == 200
    assert await redis.zscore(keys.schedules_due, f"remind_{accepted['id']}") is None
