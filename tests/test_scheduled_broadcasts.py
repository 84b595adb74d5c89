"""``/broadcast_at``: a broadcast that starts later, listed and cancelable until then."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bot.broadcasts import BroadcastStore
from config.settings import Settings
from tests.conftest import wait_for
from tests.emulators.telegram import TelegramEmulator
from tests.test_broadcasts import (  # the same bot set-up and helpers
    ADMIN,
    FIRST_CHAT,
    keys,  # noqa: F401 - fixtures
    received,
    redis,  # noqa: F401
    say,
    settings,  # noqa: F401
    start_worker,  # noqa: F401
    store,  # noqa: F401
    subscribe,
    telegram,  # noqa: F401
)
from verification.keys import Keys

SCHEDULED = re.compile(r"Broadcast (bc_[0-9a-f]{12}) scheduled for (.+); /cancel_broadcast")


@pytest.fixture
def rate() -> float:
    return 0.0


async def test_a_scheduled_broadcast_waits_then_goes_out_once_and_can_be_canceled(
    client: TestClient,
    telegram: TelegramEmulator,  # noqa: F811
    settings: Settings,  # noqa: F811
    redis: Redis,  # noqa: F811
    store: BroadcastStore,  # noqa: F811
    start_worker: Callable[[Settings], Awaitable[None]],  # noqa: F811
    scheduler: None,
) -> None:
    await start_worker(settings)
    keys_ = Keys(settings.redis_prefix)
    chats = [FIRST_CHAT + i for i in range(5)]
    await subscribe(redis, keys_, chats)

    [later] = await say(telegram, client, ADMIN, "/broadcast_at 2h Doors open at noon")
    match = SCHEDULED.match(later.text or "")
    assert match, later.text
    kept = match.group(1)
    [dropped_msg] = await say(telegram, client, ADMIN, "/broadcast_at 3h Never mind")
    dropped = SCHEDULED.match(dropped_msg.text or "")
    assert dropped

    [listing] = await say(telegram, client, ADMIN, "/broadcasts")
    assert f"{kept} · scheduled" in (listing.text or "")
    [answer] = await say(telegram, client, ADMIN, f"/cancel_broadcast {dropped.group(1)}")
    assert answer.text == f"Broadcast {dropped.group(1)} canceled."
    assert await redis.zscore(keys_.schedules_due, dropped.group(1)) is None
    assert received(telegram, "Doors open at noon") == {}  # nothing before its time

    # Its time comes (test set-up: 2 h is the shortest wait the test can ask for).
    await redis.zadd(keys_.schedules_due, {kept: int(time.time() * 1000)})
    await wait_for(
        lambda: len(received(telegram, "Doors open at noon")) == len(chats), 15, "the broadcast"
    )

    async def done() -> bool:
        b = await store.get(kept)
        return b is not None and b.state == "done"

    await wait_for(done, 15, "the broadcast to finish")
    assert received(telegram, "Doors open at noon") == {chat: 1 for chat in chats}
    assert received(telegram, "Never mind") == {}
