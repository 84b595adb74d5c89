"""``/remind``, ``/reminders``, ``/cancel`` and ``/timezone`` for people."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.limits import callback_data, pages, shorten
from bot.reminders import Reminder, Reminders, TextTooLong, TooMany
from bot.subscribers import Subscribers
from bot.texts import text
from bot.when import WhenError, describe, parse_timezone, parse_when, zone_label
from config.settings import Settings

#: How much of each reminder's text ``/reminders`` shows, so a page holds several.
PREVIEW = 200


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
    except TextTooLong as exc:
        await message.answer(text("reminder_too_long", lang, limit=exc.limit, length=exc.length))
        return
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
    """``/reminders``: what is still to come, a page at a time."""
    upcoming = await reminders.upcoming(message.chat.id)
    if not upcoming:
        await message.answer(text("no_reminders", lang))
        return
    tz = await zone_of(message.chat.id, subscribers, settings)
    body, keyboard = _page(upcoming, tz, lang, 0)
    await message.answer(body, reply_markup=keyboard)


async def reminders_page(
    query: CallbackQuery,
    lang: str,
    reminders: Reminders,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """The "More" and "Back" buttons under ``/reminders``: that page, in place."""
    assert query.data is not None  # noqa: S101 - the filter matched it
    await query.answer()
    if not isinstance(query.message, Message):
        return
    chat_id = query.message.chat.id
    upcoming = await reminders.upcoming(chat_id)
    if not upcoming:
        await query.message.edit_text(text("no_reminders", lang))
        return
    tz = await zone_of(chat_id, subscribers, settings)
    body, keyboard = _page(upcoming, tz, lang, int(query.data.rsplit(":", 1)[1]))
    await query.message.edit_text(body, reply_markup=keyboard)


def _page(
    upcoming: list[Reminder], tz: ZoneInfo, lang: str, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    """Page ``page`` of the list (the last one if the list got shorter) and its buttons."""
    lines = [f"{r.id} · {describe(r.at, tz, lang)} · {shorten(r.text, PREVIEW)}" for r in upcoming]
    total = len(lines)
    # The numbered header is at its longest when every number is the total.
    widest = text("reminders_page", lang, first=total, last=total, total=total)
    grouped = pages(widest, lines)
    if len(grouped) == 1:
        return "\n".join([text("reminders", lang), *lines]), None
    page = min(page, len(grouped) - 1)
    first = sum(len(group) for group in grouped[:page]) + 1
    last = first + len(grouped[page]) - 1
    header = text("reminders_page", lang, first=first, last=last, total=total)
    row = []
    if page > 0:
        row.append(_page_button(text("page_previous", lang), page - 1))
    if page < len(grouped) - 1:
        row.append(_page_button(text("page_next", lang), page + 1))
    return "\n".join([header, *grouped[page]]), InlineKeyboardMarkup(inline_keyboard=[row])


def _page_button(label: str, page: int) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=label, callback_data=callback_data(f"rem:p:{page}"))


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
    router.callback_query.register(reminders_page, F.data.regexp(r"^rem:p:\d{1,3}$"))
    router.message.register(cancel, Command("cancel"))
    router.message.register(timezone, Command("timezone"))
