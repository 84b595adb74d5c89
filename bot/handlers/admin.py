"""Admin commands: broadcasts and stats, for the configured Telegram ids only.

Everyone else falls through to the people's router, whose catch-all answers "unknown
command", so the commands' existence is not revealed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from redis.asyncio import Redis

from bot.broadcasts import BroadcastStore, TooLong
from bot.handlers.language import language_middleware
from bot.handlers.reminders import zone_of
from bot.limits import callback_data
from bot.subscribers import Subscribers
from bot.texts import text
from bot.when import WhenError, describe, parse_when
from config.settings import Settings
from verification.keys import Layout
from verification.reports import read_snapshot

logger = logging.getLogger(__name__)

#: Queues a broadcast's first stretch on the workers.
KickBroadcast = Callable[[str], Awaitable[object]]


async def broadcast(
    message: Message,
    command: CommandObject,
    lang: str,
    broadcasts: BroadcastStore,
    redis: Redis,
    layout: Layout,
) -> None:
    """``/broadcast <text>``, or ``/broadcast`` as a reply to any message (copied as is)."""
    assert message.from_user is not None  # noqa: S101 - the admin filter needs it
    source = message.reply_to_message
    if source is not None:
        bid = await broadcasts.draft(
            message.from_user.id, from_chat=source.chat.id, message_id=source.message_id
        )
        await message.bot.copy_message(  # type: ignore[union-attr]
            message.chat.id, source.chat.id, source.message_id
        )
    elif command.args:
        try:
            bid = await broadcasts.draft(message.from_user.id, text=command.args)
        except TooLong as exc:
            await message.answer(_too_long(exc, lang))
            return
        await message.answer(command.args)
    else:
        await message.answer(
            "Usage: /broadcast <text>, or reply /broadcast to the message to send."
        )
        return
    audience = (await read_snapshot(redis, layout)).subscribers
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="✅ Send", callback_data=callback_data(f"bc:go:{bid}")),
                InlineKeyboardButton(text="Cancel", callback_data=callback_data(f"bc:no:{bid}")),
            ]
        ]
    )
    await message.answer(
        f"Preview above. Send broadcast {bid} to {audience} subscribers?",
        reply_markup=keyboard,
    )


def _too_long(exc: TooLong, lang: str) -> str:
    return text("broadcast_too_long", lang, limit=exc.limit, length=exc.length)


async def decide(
    query: CallbackQuery, broadcasts: BroadcastStore, kick_broadcast: KickBroadcast
) -> None:
    """Confirm or cancel a previewed broadcast."""
    assert query.data is not None  # noqa: S101 - the filter matched it
    _, choice, bid = query.data.split(":")
    await query.answer()
    message = query.message if isinstance(query.message, Message) else None
    if choice == "no":
        state = await broadcasts.cancel(bid)
        if message is not None:
            await message.edit_text(f"Broadcast {bid}: {state.replace('_', ' ')}.")
        return
    state, total = await broadcasts.start(bid)
    if state != "queued":
        if message is not None:
            await message.edit_text(f"Broadcast {bid} is {state}; nothing to do.")
        return
    if message is not None:
        await broadcasts.set_progress_message(bid, message.chat.id, message.message_id)
        await message.edit_text(f"Broadcast {bid}: sending to {total} subscribers…")
    await kick_broadcast(bid)
    logger.info("broadcast started", extra={"broadcast": bid, "total": total})


async def recent(message: Message, broadcasts: BroadcastStore) -> None:
    """The latest broadcasts with their state and counts."""
    found = await broadcasts.recent()
    await message.answer("\n".join(b.summary() for b in found) or "No broadcasts yet.")


async def cancel(message: Message, command: CommandObject, broadcasts: BroadcastStore) -> None:
    """Stop a broadcast midway (or before it starts)."""
    bid = (command.args or "").strip()
    if not bid:
        await message.answer("Usage: /cancel_broadcast <id> (see /broadcasts).")
        return
    state = await broadcasts.cancel(bid)
    answers = {
        "canceled": f"Broadcast {bid} canceled.",
        "not_found": f"No broadcast {bid}.",
    }
    await message.answer(answers.get(state, f"Broadcast {bid} is {state.replace('_', ' ')}."))


async def broadcast_at(
    message: Message,
    command: CommandObject,
    lang: str,
    broadcasts: BroadcastStore,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """``/broadcast_at <when> <text>``: a broadcast that starts later (cancelable till then)."""
    assert message.from_user is not None  # noqa: S101 - the admin filter needs it
    tz = await zone_of(message.chat.id, subscribers, settings)
    try:
        parsed = parse_when(command.args or "", datetime.now(UTC), tz, "en", command="broadcast_at")
    except WhenError as exc:
        await message.answer(exc.message("en"))
        return
    if not parsed.text:
        await message.answer(
            "Usage: /broadcast_at <when> <text>, e.g. /broadcast_at tomorrow 9:00 Hello"
        )
        return
    try:
        bid = await broadcasts.draft(message.from_user.id, text=parsed.text)
    except TooLong as exc:
        await message.answer(_too_long(exc, lang))
        return
    await broadcasts.schedule(bid, parsed.at)
    reply = await message.answer(
        f"Broadcast {bid} scheduled for {describe(parsed.at, tz, 'en')}; "
        f"/cancel_broadcast {bid} stops it."
    )
    # Its progress and report will edit this message.
    await broadcasts.set_progress_message(bid, reply.chat.id, reply.message_id)


async def stats(message: Message, redis: Redis, layout: Layout) -> None:
    """Subscribers, today's verifications, queue depth, failed deliveries."""
    snapshot = await read_snapshot(redis, layout)
    await message.answer("\n".join(snapshot.lines()))


def build_router(admin_ids: list[int]) -> Router:
    """The admin router; its filters let only ``admin_ids`` in."""
    router = Router(name="admin")
    admins = set(admin_ids)
    router.message.filter(F.from_user.id.in_(admins))
    router.callback_query.filter(F.from_user.id.in_(admins))
    # Inner: only admins' messages cost the language lookup.
    router.message.middleware(language_middleware)
    router.message.register(broadcast, Command("broadcast"))
    router.callback_query.register(decide, F.data.regexp(r"^bc:(go|no):bc_[0-9a-f]{12}$"))
    router.message.register(recent, Command("broadcasts"))
    router.message.register(cancel, Command("cancel_broadcast"))
    router.message.register(stats, Command("stats"))
    router.message.register(broadcast_at, Command("broadcast_at"))
    return router
