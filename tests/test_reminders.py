"""People's reminders through the bot: set, list, cancel, time zones, and sent once on time."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bot.reminders import MAX_PER_CHAT, Reminders
from config.settings import Settings
from tests.conftest import site, wait_for
from tests.emulators.telegram import TelegramEmulator
from tests.test_telegram_bot import ALICE, BOB, button, buttons, press, say, telegram_settings
from verification.keys import Keys

REMINDER_SET = re.compile(r"⏰ Reminder (rem_[0-9a-f]{10}) set for (.+)\.")


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
def settings(make_settings: Callable[..., Settings], telegram: TelegramEmulator) -> Settings:
    return make_settings(telegram=telegram_settings(telegram), sites=[site()])


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    yield client
    await client.aclose()


def fired_text(text: str | None) -> bool:
    """A reminder going off (not the confirmation that one was set)."""
    return (text or "").startswith(("⏰ Reminder: ", "⏰ 提醒: "))


async def make_due_now(redis: Redis, settings: Settings, reminder_id: str) -> None:
    """Move a reminder's schedule to now (test set-up: the shortest form is minutes away)."""
    keys = Keys(settings.redis_prefix)
    assert await redis.zscore(keys.schedules_due, reminder_id) is not None
    await redis.zadd(keys.schedules_due, {reminder_id: int(time.time() * 1000)})


async def _status_is(redis: Redis, key: str, status: str) -> bool:
    return bool(await redis.hget(key, "status") == status)


async def test_a_reminder_is_set_listed_and_sent_once_at_its_time(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    answer = await say(telegram, client, ALICE, "/remind 10m take the cake out")
    match = REMINDER_SET.fullmatch(answer.text or "")
    assert match, answer.text
    reminder_id = match.group(1)
    due = await redis.zscore(Keys(settings.redis_prefix).schedules_due, reminder_id)
    assert due is not None and abs(due / 1000 - (time.time() + 600)) < 5

    listing = await say(telegram, client, ALICE, "/reminders")
    assert reminder_id in (listing.text or "") and "take the cake out" in (listing.text or "")
    # Someone else cannot see or cancel it.
    assert "No reminders" in ((await say(telegram, client, BOB, "/reminders")).text or "")
    refused = await say(telegram, client, BOB, f"/cancel {reminder_id}")
    assert "No reminder" in (refused.text or "")

    await make_due_now(redis, settings, reminder_id)

    def fired() -> list[str]:
        return [m.text or "" for m in telegram.sent_to(ALICE) if fired_text(m.text)]

    await wait_for(fired, 10, "the reminder in Alice's chat")
    assert fired() == ["⏰ Reminder: take the cake out"]
    # Sent once: the schedule is gone and a second kick of the task would find it sent.
    keys = Keys(settings.redis_prefix)
    assert await redis.zscore(keys.schedules_due, reminder_id) is None
    # The worker records the send right after Telegram answered it.
    await wait_for(
        lambda: _status_is(redis, keys.reminder(reminder_id), "sent"), 10, "the send recorded"
    )
    assert "No reminders" in ((await say(telegram, client, ALICE, "/reminders")).text or "")


async def test_a_canceled_reminder_is_not_sent(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    answer = await say(telegram, client, ALICE, "/remind 2h30m call Anna")
    match = REMINDER_SET.fullmatch(answer.text or "")
    assert match, answer.text
    reminder_id = match.group(1)
    canceled = await say(telegram, client, ALICE, f"/cancel {reminder_id}")
    assert canceled.text == f"Reminder {reminder_id} canceled."
    keys = Keys(settings.redis_prefix)
    assert await redis.zscore(keys.schedules_due, reminder_id) is None
    # A control reminder made due now fires; the canceled one never did.
    control = REMINDER_SET.fullmatch(
        (await say(telegram, client, ALICE, "/remind 1h control")).text or ""
    )
    assert control
    await make_due_now(redis, settings, control.group(1))
    await wait_for(
        lambda: any("control" in (m.text or "") for m in telegram.sent_to(ALICE)), 10, "control"
    )
    assert not any(
        fired_text(m.text) and "call Anna" in (m.text or "") for m in telegram.sent_to(ALICE)
    )


async def test_chinese_phrasing_and_time_zones(
    client: TestClient, telegram: TelegramEmulator, settings: Settings, redis: Redis
) -> None:
    zone = await say(telegram, client, ALICE, "/timezone Asia/Shanghai", language_code="zh-hans")
    assert "Asia/Shanghai" in (zone.text or "")
    answer = await say(telegram, client, ALICE, "/remind 10分钟 喝茶", language_code="zh-hans")
    assert (answer.text or "").startswith("⏰ 已设置提醒 rem_"), answer.text
    # Wall-clock times are read in the person's zone and stored in UTC.
    tomorrow = await say(telegram, client, ALICE, "/remind tomorrow 9:00 standup")
    reminder_id = re.search(r"rem_[0-9a-f]{10}", tomorrow.text or "")
    assert reminder_id, tomorrow.text
    due_ms = await redis.zscore(Keys(settings.redis_prefix).schedules_due, reminder_id.group(0))
    assert due_ms is not None
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(due_ms / 1000, UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (9, 0)


async def test_bad_input_is_answered_with_an_example(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    answer = await say(telegram, client, ALICE, "/remind someday maybe")
    assert "/remind 10m" in (answer.text or ""), answer.text
    zh = await say(telegram, client, ALICE, "/remind 某天 也许", language_code="zh")
    assert "/remind 10分钟" in (zh.text or ""), zh.text
    missing = await say(telegram, client, ALICE, "/remind 10m")
    assert "What should I remind you of?" in (missing.text or "")
    zone = await say(telegram, client, ALICE, "/timezone Mars/Olympus")
    assert "time zone" in (zone.text or "").lower()


async def test_a_reminder_must_fit_one_message_with_its_prefix(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    worker: None,
    scheduler: None,
) -> None:
    # The longest text a Telegram message can carry after "/remind 1m ": refused, by how much.
    refused = await say(telegram, client, ALICE, "/remind 1m " + "x" * 4085)
    assert refused.text == (
        "That reminder is too long: it may be at most 4,084 characters (yours has 4,085). "
        "Please shorten it."
    )
    # Counted as Telegram counts: each of these emoji is two.
    emoji = await say(telegram, client, BOB, "/remind 1m " + "😀" * 2043, language_code="zh")
    assert emoji.text == "提醒内容太长：最多 4084 个字符（您的有 4086 个），请缩短后再试。"
    keys = Keys(settings.redis_prefix)
    assert await redis.zcard(keys.chat_reminders(ALICE)) == 0
    assert await redis.zcard(keys.chat_reminders(BOB)) == 0

    # One character less is set, and when it fires the whole of it arrives.
    longest = "y" * 4084
    answer = await say(telegram, client, ALICE, "/remind 10m " + longest)
    match = REMINDER_SET.fullmatch(answer.text or "")
    assert match, answer.text
    await make_due_now(redis, settings, match.group(1))

    def fired() -> list[str]:
        return [m.text or "" for m in telegram.sent_to(ALICE) if fired_text(m.text)]

    await wait_for(fired, 10, "the reminder in Alice's chat")
    assert fired() == ["⏰ Reminder: " + longest]
    assert await redis.hget(keys.reminder(match.group(1)), "status") == "sent"


async def test_a_long_list_of_reminders_comes_in_pages(
    client: TestClient, telegram: TelegramEmulator, settings: Settings, redis: Redis
) -> None:
    reminders = Reminders(redis, Keys(settings.redis_prefix))
    now = datetime.now(UTC)
    made = [
        await reminders.create(ALICE, now + timedelta(hours=i + 1), f"{i:02d} " + "z" * 4000, "en")
        for i in range(MAX_PER_CHAT)
    ]
    listing = await say(telegram, client, ALICE, "/reminders")
    assert (listing.text or "").startswith("Your reminders (1-"), listing.text
    assert set(buttons(listing)) == {"More ▸"}

    # Pressing "More" edits the message in place, page after page, each within the limit.
    current, shown = listing, [listing.text or ""]
    while "More ▸" in buttons(current):
        await press(telegram, client, ALICE, listing, button(current, "More"))
        current = [e for e in telegram.edits if e.message_id == listing.message_id][-1]
        shown.append(current.text or "")
    assert len(shown) > 1
    assert all(len(page) <= 4096 for page in shown)
    assert set(buttons(current)) == {"◂ Back"}
    listed = [line.split(" · ")[0] for page in shown for line in page.splitlines()[1:]]
    assert listed == made  # every reminder once, soonest first
    # Each shows the start of its text, cut with "…".
    assert shown[0].splitlines()[1].endswith("…")
    assert shown[-1].startswith("Your reminders (") and f"of {MAX_PER_CHAT})" in shown[-1]
