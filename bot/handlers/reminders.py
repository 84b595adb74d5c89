"""``/remind``, ``/reminders``, ``/cancel`` and ``/timezone`` for people."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.reminders import Reminders, TooMany
from bot.subscribers import Subscribers
from bot.texts import text
from bot.when import WhenError, describe, parse_timezone, parse_when, zone_label
from config.settings import Settings


async def zone_of(chat_id: int, subscribers: Subscribers, settings: Settings) -> ZoneInfo:
    """The person's time zone, else the deployment's default."""
    chosen = await subscribers.timezone(chat_id)
    try:
        return parse_timezone(chosen or settings.telegram.default_timezone)
    except WhenError:
        return ZoneInfo("UTC")


async def remind(
    message: Message,
    command: CommandObject,
    lang: str,
    reminders: Reminders,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """``/remind <when> <text>``: a reminder in this chat at that time."""
    tz = await zone_of(message.chat.id, subscribers, settings)
    try:
        parsed = parse_when(command.args or "", datetime.now(UTC), tz, lang, command="remind")
    except WhenError as exc:
        await message.answer(exc.message(lang))
        return
    if not parsed.text:
        await message.answer(text("reminder_text_missing", lang))
        return
    try:
        reminder_id = await reminders.create(message.chat.id, parsed.at, parsed.text, lang)
    except TooMany:
        await message.answer(text("too_many_reminders", lang))
        return
    when = describe(parsed.at, tz, lang)
    await message.answer(text("reminder_set", lang, id=reminder_id, when=when))


async def list_reminders(
    message: Message,
    lang: str,
    reminders: Reminders,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """``/reminders``: what is still to come."""
    upcoming = await reminders.upcoming(message.chat.id)
    if not upcoming:
        await message.answer(text("no_reminders", lang))
        return
    tz = await zone_of(message.chat.id, subscribers, settings)
    lines = [text("reminders", lang)]
    lines += [f"{r.id} · {describe(r.at, tz, lang)} · {r.text}" for r in upcoming]
    await message.answer("\n".join(lines))


async def cancel(message: Message, command: CommandObject, lang: str, reminders: Reminders) -> None:
    """``/cancel <id>``: a reminder of this chat that has not fired."""
    reminder_id = (command.args or "").strip()
    if not reminder_id:
        await message.answer(text("cancel_usage", lang))
        return
    outcome = await reminders.cancel(message.chat.id, reminder_id)
    key = "reminder_canceled" if outcome == "canceled" else "reminder_not_found"
    await message.answer(text(key, lang, id=reminder_id))


async def timezone(
    message: Message,
    command: CommandObject,
    lang: str,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """``/timezone [zone]``: show or set the zone reminder times are read in."""
    wanted = (command.args or "").strip()
    if not wanted:
        tz = await zone_of(message.chat.id, subscribers, settings)
        await message.answer(text("timezone_is", lang, zone=zone_label(tz)))
        return
    try:
        tz = parse_timezone(wanted)
    except WhenError as exc:
        await message.answer(exc.message(lang))
        return
    await subscribers.set_timezone(message.chat.id, tz.key)
    await message.answer(text("timezone_set", lang, zone=zone_label(tz)))


def register(router: Router) -> None:
    """Add the reminder commands to the people's router (before its catch-all)."""
    router.message.register(remind, Command("remind"))
    router.message.register(list_reminders, Command("reminders"))
    router.message.register(cancel, Command("cancel"))
    router.message.register(timezone, Command("timezone"))
