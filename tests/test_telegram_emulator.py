"""The Telegram Bot API emulator, driven by the real aiogram ``Bot``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandObject, CommandStart
from aiogram.methods import GetChat
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    ChatMemberBanned,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    Update,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.emulators.telegram import TelegramEmulator

CHAT = 1001
OTHER = 1002


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(telegram: TelegramEmulator) -> AsyncIterator[Bot]:
    bot = telegram.bot()
    try:
        yield bot
    finally:
        await bot.session.close()


def keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text="Yes", callback_data="yes")],
            [InlineKeyboardButton(text="Site", url="https://example.com/")],
        ]
    )


async def test_get_me(telegram: TelegramEmulator, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.username == "tidings_test_bot"
    assert me.is_bot
    assert me.id == bot.id == 123456
    assert [c.method for c in telegram.calls] == ["getMe"]


async def test_send_message_is_recorded(telegram: TelegramEmulator, bot: Bot) -> None:
    first = await bot.send_message(CHAT, "hello")
    second = await bot.send_message(CHAT, "again")
    other = await bot.send_message(OTHER, "elsewhere")

    assert (first.message_id, second.message_id, other.message_id) == (1, 2, 1)
    assert first.text == "hello"
    assert first.chat.id == CHAT
    assert first.chat.type == "private"
    assert first.from_user is not None and first.from_user.id == bot.id
    sent = await telegram.wait_for_sent(3, timeout=1)
    assert [(m.chat_id, m.text, m.message_id) for m in sent] == [
        (CHAT, "hello", 1),
        (CHAT, "again", 2),
        (OTHER, "elsewhere", 1),
    ]
    assert [m.text for m in telegram.sent_to(CHAT)] == ["hello", "again"]
    method, params, at = telegram.calls[0]
    assert method == "sendMessage"
    assert params == {"chat_id": CHAT, "text": "hello"}
    assert at <= time.monotonic()
    # The wire format: a urlencoded form of strings.
    assert telegram.calls[0].content_type == "application/x-www-form-urlencoded"
    assert telegram.calls[0].raw == {"chat_id": str(CHAT), "text": "hello"}


async def test_inline_keyboard_round_trips(telegram: TelegramEmulator, bot: Bot) -> None:
    message = await bot.send_message(
        CHAT, "Confirm?", reply_markup=keyboard(), protect_content=True
    )

    # (aiogram objects compare their private bot too, hence model_dump)
    assert message.reply_markup is not None
    assert message.reply_markup.model_dump() == keyboard().model_dump()
    call = telegram.calls[0]
    assert isinstance(call.raw["reply_markup"], str)  # JSON text inside the form
    assert call.raw["protect_content"] == "true"
    assert call.params["protect_content"] is True
    assert telegram.sent[0].reply_markup == {
        "inline_keyboard": [
            [{"text": "Yes", "callback_data": "yes"}],
            [{"text": "Site", "url": "https://example.com/"}],
        ]
    }


async def test_reply_keyboard_is_recorded_but_not_echoed(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    markup = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="Share my phone", request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )
    message = await bot.send_message(CHAT, "Your phone?", reply_markup=markup)

    assert message.reply_markup is None  # Message.reply_markup is inline keyboards only
    assert telegram.sent[0].reply_markup == {
        "keyboard": [[{"text": "Share my phone", "request_contact": True}]],
        "resize_keyboard": True,
        "one_time_keyboard": True,
    }


async def test_bad_callback_data_is_refused(telegram: TelegramEmulator, bot: Bot) -> None:
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="x", callback_data="x" * 65)]]
    )
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(CHAT, "hi", reply_markup=markup)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(CHAT, " ")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    assert telegram.sent == []


async def test_lengths_are_counted_in_utf16_code_units(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    # 2,049 emoji are 2,049 characters to Python but 4,098 code units to Telegram.
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(CHAT, "😀" * 2049)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(CHAT, "x" * 4095 + "😀")
    assert telegram.sent == []
    await bot.send_message(CHAT, "😀" * 2048)
    await bot.send_message(CHAT, "x" * 4094 + "😀")
    assert [len(m.text or "") for m in telegram.sent] == [2048, 4095]


async def test_retry_after(telegram: TelegramEmulator, bot: Bot) -> None:
    telegram.fail_next("sendMessage", "429:7")

    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(CHAT, "hello")
    assert caught.value.retry_after == 7
    assert "retry after 7" in caught.value.message
    assert telegram.sent == []
    assert (telegram.calls[0].status, telegram.calls[0].retry_after) == (429, 7)
    assert telegram.calls[0].fault == "429:7"

    await bot.send_message(CHAT, "hello")  # the fault was used once
    assert [m.text for m in telegram.sent] == ["hello"]
    assert telegram.pending_faults == 0


async def test_faults_for_one_method_leave_others_alone(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    telegram.fail_next("copyMessage", "500")
    await bot.send_message(CHAT, "fine")
    with pytest.raises(TelegramServerError):
        await bot.copy_message(OTHER, CHAT, 1)
    assert len(telegram.sent) == 1


async def test_server_error_and_bad_request_for_any_method(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    telegram.fail_next(None, "500", "400", "400:Bad Request: message is not modified")

    with pytest.raises(TelegramServerError):
        await bot.send_message(CHAT, "a")
    with pytest.raises(TelegramBadRequest):
        await bot.get_me()
    with pytest.raises(TelegramBadRequest, match="not modified"):
        await bot.send_message(CHAT, "b")
    assert telegram.sent == []
    assert [(c.method, c.status) for c in telegram.calls] == [
        ("sendMessage", 500),
        ("getMe", 400),
        ("sendMessage", 400),
    ]


async def test_unknown_fault_is_refused(telegram: TelegramEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        telegram.fail_next(None, "slow")


async def test_blocked_chat(telegram: TelegramEmulator, bot: Bot) -> None:
    telegram.block(CHAT)

    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(CHAT, "hello")
    with pytest.raises(TelegramForbiddenError):
        await bot.copy_message(CHAT, OTHER, 5)
    await bot.send_message(OTHER, "hello")
    assert [m.chat_id for m in telegram.sent] == [OTHER]
    assert [c.status for c in telegram.calls] == [403, 403, 200]

    telegram.unblock(CHAT)
    await bot.send_message(CHAT, "back")
    assert [m.text for m in telegram.sent_to(CHAT)] == ["back"]


async def test_chat_not_found(telegram: TelegramEmulator, bot: Bot) -> None:
    telegram.not_found(CHAT)

    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(CHAT, "hello")
    assert telegram.sent == []


async def test_copy_message(telegram: TelegramEmulator, bot: Bot) -> None:
    incoming = telegram.message_update(CHAT, CHAT, "a question")["message"]

    copied = await bot.copy_message(OTHER, CHAT, incoming["message_id"], reply_markup=keyboard())

    assert copied.message_id == 1
    (sent,) = telegram.sent
    assert (sent.method, sent.chat_id, sent.message_id) == ("copyMessage", OTHER, 1)
    assert (sent.from_chat_id, sent.copied_message_id) == (CHAT, incoming["message_id"])
    assert sent.text == "a question"  # the emulator knows the source message
    assert sent.reply_markup is not None


async def test_edit_delete_answer_and_commands(telegram: TelegramEmulator, bot: Bot) -> None:
    message = await bot.send_message(CHAT, "Confirm?", reply_markup=keyboard())

    edited = await bot.edit_message_text("Done", chat_id=CHAT, message_id=message.message_id)
    assert isinstance(edited, Message)
    assert (edited.text, edited.reply_markup, edited.edit_date is not None) == ("Done", None, True)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("Done", chat_id=CHAT, message_id=message.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("Done", chat_id=CHAT, message_id=99)
    assert await bot.edit_message_text("x", inline_message_id="AgAAA") is True
    assert [e.text for e in telegram.edits] == ["Done", "x"]

    assert await bot.answer_callback_query("4382000000000000001", text="ok") is True
    assert telegram.calls_of("answerCallbackQuery")[0].params["callback_query_id"] == (
        "4382000000000000001"
    )
    assert await bot.delete_message(CHAT, message.message_id) is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(CHAT, message.message_id)
    assert telegram.deleted == [(CHAT, message.message_id)]

    commands = [
        BotCommand(command="start", description="Start"),
        BotCommand(command="stop", description="Stop"),
    ]
    assert await bot.set_my_commands(commands) is True
    assert [c.model_dump() for c in await bot.get_my_commands()] == [
        c.model_dump() for c in commands
    ]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])
    assert len(telegram.sent) == 1  # edits, deletes and answers are not sends


async def test_photo_and_document(telegram: TelegramEmulator, bot: Bot) -> None:
    photo = await bot.send_photo(CHAT, BufferedInputFile(b"\x89PNG", "p.png"), caption="look")
    document = await bot.send_document(CHAT, "https://example.com/a.pdf")

    assert photo.photo is not None and photo.caption == "look"
    assert document.document is not None
    assert telegram.calls[0].content_type == "multipart/form-data"
    first, second = telegram.sent
    assert first.file is not None and not isinstance(first.file, str)
    assert (first.file.filename, first.file.data, first.caption) == ("p.png", b"\x89PNG", "look")
    assert second.file == "https://example.com/a.pdf"


async def test_webhook_round_trip(telegram: TelegramEmulator, bot: Bot) -> None:
    assert (await bot.get_webhook_info()).url == ""

    assert await bot.set_webhook(
        "https://tidings.example/telegram/webhook",
        secret_token="s3cret-Token_1",
        allowed_updates=["message", "callback_query", "my_chat_member"],
        drop_pending_updates=True,
    )
    info = await bot.get_webhook_info()
    assert info.url == "https://tidings.example/telegram/webhook"
    assert info.allowed_updates == ["message", "callback_query", "my_chat_member"]
    assert info.pending_update_count == 0
    assert telegram.webhook.secret_token == "s3cret-Token_1"
    assert telegram.webhook.drop_pending_updates is True

    with pytest.raises(TelegramBadRequest, match="HTTPS"):
        await bot.set_webhook("http://tidings.example/hook")
    with pytest.raises(TelegramBadRequest, match="ports"):
        await bot.set_webhook("https://tidings.example:8080/hook")
    with pytest.raises(TelegramBadRequest, match="secret token"):
        await bot.set_webhook("https://tidings.example/hook", secret_token="no spaces")
    assert telegram.webhook.url == "https://tidings.example/telegram/webhook"

    assert await bot.delete_webhook(drop_pending_updates=False)
    assert (await bot.get_webhook_info()).url == ""
    assert telegram.webhook.drop_pending_updates is False


async def test_wrong_token_and_unknown_method(telegram: TelegramEmulator) -> None:
    wrong = telegram.bot(token="123456:WRONG")
    try:
        with pytest.raises(TelegramUnauthorizedError, match="Unauthorized"):
            await wrong.get_me()
    finally:
        await wrong.session.close()
    assert telegram.calls[0].token_ok is False

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{telegram.url}/bot{telegram.token}/sendPigeon") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        # Other clients: a JSON body, or GET with a query string; names are case-insensitive.
        async with http.post(
            f"{telegram.url}/bot{telegram.token}/sendmessage",
            json={"chat_id": str(CHAT), "text": "json", "reply_markup": {"remove_keyboard": True}},
        ) as response:
            body = await response.json()
            assert (response.status, body["ok"], body["result"]["text"]) == (200, True, "json")
        async with http.get(f"{telegram.url}/bot{telegram.token}/getMe") as response:
            assert (await response.json())["result"]["username"] == "tidings_test_bot"
    assert [(m.chat_id, m.text, m.reply_markup) for m in telegram.sent] == [
        (CHAT, "json", {"remove_keyboard": True})
    ]


async def test_unknown_method_through_aiogram(bot: Bot) -> None:
    with pytest.raises(TelegramNotFound):
        await bot(GetChat(chat_id=CHAT))


async def test_rate_limit(telegram: TelegramEmulator, bot: Bot) -> None:
    telegram.rate_limit(per_second=5, retry_after=3)

    results = await asyncio.gather(
        *(bot.send_message(CHAT + i, f"n{i}") for i in range(8)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, TelegramRetryAfter)]
    assert len(refused) == 3
    assert all(r.retry_after == 3 for r in refused)
    assert len(telegram.sent) == 5
    # Flood control holds until retry_after has passed: an early retry is refused again.
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(CHAT, "too early")
    assert len(telegram.sent) == 5
    assert sum(c.status == 429 for c in telegram.calls) == 4
    # Non-send methods are not limited.
    assert (await bot.get_me()).username == "tidings_test_bot"

    telegram.rate_limit(None)
    await bot.send_message(CHAT, "off")
    assert len(telegram.sent) == 6


async def test_a_sender_honouring_retry_after_gets_through(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    telegram.rate_limit(per_second=2, retry_after=1)
    started = time.monotonic()

    for i in range(3):
        while True:
            try:
                await bot.send_message(CHAT, f"n{i}")
                break
            except TelegramRetryAfter as e:
                await asyncio.sleep(e.retry_after)  # what Telegram asks for, not luck

    assert [m.text for m in telegram.sent] == ["n0", "n1", "n2"]
    assert [c.status for c in telegram.calls] == [200, 200, 429, 200]
    assert time.monotonic() - started >= 1


async def test_timeout_and_drop(telegram: TelegramEmulator) -> None:
    bot = telegram.bot(timeout=0.2)
    try:
        telegram.fail_next("sendMessage", "timeout", "drop")
        with pytest.raises(TelegramNetworkError, match="timeout"):
            await bot.send_message(CHAT, "slow")
        with pytest.raises(TelegramNetworkError):
            await bot.send_message(CHAT, "dropped")
        await bot.send_message(CHAT, "fine")
    finally:
        await bot.session.close()
    assert [m.text for m in telegram.sent] == ["fine"]
    held, dropped, fine = telegram.calls
    assert (held.fault, held.status) == ("timeout", None)  # still held; stop() releases it
    assert (dropped.fault, fine.status) == ("drop", 200)


async def test_wait_for_sent_times_out(telegram: TelegramEmulator) -> None:
    with pytest.raises(AssertionError, match="timed out"):
        await telegram.wait_for_sent(1, timeout=0.05)


async def test_reset(telegram: TelegramEmulator, bot: Bot) -> None:
    await bot.send_message(CHAT, "before")
    telegram.block(CHAT)
    telegram.fail_next(None, "500")
    telegram.rate_limit(1)
    telegram.reset()

    await bot.send_message(CHAT, "a")
    await bot.send_message(CHAT, "b")
    assert [c.status for c in telegram.calls] == [200, 200]
    assert telegram.sent[0].message_id == 1


def test_updates_are_valid_for_aiogram() -> None:
    telegram = TelegramEmulator()
    bot = Bot(telegram.token)

    def parse(data: dict[str, object]) -> Update:
        return Update.model_validate(data, context={"bot": bot})

    start = parse(telegram.message_update(CHAT, CHAT, "/start abc", first_name="Ada"))
    assert start.message is not None and start.message.text == "/start abc"
    assert start.message.entities is not None
    assert (start.message.entities[0].type, start.message.entities[0].length) == (
        "bot_command",
        6,
    )
    assert start.message.from_user is not None
    assert start.message.from_user.language_code == "en"
    assert start.message.chat.first_name == "Ada"

    contact = parse(telegram.contact_update(CHAT, CHAT, "79161234567"))
    assert contact.message is not None and contact.message.contact is not None
    assert contact.message.contact.user_id == CHAT
    assert contact.message.contact.phone_number == "79161234567"
    assert contact.update_id == start.update_id + 1
    assert contact.message.message_id == start.message.message_id + 1

    callback = parse(telegram.callback_update(CHAT, CHAT, "yes", message_id=40))
    assert callback.callback_query is not None
    assert callback.callback_query.data == "yes"
    assert isinstance(callback.callback_query.message, Message)
    assert callback.callback_query.message.message_id == 40

    reply = parse(telegram.reply_update(CHAT, CHAT, "my answer", 40))
    assert reply.message is not None and reply.message.reply_to_message is not None
    assert reply.message.reply_to_message.message_id == 40
    assert reply.message.reply_to_message.from_user is not None
    assert reply.message.reply_to_message.from_user.is_bot

    kicked = parse(telegram.my_chat_member_update(CHAT, CHAT))
    assert kicked.my_chat_member is not None
    assert isinstance(kicked.my_chat_member.new_chat_member, ChatMemberBanned)
    assert kicked.my_chat_member.old_chat_member.status == "member"
    for status in ("member", "left", "administrator"):
        assert parse(telegram.my_chat_member_update(-100123, CHAT, status)).my_chat_member


async def test_end_to_end_through_a_webhook(telegram: TelegramEmulator, bot: Bot) -> None:
    """Updates delivered to aiogram's webhook handler; its replies land in the emulator."""
    dp = Dispatcher()

    @dp.message(CommandStart(deep_link=True))
    async def start(message: Message, command: CommandObject) -> None:
        await message.answer(f"linked {command.args}", reply_markup=keyboard())

    @dp.callback_query(F.data == "yes")
    async def confirm(query: CallbackQuery) -> None:
        await query.answer("Saved")
        assert isinstance(query.message, Message)
        await query.message.edit_text("Confirmed")

    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token="s3cret").register(app, path="/telegram")
    server = TestServer(app)
    await server.start_server()
    try:
        await bot.set_webhook(
            "https://tidings.example/telegram", secret_token="s3cret", allowed_updates=["message"]
        )
        url = str(server.make_url("/telegram"))

        status, _ = await telegram.deliver(telegram.message_update(CHAT, CHAT, "/start abc"), url)
        assert status == 200
        (sent,) = await telegram.wait_for_sent(1, timeout=2)
        assert (sent.chat_id, sent.text) == (CHAT, "linked abc")

        update = telegram.callback_update(CHAT, CHAT, "yes", message_id=sent.message_id)
        assert update["callback_query"]["message"]["text"] == "linked abc"
        await telegram.deliver(update, url)
        await telegram.wait_until(lambda: telegram.edits, timeout=2, what="an edit")
        assert [e.text for e in telegram.edits] == ["Confirmed"]
        assert telegram.calls_of("answerCallbackQuery")[0].params["text"] == "Saved"

        status, _ = await telegram.deliver(update, url, secret_token="wrong")
        assert status == 401
    finally:
        await server.close()
