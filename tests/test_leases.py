"""Claims survive a lost reply and a Redis outage: the attempt is neither lost nor doubled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from tasks.delivery import Deliverer
from tasks.email.rendering import EmailRenderer
from tasks.worker import build_email_sender
from tests.conftest import SmtpSink, code_from, get_verification, signup, wait_for
from tidings.embedded_redis import EmbeddedRedis
from verification.connections import open_redis
from verification.deliveries import Claim, DeliveryStore, NotClaimed
from verification.keys import Keys
from webhooks.app import create_app


def store_for(settings: Settings) -> tuple[Redis, DeliveryStore]:
    redis = open_redis(settings)
    keys = Keys(settings.redis_prefix)
    return redis, DeliveryStore(redis, keys, settings.require_secret_key())


async def test_a_claim_is_reissued_to_its_own_token_only(
    client: TestClient, settings: Settings
) -> None:
    accepted = await signup(client, email="lease@example.com")
    [delivery] = (await get_verification(client, accepted["id"]))["deliveries"]
    redis, store = store_for(settings)
    try:
        first = await store.claim(delivery["id"], 30_000, "token-a")
        assert isinstance(first, Claim) and first.attempt == 1
        again = await store.claim(delivery["id"], 30_000, "token-a")
        assert isinstance(again, Claim)
        assert (again.attempt, again.code) == (1, first.code)
        other = await store.claim(delivery["id"], 30_000, "token-b")
        assert isinstance(other, NotClaimed) and other.reason == "busy"
    finally:
        await redis.aclose()
    seen = (await get_verification(client, accepted["id"]))["deliveries"][0]
    assert seen["attempts"] == 1


async def test_a_delivery_started_while_redis_is_down_is_sent_when_it_returns(
    aiohttp_client: Callable[..., object],
    make_settings: Callable[..., Settings],
    smtp: SmtpSink,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    await server.start()
    try:
        settings = make_settings(redis_url=server.url)
        client: TestClient = await aiohttp_client(create_app(settings))  # type: ignore[misc]
        accepted = await signup(client, email="outage@example.com")
        [delivery] = (await get_verification(client, accepted["id"]))["deliveries"]
        redis, store = store_for(settings)
        deliverer = Deliverer(
            settings=settings,
            store=store,
            email=build_email_sender(settings, redis),
            renderer=EmailRenderer(settings.email),
            sites={site.id: site for site in settings.sites},
        )
        try:
            await server.stop()
            with caplog.at_level(logging.WARNING, logger="verification.connections"):
                attempt = asyncio.create_task(deliverer.deliver(delivery["id"]))
                await wait_for(
                    lambda: any(r.msg == "Redis unreachable; retrying" for r in caplog.records),
                    timeout=10,
                    what="the claim to meet the outage",
                )
                await server.start()
                assert await asyncio.wait_for(attempt, 30) == "sent"
            [message] = await smtp.wait_for_messages(1)
            assert len(code_from(message)) == 6
            seen = (await get_verification(client, accepted["id"]))["deliveries"][0]
            assert (seen["status"], seen["attempts"]) == ("sent", 1)
        finally:
            await deliverer.email.close()
            await redis.aclose()
    finally:
        await server.stop()
