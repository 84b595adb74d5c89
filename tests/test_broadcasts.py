"""Admin broadcasts: started from the bot's real webhook, sent by real workers, received by
the Telegram Bot API emulator, which records every accepted message with its arrival time.

What is checked is what people and the admin see: who received the message and how
often, when (pace, pauses after a 429), and the admin's progress message and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from taskiq.api import run_receiver_task

from bot.broadcasts import Broadcast, BroadcastStore
from bot.subscribers import Subscribers
from config.settings import Settings
from tasks.broadcasting import SENDERS
from tasks.broker import TidingsStreamBroker
from tasks.stopping import stop_task
from tasks.worker import build_worker_broker
from tests.conftest import site, wait_for
from tests.emulators.telegram import SentMessage, TelegramEmulator
from tests.processes import BIN, process_env
from verification.keys import Keys

WEBHOOK_SECRET = "s3cret-token"
WEBHOOK_PATH = "/telegram/webhook"
ADMIN = 999
FIRST_CHAT = 100_000
REPORT = re.compile(
    r"^Broadcast (?P<id>bc_[0-9a-f]{12}) (?P<verb>finished|canceled)(?: in [\d.]+ s)?: "
    r"sent (?P<sent>\d+), blocked (?P<blocked>\d+), failed (?P<failed>\d+), "
    r"unknown (?P<unknown>\d+), skipped (?P<skipped>\d+) \(of (?P<total>\d+)\)\.$"
)


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
def rate() -> float:
    """Messages per second; 0 sends as fast as the emulator answers. Tests parametrize it."""
    return 0.0


def telegram_settings(telegram: TelegramEmulator, rate: float) -> dict[str, Any]:
    return {
        "token": telegram.token,
        "api_base": telegram.url,
        "webhook_secret": WEBHOOK_SECRET,
        "admin_ids": [ADMIN],
        "broadcast_rate": rate,
    }


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], telegram: TelegramEmulator, rate: float
) -> Settings:
    return make_settings(
        telegram=telegram_settings(telegram, rate), sites=[site(channels=["email", "telegram"])]
    )


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Settings], Awaitable[None]]]:
    """In-process workers on the real stream, like conftest's ``start_worker``.

    Unlike conftest's, this one calls ``stop_listening()`` before canceling: on Python 3.11
    a cancel can be swallowed by a blocking stream read, and the read loop then runs until
    ``stop_task`` gives up after 10 s (seen right after a broadcast finished).
    """
    running: list[tuple[asyncio.Task[None], TidingsStreamBroker]] = []

    async def start(settings: Settings) -> None:
        broker, _ = build_worker_broker(settings)
        task = asyncio.create_task(run_receiver_task(broker, run_startup=True, max_async_tasks=20))
        running.append((task, broker))

    yield start
    for task, broker in reversed(running):
        broker.stop_listening()
        await stop_task(task)
        await broker.shutdown()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


@pytest.fixture
def store(redis: Redis, keys: Keys) -> BroadcastStore:
    return BroadcastStore(redis, keys)


# -- helpers -----------------------------------------------------------------------------------


async def post_update(
    telegram: TelegramEmulator, client: TestClient, update: dict[str, Any]
) -> None:
    status, body = await telegram.deliver(
        update, str(client.make_url(WEBHOOK_PATH)), secret_token=WEBHOOK_SECRET
    )
    assert status == 200, body


async def say(
    telegram: TelegramEmulator, client: TestClient, chat: int, text: str
) -> list[SentMessage]:
    """``chat`` writes ``text``; what the bot sent into that chat in answer."""
    before = len(telegram.sent_to(chat))
    await post_update(telegram, client, telegram.message_update(chat, chat, text))
    return telegram.sent_to(chat)[before:]


def go_button(prompt: SentMessage, bid: str) -> str:
    assert prompt.reply_markup is not None, prompt.text
    data = {
        b["text"]: b["callback_data"] for row in prompt.reply_markup["inline_keyboard"] for b in row
    }
    assert set(data.values()) == {f"bc:go:{bid}", f"bc:no:{bid}"}, data
    [go] = [value for text, value in data.items() if "Send" in text]
    return go


def prompt_id(prompt: SentMessage) -> str:
    match = re.fullmatch(
        r"Preview above\. Send broadcast (bc_[0-9a-f]{12}) to (\d+) subscribers\?",
        str(prompt.text),
    )
    assert match, prompt.text
    return match.group(1)


async def draft(
    telegram: TelegramEmulator, client: TestClient, text: str, audience: int
) -> tuple[str, SentMessage]:
    """``/broadcast <text>`` from the admin: the preview, then the prompt; (id, prompt)."""
    preview, prompt = await say(telegram, client, ADMIN, f"/broadcast {text}")
    assert preview.text == text and preview.reply_markup is None
    assert prompt.text is not None and f"to {audience} subscribers?" in prompt.text
    return prompt_id(prompt), prompt


async def send_now(
    telegram: TelegramEmulator, client: TestClient, bid: str, prompt: SentMessage
) -> None:
    """The admin presses Send under the prompt."""
    update = telegram.callback_update(ADMIN, ADMIN, go_button(prompt, bid), prompt.message_id)
    await post_update(telegram, client, update)


def report_of(telegram: TelegramEmulator, prompt: SentMessage) -> dict[str, Any] | None:
    """The final report the progress message was edited to, parsed; None until then."""
    for edit in telegram.edits:
        if edit.chat_id == ADMIN and edit.message_id == prompt.message_id:
            match = REPORT.fullmatch(str(edit.text))
            if match:
                found: dict[str, Any] = match.groupdict()
                for name in ("sent", "blocked", "failed", "unknown", "skipped", "total"):
                    found[name] = int(found[name])
                return found
    return None


async def wait_for_report(
    telegram: TelegramEmulator, prompt: SentMessage, timeout: float
) -> dict[str, Any]:
    await telegram.wait_until(
        lambda: report_of(telegram, prompt), timeout=timeout, what="the final report"
    )
    report = report_of(telegram, prompt)
    assert report is not None
    return report


async def subscribe(redis: Redis, keys: Keys, chats: list[int]) -> None:
    subscribers = Subscribers(redis, keys)
    for start in range(0, len(chats), 100):
        await asyncio.gather(*(subscribers.subscribe(c, c) for c in chats[start : start + 100]))


def received(telegram: TelegramEmulator, text: str) -> Counter[int]:
    """How many times each chat (not the admin's) accepted a message with ``text``."""
    return Counter(int(m.chat_id) for m in telegram.sent if m.chat_id != ADMIN and m.text == text)


def refused(telegram: TelegramEmulator, status: int) -> set[int]:
    """Chats whose broadcast sends were answered ``status``."""
    return {
        int(c.params["chat_id"])
        for c in telegram.calls_of("sendMessage")
        if c.status == status and c.params.get("chat_id") != ADMIN
    }


async def finished(store: BroadcastStore, bid: str) -> Broadcast | None:
    b = await store.get(bid)
    return b if b is not None and b.finished_at is not None else None


async def stays_false(predicate: Callable[[], Any], seconds: float) -> None:
    """``predicate`` must stay false for ``seconds`` (a bounded observation window)."""
    with pytest.raises(AssertionError, match="timed out"):
        await wait_for(predicate, timeout=seconds, what="something that must not happen")


# -- the admin's flow --------------------------------------------------------------------------


async def test_admin_broadcast_reaches_every_subscriber_once(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    store: BroadcastStore,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    people = [101, 102, 103, 104, 105]
    for chat in people:
        await say(telegram, client, chat, "/start")
    await say(telegram, client, 105, "/stop")
    audience = people[:4]

    bid, prompt = await draft(telegram, client, "Hello all", audience=4)
    assert received(telegram, "Hello all") == Counter()  # a preview sends nothing
    await send_now(telegram, client, bid, prompt)
    # The prompt turns into the progress message at once.
    first_edit = next(e for e in telegram.edits if e.message_id == prompt.message_id)
    assert first_edit.text == f"Broadcast {bid}: sending to 4 subscribers…"
    assert first_edit.reply_markup is None  # no Send button left to press twice

    report = await wait_for_report(telegram, prompt, timeout=10)
    assert received(telegram, "Hello all") == Counter(audience)
    assert report["id"] == bid and report["verb"] == "finished"
    assert report["total"] == 4 and report["sent"] == 4
    assert report["blocked"] == report["failed"] == report["unknown"] == 0

    [listing] = await say(telegram, client, ADMIN, "/broadcasts")
    line = next(row for row in str(listing.text).splitlines() if row.startswith(bid))
    assert " done " in line and "sent 4" in line

    [late] = await say(telegram, client, ADMIN, f"/cancel_broadcast {bid}")
    assert late.text == f"Broadcast {bid} is already done."
    [unknown] = await say(telegram, client, ADMIN, "/cancel_broadcast bc_000000000000")
    assert unknown.text == "No broadcast bc_000000000000."

    # Pressing Send again (a second tap, a retried update) sends nothing more.
    await send_now(telegram, client, bid, prompt)
    assert received(telegram, "Hello all") == Counter(audience)
    assert "nothing to do" in str(telegram.edits[-1].text)


async def test_an_over_long_broadcast_is_refused_in_the_admins_language_and_never_sent(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    store: BroadcastStore,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    await say(telegram, client, 101, "/start")
    too_long = "x" * 5000
    [refusal] = await say(telegram, client, ADMIN, f"/broadcast {too_long}")
    assert refusal.text == (
        "This broadcast is too long for Telegram: it may be at most 4,096 characters "
        "(it has 5,000). Nothing was sent."
    )
    assert refusal.reply_markup is None  # no Send button
    before = len(telegram.sent_to(ADMIN))
    later = telegram.message_update(
        ADMIN, ADMIN, f"/broadcast_at 1h {'😀' * 2049}", language_code="zh"
    )
    await post_update(telegram, client, later)
    [zh] = telegram.sent_to(ADMIN)[before:]
    assert zh.text == (
        "此广播超出 Telegram 的长度限制：最多 4096 个字符（当前有 4098 个）。未发送任何内容。"
    )
    assert await store.recent() == []  # no draft, nothing scheduled

    # Exactly at the limit goes to everyone.
    longest = "y" * 4096
    bid, prompt = await draft(telegram, client, longest, audience=1)
    await send_now(telegram, client, bid, prompt)
    report = await wait_for_report(telegram, prompt, timeout=10)
    assert report["sent"] == 1 and received(telegram, longest) == Counter([101])
    assert received(telegram, too_long) == Counter()


async def test_cancel_button_under_the_preview_sends_nothing(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    store: BroadcastStore,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    await say(telegram, client, 101, "/start")
    bid, prompt = await draft(telegram, client, "Never mind", audience=1)
    update = telegram.callback_update(ADMIN, ADMIN, f"bc:no:{bid}", prompt.message_id)
    await post_update(telegram, client, update)
    assert telegram.edits[-1].text == f"Broadcast {bid}: canceled."
    broadcast = await store.get(bid)
    assert broadcast is not None and broadcast.state == "canceled"
    await send_now(telegram, client, bid, prompt)  # Send under the canceled draft
    assert "canceled" in str(telegram.edits[-1].text)
    assert received(telegram, "Never mind") == Counter()


async def test_broadcast_as_a_reply_copies_the_message(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    audience = [201, 202, 203]
    await subscribe(redis, keys, audience)
    source = telegram.message_update(ADMIN, ADMIN, "Big news, with *formatting*")
    await post_update(telegram, client, source)  # a plain message: the bot says nothing
    source_id = source["message"]["message_id"]
    before = len(telegram.sent_to(ADMIN))
    reply = telegram.reply_update(ADMIN, ADMIN, "/broadcast", reply_to_message_id=source_id)
    await post_update(telegram, client, reply)
    preview, prompt = telegram.sent_to(ADMIN)[before:]
    assert preview.method == "copyMessage" and preview.copied_message_id == source_id
    bid = prompt_id(prompt)
    await send_now(telegram, client, bid, prompt)
    report = await wait_for_report(telegram, prompt, timeout=10)

    copies = [m for m in telegram.sent if m.chat_id != ADMIN]
    assert sorted(int(m.chat_id) for m in copies) == audience
    for copy in copies:
        assert copy.method == "copyMessage"
        assert copy.from_chat_id == ADMIN and copy.copied_message_id == source_id
        assert copy.text == "Big news, with *formatting*"
    assert report["sent"] == 3 and report["total"] == 3


# -- at scale, with Telegram's refusals --------------------------------------------------------


async def test_thousand_subscribers_with_blocked_missing_and_throttled_chats(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    chats = [FIRST_CHAT + i for i in range(1000)]
    await subscribe(redis, keys, chats)
    blocked = set(chats[7::20])  # 50
    missing = set(chats[11::100])  # 10
    telegram.block(*blocked)
    telegram.not_found(*missing)
    reachable = set(chats) - blocked - missing

    bid, prompt = await draft(telegram, client, "Hello thousand", audience=1000)
    await send_now(telegram, client, bid, prompt)
    # Midway, Telegram asks the bot to slow down, three times.
    await telegram.wait_until(lambda: len(received(telegram, "Hello thousand")) >= 300, 20)
    telegram.fail_next("sendMessage", "429:1", "429:1", "429:1")
    report = await wait_for_report(telegram, prompt, timeout=30)

    counts = received(telegram, "Hello thousand")
    assert set(counts) == reachable
    assert set(counts.values()) == {1}, "someone received it more than once"
    throttled = [c for c in telegram.calls_of("sendMessage") if c.status == 429]
    assert len(throttled) == 3 and telegram.pending_faults == 0
    # Retried: delivered, or refused as any call to that chat is (a throttled call can
    # land on a blocked or missing chat).
    throttled_chats = {int(c.params["chat_id"]) for c in throttled}
    assert throttled_chats & reachable <= set(counts)

    assert refused(telegram, 403) == blocked
    assert refused(telegram, 400) == missing
    assert report["total"] == 1000
    assert report["sent"] == len(reachable) == sum(counts.values())
    assert report["blocked"] == len(blocked)
    assert report["failed"] == len(missing)
    assert report["unknown"] == report["skipped"] == 0

    # Chats that blocked the bot are no longer subscribers; the others still are.
    remaining = {int(c) for c in await redis.zrange(keys.subscribers, 0, -1)}
    assert remaining == set(chats) - blocked


@pytest.mark.parametrize("rate", [100.0])
async def test_paced_broadcast_holds_its_rate(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    start_worker: Callable[[Settings], Awaitable[None]],
    rate: float,
) -> None:
    await start_worker(settings)
    chats = [FIRST_CHAT + i for i in range(200)]
    await subscribe(redis, keys, chats)
    bid, prompt = await draft(telegram, client, "Paced", audience=200)
    await send_now(telegram, client, bid, prompt)
    report = await wait_for_report(telegram, prompt, timeout=10)
    assert received(telegram, "Paced") == Counter(chats)
    assert report["sent"] == 200
    times = sorted(m.at for m in telegram.sent if m.chat_id != ADMIN)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert rate * 0.9 <= achieved <= rate * 1.1, f"{achieved:.1f} msg/s"


@pytest.mark.parametrize("rate", [25.0])  # the default rate
async def test_retry_after_pauses_every_send_bot_wide(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    chats = [FIRST_CHAT + i for i in range(40)]
    await subscribe(redis, keys, chats)
    bid, prompt = await draft(telegram, client, "Slow down", audience=40)
    await send_now(telegram, client, bid, prompt)
    await telegram.wait_until(lambda: len(received(telegram, "Slow down")) >= 10, 10)
    telegram.fail_next("sendMessage", "429:1")
    report = await wait_for_report(telegram, prompt, timeout=10)
    assert received(telegram, "Slow down") == Counter(chats)  # the refused one too, once
    assert report["sent"] == 40

    [throttled] = [c for c in telegram.calls_of("sendMessage") if c.status == 429]
    # Telegram said "retry after 1 s": for about that long nothing may be sent, by any
    # sender. Requests already on their way when the 429 was answered may still land
    # (allowance: 50 ms on loopback); a send that was merely waiting for its slot may not.
    during_pause = [
        round(m.at - throttled.at, 3)
        for m in telegram.sent
        if m.chat_id != ADMIN and throttled.at + 0.05 < m.at < throttled.at + 0.9
    ]
    assert during_pause == [], f"{len(during_pause)} sends during the pause, at +s: {during_pause}"
    resumed = min(m.at for m in telegram.sent if m.at > throttled.at + 0.05)
    assert resumed - throttled.at < 1.5, "the pause lasted far longer than retry_after"


@pytest.mark.parametrize("rate", [20.0])
async def test_cancel_stops_a_running_broadcast(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    store: BroadcastStore,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(settings)
    chats = [FIRST_CHAT + i for i in range(200)]  # 10 s at 20/s
    await subscribe(redis, keys, chats)
    bid, prompt = await draft(telegram, client, "Stop me", audience=200)
    await send_now(telegram, client, bid, prompt)
    await telegram.wait_until(lambda: len(received(telegram, "Stop me")) >= 20, 10)

    [answer] = await say(telegram, client, ADMIN, f"/cancel_broadcast {bid}")
    assert answer.text == f"Broadcast {bid} canceled."
    stopped = await wait_for(lambda: finished(store, bid), timeout=5, what="the workers to stop")
    assert stopped.state == "canceled"
    report = await wait_for_report(telegram, prompt, timeout=5)
    assert report["verb"] == "canceled"

    counts = received(telegram, "Stop me")
    assert set(counts.values()) == {1}
    got = sum(counts.values())
    assert got < 200 - 10 * SENDERS  # it stopped well short of everyone
    assert report["sent"] == got and report["total"] == 200
    # Nothing more goes out once it has settled: watch for half a second.
    await stays_false(lambda: sum(received(telegram, "Stop me").values()) > got, 0.5)

    [listing] = await say(telegram, client, ADMIN, "/broadcasts")
    assert f"{bid} · canceled · 200 recipients · sent {got}" in str(listing.text)
    # Canceling it again must not claim to have canceled something.
    [again] = await say(telegram, client, ADMIN, f"/cancel_broadcast {bid}")
    assert again.text == f"Broadcast {bid} is already canceled."


# -- a worker killed midway --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, telegram: TelegramEmulator, rate: float
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``tidings worker`` whose bot talks to the emulator in this process."""
    env = process_env(settings)
    env["TIDINGS_TELEGRAM"] = json.dumps(telegram_settings(telegram, rate))
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"),
        "worker",
        "--workers",
        "1",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def test_broadcast_survives_a_killed_worker_sending_each_person_at_most_once(
    client: TestClient,
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    store: BroadcastStore,
) -> None:
    chats = [FIRST_CHAT + i for i in range(500)]
    await subscribe(redis, keys, chats)
    bid, prompt = await draft(telegram, client, "Survive", audience=500)
    async with worker_process(settings, telegram, rate=100) as victim:
        await send_now(telegram, client, bid, prompt)
        await telegram.wait_until(lambda: len(received(telegram, "Survive")) >= 100, 20)
        os.killpg(victim.pid, signal.SIGKILL)
        await victim.wait()
    killed_at = time.monotonic()
    at_kill = sum(received(telegram, "Survive").values())
    assert at_kill < 500

    # The new worker takes over once the dead one's 30 s lease has run out. It sends
    # faster than the first only to keep this test short.
    async with worker_process(settings, telegram, rate=250):
        report = await wait_for_report(telegram, prompt, timeout=45)
    recovered_after = time.monotonic() - killed_at

    counts = received(telegram, "Survive")
    assert set(counts.values()) == {1}, "someone received it twice"
    got = sum(counts.values())
    assert report["verb"] == "finished" and report["total"] == 500
    # Sends in flight when the worker died are "unknown" and never sent again.
    assert report["unknown"] <= SENDERS
    assert report["sent"] + report["unknown"] == 500
    assert report["sent"] <= got <= report["sent"] + report["unknown"]
    assert got + report["unknown"] >= 500  # nobody is left out without being counted
    broadcast = await store.get(bid)
    assert broadcast is not None and broadcast.state == "done"
    assert recovered_after <= 45
