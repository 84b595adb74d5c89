"""Tidings on Redis Sentinel: real sentinels, a real replica, real failovers."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.broadcasts import BroadcastStore
from bot.reminders import Reminders
from config.settings import Settings
from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_event,
    post_until_accepted,
    signup_event,
    wait_for,
)
from tests.topologies import SentinelGroup, start_sentinel_group
from verification.connections import NotDurable, open_redis
from verification.durability import Durability
from verification.keys import Layout
from webhooks.app import create_app

pytestmark = pytest.mark.topology


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """One master, one replica, three sentinels for this module."""
    started = start_sentinel_group(replicas=1)
    yield started
    started.stop()


@pytest.fixture
def sentinel_settings(make_settings: Callable[..., Settings], group: SentinelGroup) -> Settings:
    group.wait_settled()
    return make_settings(redis_url=group.url)


async def test_signup_is_delivered_and_checked_on_sentinel(
    aiohttp_client: Any,
    sentinel_settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    assert sentinel_settings.durable_replicas == 1  # on by default with replicas
    client = await aiohttp_client(create_app(sentinel_settings))
    await start_worker(sentinel_settings)
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()

    accepted = await post_until_accepted(client, signup_event(), "msg_first", [])
    [message] = await smtp.wait_for_messages(1)
    check = await client.post(
        f"/v1/verifications/{accepted['id']}/check",
        json={"code": code_from(message)},
        headers=auth(),
    )
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 5}


async def test_every_role_follows_a_failover(
    aiohttp_client: Any,
    sentinel_settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    group: SentinelGroup,
) -> None:
    client = await aiohttp_client(create_app(sentinel_settings))
    await start_worker(sentinel_settings)
    statuses: list[int] = []
    before = await post_until_accepted(
        client, signup_event(user_id="before", email="before@example.com"), "msg_before", statuses
    )
    await smtp.wait_for_messages(1)

    old, new = await asyncio.to_thread(group.failover)
    assert old != new

    # Sites keep posting through the failover: at most 503s, then 202s on the new master.
    after = [
        await post_until_accepted(
            client,
            signup_event(user_id=f"after-{n}", email=f"after{n}@example.com"),
            f"msg_after_{n}",
            statuses,
        )
        for n in range(3)
    ]
    assert set(statuses) <= {202, 503}, statuses
    # The worker found the new master by itself: every accepted signup is emailed.
    messages = await smtp.wait_for_messages(4, timeout=30)
    assert sorted(str(m["To"]) for m in messages) == sorted(
        ["before@example.com", *(f"after{n}@example.com" for n in range(3))]
    )
    # Nothing accepted before the failover was lost (it had reached the replica).
    assert (await get_verification(client, before["id"]))["status"] == "pending"
    for accepted in after:
        assert (await get_verification(client, accepted["id"]))["status"] == "pending"
    ready = await client.get("/readyz")
    assert ready.status == 200


async def test_a_replica_is_not_ready_and_refuses_writes_with_503(
    aiohttp_client: Any, make_settings: Callable[..., Settings], group: SentinelGroup
) -> None:
    """Pointed straight at a replica (a stale URL), the web says 503, never 500."""
    group.wait_settled()
    replica = group.replicas()[0]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{replica.port}/0")
    client = await aiohttp_client(create_app(settings))
    ready = await client.get("/readyz")
    assert ready.status == 503
    response = await post_event(client, signup_event())
    assert response.status == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0


async def test_a_202_waits_for_the_replica_and_a_retry_finds_what_was_stored(
    aiohttp_client: Any, sentinel_settings: Settings, group: SentinelGroup
) -> None:
    """With the replica stalled, the signup is answered 503 (not promised); the site's
    retry with the same webhook-id, once the replica is back, gets the stored answer."""
    settings = sentinel_settings.model_copy(
        update={"redis": sentinel_settings.redis.model_copy(update={"durable_timeout_ms": 200})}
    )
    client = await aiohttp_client(create_app(settings))
    replica = group.replicas()[0]
    assert replica.process is not None
    msg_id = f"msg_{uuid.uuid4().hex}"
    replica.process.send_signal(signal.SIGSTOP)
    try:
        stalled = await post_event(client, signup_event(user_id="durable"), msg_id=msg_id)
        assert stalled.status == 503, await stalled.text()
        problem = await stalled.json()
        assert problem["title"] == "Service temporarily unavailable"
    finally:
        replica.process.send_signal(signal.SIGCONT)
    retried = await post_until_accepted(client, signup_event(user_id="durable"), msg_id, [])
    again = await post_until_accepted(client, signup_event(user_id="durable"), msg_id, [])
    assert again["id"] == retried["id"]
    assert retried["user_id"] == "durable"


async def test_a_reminder_set_and_a_broadcast_started_wait_for_the_replica(
    sentinel_settings: Settings, group: SentinelGroup
) -> None:
    """What the bot confirms to a person or an admin is on the replica first."""
    settings = sentinel_settings.model_copy(
        update={"redis": sentinel_settings.redis.model_copy(update={"durable_timeout_ms": 200})}
    )
    redis = open_redis(settings)
    keys = Layout.for_settings(settings).home
    durable = Durability.for_settings(redis, settings)
    reminders = Reminders(redis, keys, durable)
    broadcasts = BroadcastStore(redis, keys, durable)
    at = datetime.now(UTC) + timedelta(hours=1)
    try:
        assert await reminders.create(77, at, "water the plants", "en")
        draft = await broadcasts.draft(1, text="Hello")
        replica = group.replicas()[0]
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotDurable):
                await reminders.create(77, at, "call mum", "en")
            with pytest.raises(NotDurable):
                await broadcasts.start(draft)
        finally:
            replica.process.send_signal(signal.SIGCONT)
    finally:
        await redis.aclose()


async def test_with_two_replicas_writes_wait_for_both_and_resume_without_the_old_master(
    make_settings: Callable[..., Settings],
) -> None:
    """Durable writes wait for every replica following the master, so a stalled one
    refuses them (503) until Sentinel marks it down; after a failover they go on with the
    one replica that follows the new master, before the demoted master has rejoined."""
    group = await asyncio.to_thread(start_sentinel_group, 2)
    redis = None
    try:
        settings = make_settings(redis_url=group.url)
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"durable_timeout_ms": 200})}
        )
        assert settings.durable_replicas == 1  # the minimum; every follower is waited for
        redis = open_redis(settings)
        keys = Layout.for_settings(settings).home
        durable = Durability.for_settings(redis, settings)
        await durable.barrier(keys)

        stalled = group.replicas()[0]
        assert stalled.process is not None
        stalled.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotDurable, match="1 of 2 replica"):
                await durable.barrier(keys)

            async def accepted() -> bool:
                try:
                    await durable.barrier(keys)
                except NotDurable:
                    return False
                return True

            # Sentinel marks it down (down-after 1 s), and writes go on with the other one.
            await wait_for(accepted, timeout=30, what="the stalled replica to be left out")
        finally:
            stalled.process.send_signal(signal.SIGCONT)
        await asyncio.to_thread(group.wait_settled)

        old, new = await asyncio.to_thread(group.failover)
        await wait_for(accepted, timeout=30, what="durable writes on the new master")
        master = next(n for n in group.data if n.port == new)
        assert master.client().get(keys.readiness) == "1"
        [follower] = [n for n in group.data if n.port not in (old, new)]
        assert follower.client().info("replication")["master_port"] == new
    finally:
        if redis is not None:
            await redis.aclose()
        await asyncio.to_thread(group.stop)
