"""Tidings on a real 3-master Redis Cluster: sharded keys, every flow, a failover mid-flow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from config.settings import Settings
from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_until_accepted,
    signup_event,
)
from tests.topologies import Cluster, start_cluster
from verification.keys import Layout
from webhooks.app import create_app

pytestmark = pytest.mark.topology


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three masters, one replica each, slots split evenly."""
    started = start_cluster()
    yield started
    started.stop()


@pytest.fixture
def cluster_settings(make_settings: Callable[..., Settings], cluster: Cluster) -> Settings:
    cluster.wait_healthy()
    return make_settings(redis_url=cluster.url)


async def test_signups_are_spread_over_every_master_and_delivered(
    aiohttp_client: Any,
    cluster_settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    cluster: Cluster,
) -> None:
    layout = Layout.for_settings(cluster_settings)
    assert layout.count == 12
    client = await aiohttp_client(create_app(cluster_settings))
    await start_worker(cluster_settings)
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    before = cluster.keys_per_master()

    accepted = [
        await post_until_accepted(
            client, signup_event(user_id=f"u{n}", email=f"p{n}@example.com"), f"msg_{n}", []
        )
        for n in range(24)
    ]
    # Each master holds some of them: the verification ids name shards on every master.
    shards = {layout.shard_of(a["id"]) for a in accepted}
    assert len(shards) >= 6
    grown = {port: keys - before.get(port, 0) for port, keys in cluster.keys_per_master().items()}
    assert all(count > 0 for count in grown.values()), grown

    messages = await smtp.wait_for_messages(24, timeout=30)
    by_address = {str(m["To"]): m for m in messages}
    first = accepted[0]
    check = await client.post(
        f"/v1/verifications/{first['id']}/check",
        json={"code": code_from(by_address["p0@example.com"])},
        headers=auth(),
    )
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 5}
    assert (await get_verification(client, accepted[1]["id"]))["status"] == "pending"
    metrics = await (await client.get("/metrics")).text()
    assert 'tidings_verifications_total{status="created"}' in metrics


async def test_a_cluster_failover_mid_flow_loses_nothing(
    aiohttp_client: Any,
    cluster_settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    cluster: Cluster,
) -> None:
    client = await aiohttp_client(create_app(cluster_settings))
    await start_worker(cluster_settings)
    statuses: list[int] = []
    first = [
        await post_until_accepted(
            client, signup_event(user_id=f"a{n}", email=f"a{n}@example.com"), f"msg_a{n}", statuses
        )
        for n in range(6)
    ]
    await smtp.wait_for_messages(6, timeout=30)
    await asyncio.to_thread(cluster.failover, cluster.masters()[0])
    after = [
        await post_until_accepted(
            client, signup_event(user_id=f"b{n}", email=f"b{n}@example.com"), f"msg_b{n}", statuses
        )
        for n in range(6)
    ]
    assert set(statuses) <= {202, 503}, statuses
    messages = await smtp.wait_for_messages(12, timeout=30)
    assert sorted(str(m["To"]) for m in messages) == sorted(
        [*(f"a{n}@example.com" for n in range(6)), *(f"b{n}@example.com" for n in range(6))]
    )
    for accepted in [*first, *after]:
        assert (await get_verification(client, accepted["id"]))["status"] == "pending"
