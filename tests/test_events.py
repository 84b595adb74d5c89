"""Outbound events: signed with Standard Webhooks, retried on schedule, stopped by 410."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

from config.settings import Settings
from tasks.worker import build_worker_broker
from tests.conftest import (
    SECRET,
    SmtpSink,
    auth,
    code_from,
    post_event,
    signup_event,
    site,
    wait_for,
)
from tests.emulators.site_callbacks import Receiver
from tidings.devsite import new_webhook_secret
from webhooks.app import create_app


@pytest.fixture
def settings(make_settings: Callable[..., Settings], receiver: Receiver) -> Settings:
    return make_settings(
        sites=[site(callback_url=receiver.url)],
        events={"retry_schedule_seconds": [0.3, 0.3, 0.3]},
    )


@pytest.fixture
async def app_client(
    aiohttp_client: Any, settings: Settings, start_worker: Callable[[Settings], Awaitable[None]]
) -> TestClient:
    await start_worker(settings)
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def _signup_and_code(client: TestClient, smtp: SmtpSink) -> tuple[str, str]:
    response = await post_event(client, signup_event(metadata={"order": 42}))
    assert response.status == 202
    vid = (await response.json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    return vid, code


async def test_approval_event_retried_after_500_then_delivered_once(
    app_client: TestClient, smtp: SmtpSink, receiver: Receiver
) -> None:
    receiver.answers = [500, 200]
    vid, code = await _signup_and_code(app_client, smtp)
    check = await app_client.post(
        f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"

    await wait_for(lambda: len(receiver.calls) >= 2, timeout=15, what="the retried event")
    first, second = receiver.calls[:2]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    event = second["event"]
    assert event["type"] == "verification.approved"
    assert event["data"]["id"] == vid
    assert event["data"]["status"] == "approved"
    assert event["data"]["metadata"] == {"order": 42}
    assert "@" not in event["data"]["destination"][:2]  # masked
    assert code not in str(receiver.calls)
    # Delivered: no further attempts come, however long one waits for the next event.
    cancel_other = await post_event(app_client, signup_event(user_id="u-2", email="b@example.com"))
    other = (await cancel_other.json())["id"]
    await app_client.post(f"/v1/verifications/{other}/cancel", headers=auth())
    await wait_for(lambda: len(receiver.calls) >= 3, timeout=15, what="the next event")
    types = [c["event"]["type"] for c in receiver.calls]
    assert types == ["verification.approved", "verification.approved", "verification.canceled"]

    async def counted() -> bool:
        text = await (await app_client.get("/metrics")).text()
        return 'tidings_events_total{outcome="delivered"} 2.0' in text

    await wait_for(counted, timeout=10, what="both deliveries counted")
    metrics = await (await app_client.get("/metrics")).text()
    assert 'tidings_events_total{outcome="retried"} 1.0' in metrics


async def test_410_stops_for_good(
    app_client: TestClient, smtp: SmtpSink, receiver: Receiver, settings: Settings
) -> None:
    receiver.answers = [410]
    vid, _ = await _signup_and_code(app_client, smtp)
    await app_client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
    redis = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    try:
        event_id = f"evt_{vid.removeprefix('ver_')}"
        key = f"{settings.redis_prefix}:e:{event_id}"
        await wait_for(
            lambda: _field_is(redis, key, "status", "stopped"), timeout=15, what="stopped"
        )
        assert await redis.zscore(f"{settings.redis_prefix}:events:due", event_id) is None
        assert await redis.hget(key, "attempts") == "1"
    finally:
        await redis.aclose()
    assert len(receiver.calls) == 1
    assert receiver.calls[0]["event"]["type"] == "verification.canceled"


async def test_max_attempts_event(
    app_client: TestClient, smtp: SmtpSink, receiver: Receiver
) -> None:
    vid, code = await _signup_and_code(app_client, smtp)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        await app_client.post(
            f"/v1/verifications/{vid}/check", json={"code": wrong}, headers=auth()
        )
    await wait_for(lambda: receiver.calls, timeout=15, what="an event")
    assert receiver.calls[0]["event"]["type"] == "verification.max_attempts_reached"
    assert receiver.calls[0]["event"]["data"]["attempts_left"] == 0


async def test_expiry_event_without_anyone_asking(
    app_client: TestClient, smtp: SmtpSink, receiver: Receiver, settings: Settings
) -> None:
    vid, _ = await _signup_and_code(app_client, smtp)
    redis = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    try:
        # Time passes: the code's expiry is now in the past.
        await redis.hset(f"{settings.redis_prefix}:v:{vid}", "expires_at", 1)
        await redis.zadd(f"{settings.redis_prefix}:v:expiring", {vid: 1})
    finally:
        await redis.aclose()
    # What the scheduler does every minute.
    broker, tasks = build_worker_broker(settings)
    await broker.startup()
    try:
        await tasks.sweep_expired.kiq()
    finally:
        await broker.shutdown()
    await wait_for(lambda: receiver.calls, timeout=15, what="the expiry event")
    assert receiver.calls[0]["event"]["type"] == "verification.expired"
    assert receiver.calls[0]["event"]["data"]["id"] == vid


async def test_failed_delivery_event(
    app_client: TestClient, smtp: SmtpSink, receiver: Receiver
) -> None:
    smtp.handler.refuse_rcpt = "550 5.1.1 No such user"
    response = await post_event(app_client, signup_event())
    vid = (await response.json())["id"]
    await wait_for(lambda: receiver.calls, timeout=15, what="the failure event")
    event = receiver.calls[0]["event"]
    assert event["type"] == "verification.failed"
    assert event["data"]["id"] == vid


async def _field_is(redis: Redis, key: str, field: str, value: str) -> bool:
    return bool(await redis.hget(key, field) == value)


async def test_events_during_key_rotation_verify_with_the_new_secret_alone(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
) -> None:
    new_secret = new_webhook_secret()
    receiver = Receiver(new_secret)  # the site already moved to the new secret
    await receiver.start()
    try:
        settings = make_settings(
            sites=[site(webhook_secrets=[SECRET, new_secret], callback_url=receiver.url)]
        )
        await start_worker(settings)
        client = await aiohttp_client(create_app(settings))
        vid, _ = await _signup_and_code(client, smtp)
        await client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
        await wait_for(lambda: receiver.calls or receiver.rejected, timeout=15, what="an event")
    finally:
        await receiver.stop()
    assert receiver.rejected == 0
    [call] = receiver.calls
    assert call["event"]["type"] == "verification.canceled"
    assert len(call["headers"]["webhook-signature"].split()) == 2
    # A receiver still on the old secret verifies the same request.
    Webhook(SECRET).verify(call["body"], call["headers"])
    SvixWebhook(SECRET).verify(call["body"], call["headers"])
