"""The flows a site and a person see, on Sentinel and on a sharded 3-master Cluster.

Email code, magic link, SMS through Ronglian, remind_after from the scheduler, and the
signed outbound events, each through the real app, worker and scheduler.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from config.settings import Settings
from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_event,
    signup_event,
    site,
    wait_for,
)
from tests.emulators.ronglian import RonglianEmulator
from tests.emulators.site_callbacks import Receiver
from tests.topologies import start_cluster, start_sentinel_group
from verification.connections import open_redis
from verification.keys import Layout
from verification.models import now_ms
from webhooks.app import create_app

pytestmark = pytest.mark.topology

LINK = re.compile(r"/v/([0-9a-f]{32,34}\.[A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])")
TEMPLATE = "2093345"


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def topology_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A running Sentinel group or Cluster, by URL."""
    if request.param == "sentinel":
        group = start_sentinel_group(replicas=1)
        yield group.url
        group.stop()
    else:
        cluster = start_cluster()
        yield cluster.url
        cluster.stop()


@pytest.fixture
async def ronglian() -> AsyncIterator[RonglianEmulator]:
    async with RonglianEmulator(templates={TEMPLATE: 2}) as emulator:
        yield emulator


async def test_code_link_sms_reminder_and_events(
    topology_url: str,
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    receiver: Receiver,
    ronglian: RonglianEmulator,
) -> None:
    settings = make_settings(
        redis_url=topology_url,
        sites=[site(callback_url=receiver.url, channels=["email", "sms", "link"])],
        sms={"provider": "ronglian", "ronglian": ronglian.settings()},
        events={"retry_schedule_seconds": [0.3, 0.3]},
    )
    client = await aiohttp_client(create_app(settings))
    await start_worker(settings)
    from tasks.broker import build_broker
    from tasks.scheduling import schedule_source
    from tasks.worker import register_tasks

    broker = build_broker(settings)
    register_tasks(broker, settings)
    await broker.startup()
    source = schedule_source(settings, broker, dispatch=True)
    await source.startup()
    try:
        # A code by email, checked by the site; its reminder comes from the scheduler.
        coded = await post_event(
            client, signup_event(user_id="code", email="code@example.com", remind_after=60)
        )
        assert coded.status == 202, await coded.text()
        coded_id = (await coded.json())["id"]
        # Bring the reminder forward (60 s at the least), in the verification's shard.
        redis = open_redis(settings)
        try:
            shard = Layout.for_settings(settings).of(coded_id)
            member = f"remind_{coded_id}"
            assert await redis.zscore(shard.schedules_due, member) is not None
            await redis.zadd(shard.schedules_due, {member: now_ms()})
        finally:
            await redis.aclose()
        # A magic link, used by the person.
        linked = await post_event(
            client, signup_event(user_id="link", email="link@example.com", channel="link")
        )
        assert linked.status == 202, await linked.text()
        linked_id = (await linked.json())["id"]
        # A code by SMS through Ronglian.
        texted = await post_event(
            client, signup_event(user_id="sms", email=None, phone="13800138000", channel="sms")
        )
        assert texted.status == 202, await texted.text()
        texted_id = (await texted.json())["id"]

        await smtp.wait_for_messages(3, timeout=30)  # code, link, and the reminder
        by_to: dict[str, list[Any]] = {}
        for message in smtp.messages:
            by_to.setdefault(str(message["To"]), []).append(message)
        assert len(by_to["code@example.com"]) == 2  # the code and its reminder
        reminder_code = code_from(by_to["code@example.com"][-1])
        check = await client.post(
            f"/v1/verifications/{coded_id}/check", json={"code": reminder_code}, headers=auth()
        )
        assert (await check.json())["status"] == "approved"

        body = by_to["link@example.com"][0].get_body(("plain",))
        assert body is not None
        match = LINK.search(body.get_content())
        assert match, "no magic link in the email"
        page = await client.get(f"/v/{match.group(1)}")
        assert page.status == 200
        used = await client.post(f"/v/{match.group(1)}", allow_redirects=False)
        assert used.status in (200, 303)  # the approved page, or back to return_url
        assert (await get_verification(client, linked_id))["status"] == "approved"

        [sms] = await ronglian.wait_for_messages(1, timeout=30)
        check = await client.post(
            f"/v1/verifications/{texted_id}/check", json={"code": sms.datas[0]}, headers=auth()
        )
        assert (await check.json())["status"] == "approved"

        # Every approval reached the site as a signed event (verified by both libraries).
        async def events() -> set[str] | None:
            approved = {
                c["event"]["data"]["id"]
                for c in receiver.calls
                if c["event"]["type"] == "verification.approved"
            }
            return approved if len(approved) == 3 else None

        assert await wait_for(events, 30, "three approval events") == {
            coded_id,
            linked_id,
            texted_id,
        }
        assert receiver.rejected == 0
    finally:
        await source.shutdown()
        await broker.shutdown()
