"""Email announcements: opted-in, verified addresses receive broadcasts with one-click unsubscribe."""

from __future__ import annotations

from collections import Counter
from email.utils import parseaddr
from typing import Any

from aiohttp.test_utils import TestClient

from bot.broadcasts import BroadcastStore
from config.settings import Settings
from tests.conftest import SmtpSink, auth, code_from, html_of, signup, wait_for
from verification.connections import open_redis
from verification.keys import Keys


async def verified(client: TestClient, smtp: SmtpSink, address: str, **extra: Any) -> None:
    """Sign ``address`` up and approve it with the emailed code."""
    before = len(smtp.messages)
    accepted = await signup(client, email=address, user_id=address, **extra)
    await smtp.wait_for_messages(before + 1)
    [message] = [m for m in smtp.messages[before:] if parseaddr(str(m["To"]))[1] == address]
    response = await client.post(
        f"/v1/verifications/{accepted['id']}/check",
        json={"code": code_from(message)},
        headers=auth(),
    )
    assert (await response.json())["status"] == "approved"


async def settled_subscribers(settings: Settings) -> set[str]:
    """The announcement list once the workers took every approval (which subscribes)."""
    redis = open_redis(settings)
    keys = Keys(settings.redis_prefix)
    try:

        async def settled() -> set[str] | None:
            if await redis.zcard(keys.events_due):
                return None
            return set(await redis.zrange(keys.mail_subscribers, 0, -1)) or None

        found: set[str] = await wait_for(settled, timeout=15, what="approvals to be taken")
        return found
    finally:
        await redis.aclose()


async def broadcast(settings: Settings, text: str) -> tuple[str, int]:
    redis = open_redis(settings)
    try:
        store = BroadcastStore(redis, Keys(settings.redis_prefix))
        bid = await store.draft(created_by=0, text=text)
        state, total = await store.start(bid)
        assert state == "queued"
        return bid, total
    finally:
        await redis.aclose()


async def state_of(settings: Settings, bid: str) -> Any:
    redis = open_redis(settings)
    try:
        return await BroadcastStore(redis, Keys(settings.redis_prefix)).get(bid)
    finally:
        await redis.aclose()


def announcements(smtp: SmtpSink, subject: str) -> Counter[str]:
    return Counter(
        parseaddr(str(m["To"]))[1] for m in smtp.messages if str(m["Subject"]) == subject
    )


async def test_opted_in_verified_addresses_get_announcements_and_can_leave_in_one_click(
    client: TestClient, smtp: SmtpSink, settings: Settings, worker: None
) -> None:
    await verified(client, smtp, "fan@example.com", subscribe=True)
    await verified(client, smtp, "quiet@example.com")  # did not opt in
    # Opted in but never verified: an unproven address gets nothing.
    await signup(client, email="unproven@example.com", user_id="unproven", subscribe=True)
    assert await settled_subscribers(settings) == {"fan@example.com"}

    bid, total = await broadcast(settings, "Spring sale\nEverything is 20 % off this week.")
    assert total == 1

    async def done() -> bool:
        b = await state_of(settings, bid)
        return b is not None and b.state == "done"

    await wait_for(done, timeout=15, what="the broadcast to finish")
    assert announcements(smtp, "Spring sale") == Counter({"fan@example.com": 1})
    [mail] = [m for m in smtp.messages if str(m["Subject"]) == "Spring sale"]
    assert "Everything is 20 % off this week." in html_of(mail)
    assert str(mail["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    unsubscribe = str(mail["List-Unsubscribe"]).strip("<>")
    assert unsubscribe.startswith(f"{settings.public_url}/unsubscribe/")
    assert (await state_of(settings, bid)).counts["sent"] == 1

    # Opening the link asks first (a mail scanner's GET unsubscribes nobody) …
    path = unsubscribe.removeprefix(settings.public_url)
    page = await client.get(path)
    assert page.status == 200
    assert "<form" in await page.text()
    again_bid, again_total = await broadcast(settings, "Still here")
    assert again_total == 1
    # … and the mail client's one-click POST (RFC 8058) does it.
    one_click = await client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status == 200
    assert "unsubscribed" in (await one_click.text()).lower()

    third_bid, third_total = await broadcast(settings, "Last call")
    assert third_total == 0

    async def both_done() -> bool:
        first, third = await state_of(settings, again_bid), await state_of(settings, third_bid)
        return first.state == "done" and third.state == "done"

    await wait_for(both_done, timeout=15, what="the later broadcasts to finish")
    assert announcements(smtp, "Last call") == Counter()


async def test_a_forged_unsubscribe_link_changes_nothing(
    client: TestClient, smtp: SmtpSink, settings: Settings, worker: None
) -> None:
    await verified(client, smtp, "keep@example.com", subscribe=True)
    assert await settled_subscribers(settings) == {"keep@example.com"}
    forged = "a2VlcEBleGFtcGxlLmNvbQ.AAAAAAAAAAAAAAAAAAAAAA"  # base64url of the address
    response = await client.post(f"/unsubscribe/{forged}")
    assert response.status == 404
    _, total = await broadcast(settings, "Still subscribed")
    assert total == 1
