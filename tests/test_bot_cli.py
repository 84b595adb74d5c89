"""The bot's admin commands and ``tidings dev``'s polling, run as real processes.

``tidings bot …``, ``tidings broadcast …`` and ``tidings stats`` run from the venv with only
``TIDINGS_*`` variables for settings (a private Redis prefix, the Telegram Bot API emulator
of this test); what is checked is what they print, their exit status, and what Telegram (the
emulator) was told. ``tidings dev`` polls the emulator with ``getUpdates`` as it would poll
Telegram, so a ``/start`` queued there is answered without any public URL.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramConflictError
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bot.broadcasts import BroadcastStore
from bot.subscribers import Subscribers
from bot.texts import text
from config.settings import Settings
from tests.conftest import SmtpSink, post_event, signup_event, wait_for
from tests.emulators.telegram import TelegramEmulator
from tests.processes import BIN, process_env
from tidings.embedded_redis import free_port
from verification.keys import Keys

# A token shaped like a real one, so a leak of any part of it is easy to spot.
TOKEN = "7000123456:AAHv-Secret_Part-Of-The-Token-xyz"
TOKEN_SECRET = TOKEN.partition(":")[2]
WEBHOOK_SECRET = "wh-Secret_token-42"
PUBLIC_URL = "https://tidings.example.com"
WEBHOOK_URL = PUBLIC_URL + "/telegram/webhook"
ADMIN = 999
CHATS = [5001, 5002, 5003]
ROUTED_UPDATES = {"message", "callback_query", "my_chat_member"}


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
def settings(make_settings: Callable[..., Settings], telegram: TelegramEmulator) -> Settings:
    """The settings the in-process parts (workers, app) share with the CLI processes."""
    return make_settings(
        telegram={
            "token": TOKEN,
            "api_base": telegram.url,
            "webhook_secret": WEBHOOK_SECRET,
            "admin_ids": [ADMIN],
            "broadcast_rate": 0,
        }
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


def cli_env(settings: Settings, telegram: TelegramEmulator, **drop: bool) -> dict[str, str]:
    """A clean environment (no inherited TIDINGS_*) with the Telegram keys one by one.

    ``drop`` names keys to leave out: ``cli_env(..., TIDINGS_TELEGRAM__WEBHOOK_SECRET=True)``.
    """
    env = process_env(settings)
    env.update(
        {
            "TIDINGS_PUBLIC_URL": PUBLIC_URL,
            "TIDINGS_TELEGRAM__TOKEN": TOKEN,
            "TIDINGS_TELEGRAM__API_BASE": telegram.url,
            "TIDINGS_TELEGRAM__WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TIDINGS_TELEGRAM__ADMIN_IDS": json.dumps([ADMIN]),
            "TIDINGS_TELEGRAM__BROADCAST_RATE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key, leave_out in drop.items():
        if leave_out:
            del env[key]
    return env


@dataclass(frozen=True, repr=False)
class Run:
    """A finished ``tidings`` command."""

    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def __repr__(self) -> str:
        return f"$ tidings {' '.join(self.argv)} -> {self.code}\n{self.out}{self.err}"

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def tidings(env: dict[str, str], *argv: str, stdin: str | None = None) -> Run:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"),
        *argv,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), 30
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"tidings {' '.join(argv)} did not finish in 30 s") from None
    assert process.returncode is not None
    return Run(argv, process.returncode, out.decode(), err.decode())


def assert_no_secrets(*runs: Run) -> None:
    for run in runs:
        for secret in (TOKEN_SECRET, WEBHOOK_SECRET):
            assert secret not in run.out + run.err, f"a secret was printed:\n{run}"


# -- the emulator's getUpdates, through the real aiogram Bot ------------------------------------


@pytest.fixture
async def bot(telegram: TelegramEmulator) -> AsyncIterator[Bot]:
    bot = telegram.bot()
    try:
        yield bot
    finally:
        await bot.session.close()


async def test_get_updates_long_polls_confirms_and_filters(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    # Nothing pending and no timeout: an empty answer at once.
    assert await bot.get_updates() == []

    # A held request answers as soon as an update arrives, not at its timeout.
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5, request_timeout=10))
    await telegram.wait_for_calls(2, "getUpdates")
    assert not poll.done()
    first = telegram.queue_update(telegram.message_update(CHATS[0], CHATS[0], "/start"))
    assert first is not None
    [update] = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 2
    assert update.update_id == first["update_id"]
    assert update.message is not None and update.message.text == "/start"

    # Unconfirmed updates come again; offset confirms them, limit caps the answer.
    second = telegram.queue_update(telegram.message_update(CHATS[1], CHATS[1], "hi"))
    third = telegram.queue_update(telegram.callback_update(CHATS[1], CHATS[1], "x"))
    assert second is not None and third is not None
    again = await bot.get_updates(limit=2)
    assert [u.update_id for u in again] == [first["update_id"], second["update_id"]]
    rest = await bot.get_updates(offset=second["update_id"])
    assert [u.update_id for u in rest] == [second["update_id"], third["update_id"]]
    assert (await bot.get_webhook_info()).pending_update_count == 2
    assert await bot.get_updates(offset=third["update_id"] + 1) == []
    assert telegram.pending_updates == []

    # A held request ends when its timeout runs out.
    started = time.monotonic()
    assert await bot.get_updates(timeout=1, request_timeout=10) == []
    assert 0.9 <= time.monotonic() - started < 3

    # allowed_updates: updates of other types created afterwards never reach the bot.
    assert await bot.get_updates(allowed_updates=["message"]) == []
    assert telegram.queue_update(telegram.callback_update(CHATS[2], CHATS[2], "y")) is None
    kept = telegram.queue_update(telegram.message_update(CHATS[2], CHATS[2], "kept"))
    assert kept is not None
    assert [u.update_id for u in await bot.get_updates()] == [kept["update_id"]]
    with pytest.raises(ValueError, match="not above"):
        telegram.queue_update({"update_id": kept["update_id"], "message": {}})


async def test_get_updates_conflicts_with_a_webhook_and_with_another_poller(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    telegram.queue_update(telegram.message_update(CHATS[0], CHATS[0], "/start"))
    await bot.set_webhook(WEBHOOK_URL)
    with pytest.raises(TelegramConflictError, match="can't use getUpdates method while webhook"):
        await bot.get_updates()
    await bot.delete_webhook(drop_pending_updates=True)
    assert telegram.pending_updates == []

    # Two bot instances polling: the newer request ends the held one with 409.
    held = asyncio.create_task(bot.get_updates(timeout=5, request_timeout=10))
    await telegram.wait_for_calls(2, "getUpdates")
    assert await bot.get_updates() == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await asyncio.wait_for(held, 2)


# -- tidings bot ----------------------------------------------------------------------------------


async def test_bot_set_webhook_info_and_delete(
    telegram: TelegramEmulator, settings: Settings
) -> None:
    env = cli_env(settings, telegram)
    no_secret = cli_env(settings, telegram, TIDINGS_TELEGRAM__WEBHOOK_SECRET=True)
    plain_http = {**env, "TIDINGS_PUBLIC_URL": "http://tidings.example.com"}
    # An update Telegram still holds: set-webhook keeps it (no --drop-pending).
    pending = telegram.queue_update(telegram.message_update(CHATS[0], CHATS[0], "/start"))
    assert pending is not None

    # Each command takes seconds to start (aiogram), so all start at once; the emulator holds
    # `bot info` (its first call is getMe) and `bot delete-webhook` until their turn.
    telegram.pause("getMe", "deleteWebhook")
    refused_run = asyncio.create_task(tidings(no_secret, "bot", "set-webhook"))
    # Telegram refuses a webhook that is not HTTPS (checked last, it changes nothing).
    http_run = asyncio.create_task(tidings(plain_http, "bot", "set-webhook"))
    set_run = asyncio.create_task(tidings(env, "bot", "set-webhook"))
    info_run = asyncio.create_task(tidings(env, "bot", "info"))
    delete_run = asyncio.create_task(tidings(env, "bot", "delete-webhook", "--drop-pending"))
    runs = (refused_run, http_run, set_run, info_run, delete_run)
    try:
        refused, done = await asyncio.gather(refused_run, set_run)

        # Without the secret: one clear line naming the key, a failure status, nothing set.
        assert refused.code != 0, refused
        assert refused.out == "", refused
        [line] = [x for x in refused.err.splitlines() if x.strip()]
        assert "TIDINGS_TELEGRAM__WEBHOOK_SECRET" in line, refused
        assert "Traceback" not in refused.err

        assert done.code == 0, done
        assert WEBHOOK_URL in done.out
        assert [c.params["url"] for c in telegram.calls_of("setWebhook") if c.ok] == [WEBHOOK_URL]
        hook = telegram.webhook
        assert hook.url == WEBHOOK_URL
        assert hook.secret_token == WEBHOOK_SECRET
        assert hook.allowed_updates is not None
        assert set(hook.allowed_updates) >= ROUTED_UPDATES, hook.allowed_updates
        assert len(set(hook.allowed_updates)) == len(hook.allowed_updates)
        assert hook.drop_pending_updates is not True
        assert telegram.pending_updates == [pending]

        telegram.resume("getMe")
        info = await info_run
        assert info.code == 0, info
        shown = dict(line.split(": ", 1) for line in info.lines if ": " in line)
        assert shown["bot"] == f"@{telegram.username}", info
        assert shown["webhook"] == WEBHOOK_URL, info
        assert shown["pending_updates"] == "1", info

        telegram.resume("deleteWebhook")
        deleted = await delete_run
        assert deleted.code == 0, deleted
        assert "webhook deleted" in deleted.out
        assert telegram.webhook.url == ""
        assert telegram.webhook.drop_pending_updates is True
        assert telegram.pending_updates == []
    finally:
        telegram.resume()
        await asyncio.gather(*runs, return_exceptions=True)
    bad_url = await http_run
    assert_no_secrets(refused, done, info, deleted, bad_url)

    # Telegram's refusal reaches the admin as one line with its reason, not a traceback.
    assert bad_url.code != 0, bad_url
    assert "An HTTPS URL must be provided for webhook" in bad_url.err, bad_url
    assert "Traceback" not in bad_url.err, bad_url
    assert len([x for x in bad_url.err.splitlines() if x.strip()]) == 1, bad_url


# -- tidings broadcast ----------------------------------------------------------------------------


async def test_broadcast_send_list_and_cancel(
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    worker: None,
) -> None:
    env = cli_env(settings, telegram)
    subscribers = Subscribers(redis, keys)
    for chat in CHATS:
        await subscribers.subscribe(chat, chat)

    # Without --yes the admin is asked first; "no" sends (and records) nothing.
    declined = await tidings(env, "broadcast", "send", "Hello", stdin="n\n")
    assert declined.code == 0, declined
    assert f"Send to {len(CHATS)} subscribers?" in declined.out
    assert "not sent" in declined.out

    sent = await tidings(env, "broadcast", "send", "Hello", "--yes")
    assert sent.code == 0, sent
    match = re.search(rf"broadcast (bc_[0-9a-f]+) queued for {len(CHATS)} subscribers", sent.out)
    assert match, sent
    bid = match.group(1)

    store = BroadcastStore(redis, keys)

    async def finished() -> bool:
        broadcast = await store.get(bid)
        return broadcast is not None and broadcast.finished_at is not None

    await wait_for(finished, timeout=10, what="the broadcast to finish")
    received = Counter(m.chat_id for m in telegram.sent if m.text == "Hello")
    assert received == Counter(CHATS), received
    assert len(telegram.sent) == len(CHATS)  # nobody else was written to (no admin chat)

    listed = await tidings(env, "broadcast", "list")
    assert listed.code == 0, listed
    [line] = listed.lines  # the declined one was never created
    assert line.startswith(bid), listed
    assert " · done · " in line and f"{len(CHATS)} recipients" in line, listed
    assert f"sent {len(CHATS)}" in line, listed

    as_json = await tidings(env, "broadcast", "list", "--json")
    assert as_json.code == 0, as_json
    [row] = [json.loads(x) for x in as_json.lines]
    assert (row["id"], row["state"], row["text"], row["total"]) == (bid, "done", "Hello", 3)
    assert row["counts"]["sent"] == len(CHATS)

    late, unknown = await asyncio.gather(
        tidings(env, "broadcast", "cancel", bid),
        tidings(env, "broadcast", "cancel", "bc_000000000000"),
    )
    assert late.code != 0, late
    assert "already done" in late.err, late
    assert unknown.code != 0, unknown
    assert "not found" in unknown.err, unknown
    assert "Traceback" not in late.err + unknown.err
    # Canceling a finished broadcast changed nothing.
    again = await store.get(bid)
    assert again is not None and again.state == "done"
    assert len(telegram.sent) == len(CHATS)
    assert_no_secrets(declined, sent, listed, as_json, late, unknown)


async def test_broadcast_send_refuses_an_over_long_text_in_the_admins_language(
    telegram: TelegramEmulator, settings: Settings, redis: Redis, keys: Keys
) -> None:
    env = {
        k: v for k, v in cli_env(settings, telegram).items() if k not in ("LC_ALL", "LC_MESSAGES")
    }
    await Subscribers(redis, keys).subscribe(CHATS[0], CHATS[0])
    too_long = "x" * 5000
    english, chinese = await asyncio.gather(
        # Refused before the confirmation question: "y" is never read.
        tidings({**env, "LANG": "en_US.UTF-8"}, "broadcast", "send", too_long, stdin="y\n"),
        tidings({**env, "LANG": "zh_CN.UTF-8"}, "broadcast", "send", too_long, "--yes"),
    )
    assert english.code != 0, english
    assert "Send to" not in english.out, english
    assert (
        "This broadcast is too long for Telegram: it may be at most 4,096 characters "
        "(it has 5,000). Nothing was sent." in english.err
    ), english
    assert chinese.code != 0, chinese
    assert "最多 4096 个字符（当前有 5000 个）" in chinese.err, chinese
    assert "Traceback" not in english.err + chinese.err
    assert await BroadcastStore(redis, keys).recent() == []
    assert telegram.sent == []


# -- tidings stats --------------------------------------------------------------------------------


async def test_stats_shows_subscribers_and_failed_deliveries(
    telegram: TelegramEmulator,
    settings: Settings,
    redis: Redis,
    keys: Keys,
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
) -> None:
    env = cli_env(settings, telegram)
    subscribers = Subscribers(redis, keys)
    for chat in CHATS[:2]:
        await subscribers.subscribe(chat, chat)
    # A delivery that fails for good: the mail server refuses the recipient.
    smtp.handler.refuse_rcpt = "550 5.1.1 No such user"
    response = await post_event(client, signup_event())
    assert response.status == 202
    await wait_for(
        lambda: redis.llen(keys.dead_letters), timeout=10, what="the delivery to fail for good"
    )

    stats = await tidings(env, "stats")
    assert stats.code == 0, stats
    assert "Subscribers: 2" in stats.lines, stats
    assert "Failed deliveries: 1" in stats.lines, stats
    assert_no_secrets(stats)


# -- tidings dev polls Telegram -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tidings_dev(
    env: dict[str, str], folder: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """``tidings dev`` in its own process group, with everything it prints collected."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"), "dev", "--port", str(free_port()),
        "--data-dir", str(folder / ".tidings"),
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []

    async def collect(stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(collect(process.stdout))
    try:
        yield process, lines
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)


async def test_dev_polls_telegram_answers_start_and_stops_on_ctrl_c(
    telegram: TelegramEmulator, settings: Settings, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    # A webhook left over from production: polling has to delete it first.
    bot = telegram.bot()
    try:
        await bot.set_webhook(WEBHOOK_URL, secret_token=WEBHOOK_SECRET)
    finally:
        await bot.session.close()
    telegram.calls.clear()

    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "TIDINGS_TELEGRAM__TOKEN": TOKEN,
            "TIDINGS_TELEGRAM__API_BASE": telegram.url,
            "TIDINGS_REDIS_URL": settings.require_redis_url(),
            "TIDINGS_REDIS_PREFIX": settings.redis_prefix,
        }
    )
    async with tidings_dev(env, tmp_path) as (process, lines):

        def output() -> str:
            return "\n".join(lines)

        await wait_for(
            lambda: "Press Ctrl-C to stop." in output() or process.returncode is not None,
            timeout=60,
            what="the tidings dev banner",
        )
        assert process.returncode is None, output()
        await telegram.wait_for_calls(1, "getUpdates", timeout=30)
        methods = [c.method for c in telegram.calls]
        assert "deleteWebhook" in methods, methods
        assert methods.index("deleteWebhook") < methods.index("getUpdates"), methods
        assert telegram.webhook.url == ""
        assert all(c.ok for c in telegram.calls_of("deleteWebhook"))

        start = telegram.queue_update(telegram.message_update(CHATS[0], CHATS[0], "/start"))
        assert start is not None
        await telegram.wait_until(
            lambda: telegram.sent_to(CHATS[0]), timeout=10, what="the answer to /start"
        )
        [answer] = telegram.sent_to(CHATS[0])
        assert answer.text == text("welcome", "en")
        assert await Subscribers(redis, keys).is_subscribed(CHATS[0])
        # The bot confirmed the update (the next getUpdates has a higher offset).
        await telegram.wait_until(
            lambda: any(
                c.params.get("offset", 0) > start["update_id"]
                for c in telegram.calls_of("getUpdates")
            ),
            timeout=10,
            what="the /start update to be confirmed",
        )
        assert telegram.pending_updates == []
        # Polling never ran into a conflict (a webhook, or a second poller).
        assert not [c for c in telegram.calls_of("getUpdates") if c.status == 409]

        # Ctrl-C in the terminal: SIGINT to the whole process group.
        os.killpg(process.pid, signal.SIGINT)
        returncode = await asyncio.wait_for(process.wait(), 15)
        assert returncode == 0, output()
        assert "Traceback" not in output(), output()
        assert TOKEN_SECRET not in output(), "the bot token was printed"
    assert len(telegram.sent) == 1
