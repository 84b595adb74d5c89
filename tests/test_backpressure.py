"""A relay slower than the signups: every person gets exactly one email, no phantom attempts.

With a pool of SMTP connections smaller than the burst, most tasks wait for a connection
longer than the task timeout. Waiting is no part of an attempt: a task cut while it waits
has claimed nothing, and one whose message was handed to the relay is never cut.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from config.settings import Settings
from tests.conftest import RecordingHandler, SmtpSink, get_verification, signup, wait_for
from tidings.embedded_redis import free_port
from webhooks.app import create_app

SIGNUPS = int(os.environ.get("TIDINGS_TEST_BURST", "10"))
SECONDS_PER_MESSAGE = 1.2
POOL = 2
# Shorter than the wait at the back of the burst: SIGNUPS / POOL * SECONDS_PER_MESSAGE.
TASK_TIMEOUT = 2.5


class SlowRelay(RecordingHandler):
    """Takes its time before answering 250 to each message, as a loaded relay does."""

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(SECONDS_PER_MESSAGE)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
async def slow_sink() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink(free_port())
    sink.handler = SlowRelay()
    await sink.start()
    yield sink
    await sink.stop()


async def test_a_burst_through_a_slow_relay_sends_each_code_once(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
    slow_sink: SmtpSink,
) -> None:
    settings = make_settings(
        email={"port": slow_sink.port, "pool_size": POOL, "timeout_seconds": 10},
        queue={"task_timeout_seconds": TASK_TIMEOUT, "requeue_after_seconds": 2},
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    await start_worker(settings)

    addresses = [f"p{n}@example.com" for n in range(SIGNUPS)]
    vids = [
        (await signup(client, email=address, user_id=f"u-{n}"))["id"]
        for n, address in enumerate(addresses)
    ]

    async def all_sent() -> list[dict[str, Any]] | None:
        deliveries = [(await get_verification(client, vid))["deliveries"][0] for vid in vids]
        return deliveries if all(d["status"] != "queued" for d in deliveries) else None

    deadline = 3 * SIGNUPS * SECONDS_PER_MESSAGE / POOL + 10
    deliveries = await wait_for(all_sent, deadline, "every delivery to settle")
    assert [d["status"] for d in deliveries] == ["sent"] * SIGNUPS
    # Each attempt counted is one the relay saw: none was used up waiting for a connection.
    assert [d["attempts"] for d in deliveries] == [1] * SIGNUPS
    assert slow_sink.handler.rcpt_attempts == SIGNUPS
    received = Counter(str(m["To"]) for m in slow_sink.messages)
    assert received == Counter(addresses)  # everyone once, nobody twice
