"""Reminder emails carry RFC 8058 one-click unsubscribe; code emails do not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tests.conftest import SmtpSink, signup
from tests.test_signup_reminders import bring_forward
from verification.connections import open_redis


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = open_redis(settings)
    yield client
    await client.aclose()


async def test_the_reminder_email_has_one_click_unsubscribe_and_the_code_email_not(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    accepted = await signup(client, email="later@example.com", remind_after=3600)
    [code_mail] = await smtp.wait_for_messages(1)
    assert "List-Unsubscribe" not in code_mail
    assert "List-Unsubscribe-Post" not in code_mail

    await bring_forward(redis, settings, accepted["id"])
    reminder = (await smtp.wait_for_messages(2))[1]
    assert str(reminder["Subject"]).startswith("Reminder:")
    assert str(reminder["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    url = str(reminder["List-Unsubscribe"])
    assert url.startswith(f"<{settings.public_url}/unsubscribe/") and url.endswith(">")

    # The link is the working one-click endpoint a mail client POSTs to.
    path = url.strip("<>").removeprefix(settings.public_url)
    answer = await client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status == 200
    assert "unsubscribed" in (await answer.text()).lower()
