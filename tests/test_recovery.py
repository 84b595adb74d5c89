"""A worker killed mid-send: its work is finished by another worker, once, without new traffic."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from config.settings import Settings
from tests.conftest import (
    RecordingHandler,
    SmtpSink,
    auth,
    post_event,
    signup_event,
    wait_for,
)
from tests.processes import running
from verification.keys import Keys
from webhooks import keys as app_keys
from webhooks.app import create_app


class GatedHandler(RecordingHandler):
    """Holds every RCPT until the gate opens: the worker is mid-send, nothing delivered yet."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> Any:
        self.waiting += 1
        await self.gate.wait()
        return await super().handle_RCPT(server, session, envelope, address, options)


async def test_sigkilled_worker_tasks_finish_once_without_new_traffic(
    client: TestClient, smtp: SmtpSink, settings: Settings
) -> None:
    # Defaults on purpose: the recovery bound must hold out of the box.
    assert settings.queue.lease_seconds == 15 and settings.queue.heartbeat_seconds == 5
    gated = GatedHandler()
    smtp.handler = gated
    await smtp.stop()
    await smtp.start()

    addresses = [f"person{i}@example.com" for i in range(6)]
    async with running("tidings", "worker", "--workers", "1", settings=settings) as victim:
        for address in addresses:
            response = await post_event(client, signup_event(email=address, user_id=address))
            assert response.status == 202
        await wait_for(lambda: gated.waiting >= 1, timeout=30, what="a send in flight")
        os.killpg(victim.pid, signal.SIGKILL)
        await victim.wait()
    killed_at = time.monotonic()
    gated.gate.set()  # the SMTP server is fine again; only the worker died

    # No new signup from here on: recovery must not depend on traffic.
    async with running("tidings", "worker", "--workers", "1", settings=settings):
        await smtp.wait_for_messages(len(addresses), timeout=45)
        recovered_after = time.monotonic() - killed_at
        # Give a duplicate every chance to show up: wait for the queue to be fully drained.
        await wait_for(
            lambda: _all_sent(client, settings), timeout=30, what="every delivery recorded"
        )

    received = Counter(str(m["To"]) for m in smtp.messages)
    assert received == Counter(addresses), received
    assert recovered_after <= 30, f"recovered after {recovered_after:.1f}s"


async def _all_sent(client: TestClient, settings: Settings) -> bool:
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    try:
        prefix = settings.redis_prefix
        due = await redis.zcard(f"{prefix}:deliveries:due")
        pending = await redis.xlen(f"{prefix}:queue")
        return due == 0 and pending == 0
    finally:
        await redis.aclose()


class SlowDataHandler(RecordingHandler):
    """An SMTP server that takes longer than a lease to accept each message."""

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(3)  # the server being slow, not the test waiting
        return await super().handle_DATA(server, session, envelope)


async def test_slow_send_is_not_stolen_from_a_live_worker(
    client: TestClient, smtp: SmtpSink, make_settings: Any
) -> None:
    # Each send takes 3 s, three times the lease and the heartbeat's dead-after time:
    # renewals and heartbeats keep the other worker from sending the same email.
    settings = make_settings(queue={"lease_seconds": 1, "heartbeat_seconds": 0.3})
    smtp.handler = SlowDataHandler()
    await smtp.stop()
    await smtp.start()
    addresses = [f"slow{i}@example.com" for i in range(3)]
    async with (
        running("tidings", "worker", "--workers", "1", settings=settings),
        running("tidings", "worker", "--workers", "1", settings=settings),
    ):
        for address in addresses:
            response = await post_event(client, signup_event(email=address, user_id=address))
            assert response.status == 202
        await smtp.wait_for_messages(len(addresses), timeout=30)
        await wait_for(lambda: _all_sent(client, settings), timeout=30, what="queue drained")
    assert Counter(str(m["To"]) for m in smtp.messages) == Counter(addresses)


async def test_a_signup_whose_task_message_was_lost_is_still_sent_once(
    aiohttp_client: Any,
    make_settings: Any,
    start_worker: Any,
    smtp: SmtpSink,
) -> None:
    # The task message is gone before any worker read it (a trimmed or lost stream): the
    # delivery's watchdog timer puts it back in the queue after requeue_after_seconds.
    settings = make_settings(queue={"requeue_after_seconds": 1})
    client: TestClient = await aiohttp_client(create_app(settings))
    response = await post_event(client, signup_event())
    assert response.status == 202
    redis = client.app[app_keys.REDIS]
    assert await redis.delete(Keys(settings.redis_prefix).queue) == 1

    await start_worker(settings)
    [message] = await smtp.wait_for_messages(1)
    assert message["To"] == "alice@example.com"

    async def sent() -> bool:
        vid = (await response.json())["id"]
        resource = await (await client.get(f"/v1/verifications/{vid}", headers=auth())).json()
        return bool(resource["deliveries"][0]["status"] == "sent")

    await wait_for(sent, what="the delivery to be recorded as sent")
    assert len(smtp.messages) == 1
