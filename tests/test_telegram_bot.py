"""The Telegram bot over its real webhook, talking to a real Bot API emulator.

Updates are POSTed to the app's ``/telegram/webhook`` exactly as Telegram posts them, and
what people see is read back from the emulator: the messages the bot sent, their buttons,
and the edits it made. The webhook runs in the foreground, so when ``deliver`` returns the
update has been handled completely.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bot.reminders import Reminders
from config.settings import ConfigError, Settings
from tests.conftest import get_verification, signup, site
from tests.emulators.telegram import SentMessage, TelegramEmulator
from verification.keys import Keys
from verification.models import now_ms
from webhooks.app import create_app
from webhooks.telegram import CALL_TRIES, SECRET_HEADER, update_seen_key

WEBHOOK_SECRET = "s3cret-token"
WEBHOOK_PATH = "/telegram/webhook"
ADMIN = 999
ALICE = 1001
BOB = 1002
CAROL = 1003
PHONE = "+8613800138000"


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


def telegram_settings(telegram: TelegramEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "token": telegram.token,
        "api_base": telegram.url,
        "webhook_secret": WEBHOOK_SECRET,
        "admin_ids": [ADMIN],
        **extra,
    }


@pytest.fixture
def settings(make_settings: Callable[..., Settings], telegram: TelegramEmulator) -> Settings:
    """The bot on the emulator; the bot's username is learned with getMe at start-up."""
    return make_settings(
        telegram=telegram_settings(telegram), sites=[site(channels=["email", "telegram"])]
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.require_redis_url(), decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


async def post_update(
    telegram: TelegramEmulator,
    client: TestClient,
    update: dict[str, Any],
    secret: str = WEBHOOK_SECRET,
) -> int:
    """Deliver ``update`` to the app's webhook as Telegram does; the HTTP status."""
    status, _ = await telegram.deliver(
        update, str(client.make_url(WEBHOOK_PATH)), secret_token=secret
    )
    return status


async def say(
    telegram: TelegramEmulator,
    client: TestClient,
    chat: int,
    text: str,
    language_code: str | None = "en",
) -> SentMessage:
    """``chat`` writes ``text`` to the bot; the bot's one answer in that chat."""
    before = len(telegram.sent_to(chat))
    update = telegram.message_update(chat, chat, text, language_code=language_code)
    assert await post_update(telegram, client, update) == 200
    answers = telegram.sent_to(chat)[before:]
    assert len(answers) == 1, [m.text for m in answers]
    return answers[0]


async def press(
    telegram: TelegramEmulator,
    client: TestClient,
    chat: int,
    message: SentMessage,
    data: str,
    user: int | None = None,
) -> None:
    """``user`` (the chat's person by default) presses the button ``data`` under ``message``."""
    update = telegram.callback_update(chat, user or chat, data, message.message_id)
    assert await post_update(telegram, client, update) == 200


def buttons(message: SentMessage) -> dict[str, str]:
    """Inline buttons of a message: text -> callback data."""
    assert message.reply_markup is not None, f"no buttons under {message.text!r}"
    rows = message.reply_markup["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def button(message: SentMessage, label: str) -> str:
    """The callback data of the button whose text contains ``label``."""
    found = [data for text, data in buttons(message).items() if label in text]
    assert len(found) == 1, f"no single {label!r} button in {buttons(message)}"
    return found[0]


def edits_of(telegram: TelegramEmulator, chat: int, message: SentMessage) -> list[str]:
    return [
        str(e.text)
        for e in telegram.edits
        if e.chat_id == chat and e.message_id == message.message_id
    ]


def payload_of(link: str, telegram: TelegramEmulator) -> str:
    match = re.fullmatch(rf"https://t\.me/{telegram.username}\?start=(?P<payload>.+)", link)
    assert match, link
    payload = match.group("payload")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", payload), payload
    return payload


async def telegram_signup(
    client: TestClient, telegram: TelegramEmulator, **data: Any
) -> tuple[str, str]:
    """A signed signup on the telegram channel: (verification id, deep-link payload)."""
    body = await signup(client, channel="telegram", **data)
    assert body["channel"] == "telegram" and body["status"] == "pending"
    return body["id"], payload_of(body["telegram_link"], telegram)


async def status(client: TestClient, vid: str) -> str:
    return str((await get_verification(client, vid))["status"])


async def is_subscriber(redis: Redis, keys: Keys, chat: int) -> bool:
    return await redis.zscore(keys.subscribers, str(chat)) is not None


# -- the webhook -------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "wrong-token", WEBHOOK_SECRET + "x"])
async def test_webhook_without_the_secret_token_is_refused_and_not_handled(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys, secret: str
) -> None:
    update = telegram.message_update(ALICE, ALICE, "/start")
    assert await post_update(telegram, client, update, secret=secret) == 401
    assert telegram.sent == []
    assert not await is_subscriber(redis, keys, ALICE)
    # The same update with the right token is handled: the refusal was the token's doing.
    assert await post_update(telegram, client, update) == 200
    assert len(telegram.sent_to(ALICE)) == 1
    assert await is_subscriber(redis, keys, ALICE)


def test_a_bot_token_without_a_webhook_secret_stops_start_up(
    make_settings: Callable[..., Settings], telegram: TelegramEmulator
) -> None:
    with pytest.raises(ConfigError, match="TIDINGS_TELEGRAM__WEBHOOK_SECRET"):
        make_settings(telegram=telegram_settings(telegram, webhook_secret=None))


async def test_no_webhook_route_without_a_webhook_secret_in_development(
    aiohttp_client: Any, make_settings: Callable[..., Settings], telegram: TelegramEmulator
) -> None:
    settings = make_settings(
        dev=True,
        telegram=telegram_settings(telegram, webhook_secret=None),
        sites=[site(channels=["email", "telegram"])],
    )
    client = await aiohttp_client(create_app(settings))
    update = telegram.message_update(ALICE, ALICE, "/start")
    for secret in ("", "anything"):
        status_code = await post_update(telegram, client, update, secret=secret)
        assert status_code in (404, 405)
    assert telegram.sent == []


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def updates_counted(client: TestClient, outcome: str) -> float:
    """``tidings_telegram_updates_total`` for ``outcome``, as Prometheus scrapes it."""
    response = await client.get("/metrics")
    assert response.status == 200
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if (
                sample.name == "tidings_telegram_updates_total"
                and sample.labels.get("outcome") == outcome
            ):
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"  \n",
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"update_id": "seven"}',
        b'{"message": {"text": "/help"}}',
        b'{"update_id": 5, "message": {"chat": 1}}',
        b"[" * 30_000 + b"]" * 30_000,
        b'{"update_id": 1' + b"0" * 5_000 + b"}",
    ],
    ids=[
        "empty",
        "blank",
        "not-json",
        "not-utf8",
        "array",
        "bad-update-id",
        "no-update-id",
        "bad-message",
        "deeply-nested",
        "huge-integer",
    ],
)
async def test_a_malformed_update_is_answered_200_logged_once_and_counted(
    client: TestClient, telegram: TelegramEmulator, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    response = await client.post(
        WEBHOOK_PATH,
        data=body,
        headers={SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"},
    )
    # Any other answer makes Telegram deliver it again, and hold the chat's next updates.
    assert response.status == 200, await response.text()
    assert warnings_in(caplog) == ["malformed Telegram update ignored"]
    assert await updates_counted(client, "malformed") == 1
    assert telegram.sent == []
    assert "/help" in str((await say(telegram, client, ALICE, "/help")).text)


async def test_an_update_of_a_kind_newer_than_the_bot_is_ignored(
    client: TestClient, telegram: TelegramEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    update = {"update_id": 4242, "purchased_paid_media_v99": {"secret": "do-not-log-me"}}
    assert await post_update(telegram, client, update) == 200
    assert warnings_in(caplog) == []
    assert "do-not-log-me" not in caplog.text
    assert await updates_counted(client, "unknown") == 1
    assert telegram.sent == []


@pytest.mark.parametrize(
    "fault",
    [
        "400:Bad Request: chat not found",
        "400:Bad Request: message is too long",
        "403:Forbidden: bot was blocked by the user",
    ],
)
async def test_a_permanent_telegram_error_is_logged_and_answered_200(
    client: TestClient, telegram: TelegramEmulator, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    update = telegram.message_update(ALICE, ALICE, "/help")
    telegram.fail_next("sendMessage", fault)
    assert await post_update(telegram, client, update) == 200
    assert warnings_in(caplog) == ["Telegram refused the bot's answer to an update"]
    [refused] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert refused.description == fault.partition(":")[2]  # type: ignore[attr-defined]
    assert await updates_counted(client, "refused") == 1
    # Telegram does not deliver it again, so the chat's next update is not held behind it.
    assert telegram.sent_to(ALICE) == []
    assert "/help" in str((await say(telegram, client, ALICE, "/help")).text)


async def test_a_passing_telegram_failure_is_retried_in_place_and_never_repeated(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    vid, payload = await telegram_signup(client, telegram)
    update = telegram.message_update(ALICE, ALICE, f"/start {payload}")
    telegram.fail_next("sendMessage", "500", "429:1")
    assert await post_update(telegram, client, update) == 200
    [prompt] = telegram.sent_to(ALICE)
    assert "Confirm your sign-up at Acme Shop" in str(prompt.text)
    # Telegram delivering the same update again (a lost answer, say) does nothing more.
    assert await post_update(telegram, client, update) == 200
    assert telegram.sent_to(ALICE) == [prompt]
    assert await updates_counted(client, "duplicate") == 1
    await press(telegram, client, ALICE, prompt, button(prompt, "Confirm"))
    assert await status(client, vid) == "approved"


async def test_a_redelivered_remind_whose_confirmation_failed_stores_one_reminder(
    client: TestClient,
    telegram: TelegramEmulator,
    redis: Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    update = telegram.message_update(ALICE, ALICE, "/remind 2h water the plants")
    telegram.fail_next("sendMessage", *["500"] * CALL_TRIES)
    assert await post_update(telegram, client, update) == 200
    assert warnings_in(caplog) == [
        "the bot's answer to an update could not be sent; it is not tried again"
    ]
    # Telegram delivers it twice more; neither repeats what the first one did.
    for _ in range(2):
        assert await post_update(telegram, client, update) == 200
    upcoming = await Reminders(redis, keys).upcoming(ALICE)
    assert [r.text for r in upcoming] == ["water the plants"]
    assert (
        await updates_counted(client, "unsent"),
        await updates_counted(client, "duplicate"),
    ) == (
        1,
        2,
    )
    # The record of the update lasts a day, as long as Telegram keeps an update.
    bot_id = int(telegram.token.partition(":")[0])
    ttl = await redis.ttl(update_seen_key(keys, bot_id, update["update_id"]))
    assert 86_000 < ttl <= 86_400


# -- deep-link verification ----------------------------------------------------------------


async def test_deep_link_confirm_end_to_end(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    vid, payload = await telegram_signup(client, telegram, user_id="u-tg")
    resource = await get_verification(client, vid)
    assert resource["telegram_link"] == f"https://t.me/{telegram.username}?start={payload}"

    prompt = await say(telegram, client, ALICE, f"/start {payload}")
    assert prompt.text == "Confirm your sign-up at Acme Shop?"
    labels = buttons(prompt)
    assert len(labels) == 2 and any("Confirm" in label for label in labels)
    assert "Not me" in labels
    assert await status(client, vid) == "pending"  # opening the link is not confirming

    # Someone else opening the same link before it is confirmed gets nowhere.
    other = await say(telegram, client, BOB, f"/start {payload}")
    assert "another Telegram account" in str(other.text)
    assert other.reply_markup is None
    assert await status(client, vid) == "pending"

    await press(telegram, client, ALICE, prompt, button(prompt, "Confirm"))
    assert await status(client, vid) == "approved"
    [edited] = edits_of(telegram, ALICE, prompt)
    assert edited == "✅ Confirmed. You can go back to Acme Shop."
    assert await is_subscriber(redis, keys, ALICE)
    assert not await is_subscriber(redis, keys, BOB)

    again = await say(telegram, client, ALICE, f"/start {payload}")
    assert again.text == "This sign-up is already confirmed."
    assert await status(client, vid) == "approved"


async def test_not_me_cancels_the_verification(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    vid, payload = await telegram_signup(client, telegram)
    prompt = await say(telegram, client, ALICE, f"/start {payload}")
    await press(telegram, client, ALICE, prompt, button(prompt, "Not me"))
    assert await status(client, vid) == "canceled"
    [edited] = edits_of(telegram, ALICE, prompt)
    assert "canceled" in edited
    # The Confirm button under the same message cannot bring it back.
    await press(telegram, client, ALICE, prompt, button(prompt, "Confirm"))
    assert await status(client, vid) == "canceled"


async def test_an_expired_link_says_so(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    vid, payload = await telegram_signup(client, telegram)
    await redis.hset(keys.verification(vid), "expires_at", now_ms() - 1000)
    answer = await say(telegram, client, ALICE, f"/start {payload}")
    assert answer.text == "This link has expired. Ask the site for a new one."
    assert answer.reply_markup is None
    assert await status(client, vid) == "expired"


async def test_a_tampered_link_is_not_valid(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    vid, payload = await telegram_signup(client, telegram)
    last = payload[-1]
    tampered = [
        payload[:-1] + ("A" if last != "A" else "B"),  # another MAC
        payload[:-1],  # truncated
        payload + "x",  # too long
        "0" * 32 + payload[32:],  # another verification's head with this MAC
    ]
    for bad in tampered:
        answer = await say(telegram, client, ALICE, f"/start {bad}")
        assert answer.text == "This link is not valid. Please use the link the site gave you."
    assert await status(client, vid) == "pending"
    assert not await is_subscriber(redis, keys, ALICE)
    # The real link still works afterwards.
    prompt = await say(telegram, client, ALICE, f"/start {payload}")
    assert prompt.text == "Confirm your sign-up at Acme Shop?"


# -- verification by shared contact --------------------------------------------------------


def contact_button(message: SentMessage) -> dict[str, Any]:
    assert message.reply_markup is not None and "keyboard" in message.reply_markup
    [[key]] = message.reply_markup["keyboard"]
    return dict(key)


@pytest.mark.parametrize(
    ("phone", "shared"),
    [
        (PHONE, PHONE),
        (PHONE, PHONE.lstrip("+")),  # Telegram sends a user's own number without "+"
        ("+447911123456", "+447911123456"),
        ("+447911123456", "447911123456"),  # not the deployment's default region (CN)
    ],
)
async def test_sharing_the_signup_phone_confirms_it(
    client: TestClient, telegram: TelegramEmulator, phone: str, shared: str
) -> None:
    vid, payload = await telegram_signup(client, telegram, phone=phone)
    ask = await say(telegram, client, ALICE, f"/start {payload}")
    assert "share your phone number" in str(ask.text)
    key = contact_button(ask)
    assert key["request_contact"] is True
    assert await status(client, vid) == "pending"

    update = telegram.contact_update(ALICE, ALICE, shared)
    assert await post_update(telegram, client, update) == 200
    answer = telegram.sent_to(ALICE)[-1]
    assert answer.text == "✅ Confirmed. You can go back to Acme Shop.", answer.text
    assert answer.reply_markup == {"remove_keyboard": True}
    assert await status(client, vid) == "approved"


async def test_a_wrong_or_foreign_contact_does_not_confirm(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    vid, payload = await telegram_signup(client, telegram, phone=PHONE)
    await say(telegram, client, ALICE, f"/start {payload}")

    # Another number of the sender's own.
    await post_update(telegram, client, telegram.contact_update(ALICE, ALICE, "8613900139000"))
    assert "does not match" in str(telegram.sent_to(ALICE)[-1].text)
    assert await status(client, vid) == "pending"

    # Someone else's contact card with the right number, forwarded or picked.
    for update in (
        telegram.contact_update(ALICE, ALICE, PHONE, contact_user_id=BOB),
        telegram.contact_update(ALICE, ALICE, PHONE, with_user_id=False),
    ):
        assert await post_update(telegram, client, update) == 200
        assert "not someone else's contact" in str(telegram.sent_to(ALICE)[-1].text)
        assert await status(client, vid) == "pending"

    # The person's own contact still confirms.
    await post_update(telegram, client, telegram.contact_update(ALICE, ALICE, PHONE))
    assert await status(client, vid) == "approved"


async def test_a_contact_nobody_asked_for_confirms_nothing(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    vid, _ = await telegram_signup(client, telegram, phone=PHONE)
    # Bob never opened the link: his contact with Alice's signup phone proves nothing.
    await post_update(telegram, client, telegram.contact_update(BOB, BOB, PHONE))
    assert "nothing to confirm" in str(telegram.sent_to(BOB)[-1].text)
    assert await status(client, vid) == "pending"


# -- people's commands -----------------------------------------------------------------------


async def test_help_stop_and_start(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    help_text = (await say(telegram, client, ALICE, "/help")).text or ""
    for command in ("/start", "/stop", "/language", "/help"):
        assert command in help_text

    welcome = await say(telegram, client, ALICE, "/start")
    assert "subscribed" in str(welcome.text)
    assert await is_subscriber(redis, keys, ALICE)

    stopped = await say(telegram, client, ALICE, "/stop")
    assert "unsubscribed" in str(stopped.text)
    assert not await is_subscriber(redis, keys, ALICE)

    await say(telegram, client, ALICE, "/start")
    assert await is_subscriber(redis, keys, ALICE)


async def test_language_choice_switches_later_texts_to_chinese(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    offer = await say(telegram, client, ALICE, "/language")
    assert offer.text == "Choose your language:"
    assert set(buttons(offer)) == {"English", "简体中文"}
    await press(telegram, client, ALICE, offer, buttons(offer)["简体中文"])
    assert edits_of(telegram, ALICE, offer) == ["语言已设置为简体中文。"]

    # The Telegram app still says English; the person's choice wins.
    assert "退订" in str((await say(telegram, client, ALICE, "/help")).text)
    assert "无法识别" in str((await say(telegram, client, ALICE, "/nonsense")).text)
    _, payload = await telegram_signup(client, telegram)
    prompt = await say(telegram, client, ALICE, f"/start {payload}")
    assert prompt.text == "确认您在Acme Shop的注册吗？"
    assert "不是我" in buttons(prompt)

    # And back to English.
    offer = await say(telegram, client, ALICE, "/language")
    assert offer.text == "请选择语言："
    await press(telegram, client, ALICE, offer, buttons(offer)["English"])
    assert "unsubscribe" in str((await say(telegram, client, ALICE, "/help")).text)


@pytest.mark.parametrize("language_code", ["zh-hans", "zh", "zh-CN"])
async def test_chinese_telegram_app_gets_chinese_texts(
    client: TestClient, telegram: TelegramEmulator, language_code: str
) -> None:
    help_text = await say(telegram, client, CAROL, "/help", language_code=language_code)
    assert "退订" in str(help_text.text)
    welcome = await say(telegram, client, CAROL, "/start", language_code=language_code)
    assert "您已订阅" in str(welcome.text)


async def test_people_cannot_broadcast_or_read_stats(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    unknown = (await say(telegram, client, ALICE, "/nonsense")).text
    assert unknown == "I don't know that command. /help lists what I can do."
    for command in ("/broadcast hi", "/broadcasts", "/stats", "/cancel_broadcast bc_0123456789ab"):
        answer = await say(telegram, client, ALICE, command)
        assert answer.text == unknown, command
    # A forged confirm button does nothing either.
    update = telegram.callback_update(ALICE, ALICE, "bc:go:bc_0123456789ab")
    assert await post_update(telegram, client, update) == 200
    assert await redis.zcard(keys.broadcasts) == 0
    assert telegram.edits == []


async def test_admin_stats_report_the_subscribers(
    client: TestClient, telegram: TelegramEmulator
) -> None:
    for chat in (ALICE, BOB, CAROL):
        await say(telegram, client, chat, "/start")
    await say(telegram, client, BOB, "/stop")
    report = (await say(telegram, client, ADMIN, "/stats")).text or ""
    assert "Subscribers: 2" in report.splitlines()
    # Admins are people too: their own commands fall through to the people's handlers.
    assert "/language" in str((await say(telegram, client, ADMIN, "/help")).text)


async def test_blocking_the_bot_unsubscribes(
    client: TestClient, telegram: TelegramEmulator, redis: Redis, keys: Keys
) -> None:
    await say(telegram, client, ALICE, "/start")
    await say(telegram, client, BOB, "/start")
    sent_before = len(telegram.sent)
    update = telegram.my_chat_member_update(ALICE, ALICE, "kicked")
    assert await post_update(telegram, client, update) == 200
    assert not await is_subscriber(redis, keys, ALICE)
    assert await is_subscriber(redis, keys, BOB)
    assert len(telegram.sent) == sent_before  # nothing is said to someone who blocked the bot
