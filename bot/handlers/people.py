"""What anyone can do: deep-link verification, subscription, language, help."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.filters.chat_member_updated import KICKED, ChatMemberUpdatedFilter
from aiogram.types import (
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot.handlers import reminders as reminder_commands
from bot.handlers.language import language_middleware
from bot.limits import callback_data
from bot.subscribers import Subscribers
from bot.texts import LANGUAGES, text
from config.settings import Settings
from config.sites import SiteConfig
from verification.phones import normalise_phone
from verification.service import TelegramAnswer, VerificationService

logger = logging.getLogger(__name__)

_STATE_TEXT = {
    "approved": "already",
    "used": "already",
    "expired": "expired",
    "not_found": "invalid",
    "other_user": "other_user",
}


def _site(settings: Settings, site_id: str) -> SiteConfig | None:
    return next((s for s in settings.sites if s.id == site_id), None)


def _site_name(settings: Settings, site_id: str) -> str:
    site = _site(settings, site_id)
    return site.display_name if site else site_id


def _confirm_keyboard(verification_id: str, lang: str) -> InlineKeyboardMarkup:
    head = verification_id.removeprefix("ver_")
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=text("confirm_yes", lang), callback_data=callback_data(f"v:ok:{head}")
                ),
                InlineKeyboardButton(
                    text=text("confirm_no", lang), callback_data=callback_data(f"v:no:{head}")
                ),
            ]
        ]
    )


def _contact_keyboard(lang: str) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=text("share_phone_button", lang), request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


async def start_with_link(
    message: Message,
    command: CommandObject,
    lang: str,
    service: VerificationService,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """``/start <payload>`` from a signup's ``telegram_link``: link this chat to it."""
    user = message.from_user
    if user is None:
        return
    answer = await service.telegram(command.args or "", "link", user.id, message.chat.id)
    if answer.state != "linked":
        key = _STATE_TEXT.get(answer.state, "closed")
        await message.answer(text(key, lang))
        return
    await subscribers.subscribe(message.chat.id, user.id)
    site = _site_name(settings, answer.site)
    if answer.phone:
        # The signup has a phone: sharing this account's own contact proves it, no SMS.
        site_config = _site(settings, answer.site)
        policy = settings.policy_for(site_config) if site_config else settings.codes
        ttl_ms = policy.ttl_seconds * 1000
        await subscribers.await_contact(message.chat.id, answer.verification_id, ttl_ms)
        await message.answer(
            text("share_phone", lang, site=site), reply_markup=_contact_keyboard(lang)
        )
        return
    await message.answer(
        text("confirm", lang, site=site),
        reply_markup=_confirm_keyboard(answer.verification_id, lang),
    )


async def confirm(
    query: CallbackQuery,
    lang: str,
    service: VerificationService,
    settings: Settings,
) -> None:
    """The Confirm / Not me buttons under a linked signup."""
    assert query.data is not None  # noqa: S101 - the filter matched it
    _, choice, head = query.data.split(":")
    chat_id = query.message.chat.id if query.message else query.from_user.id
    action = "approve" if choice == "ok" else "decline"
    answer = await service.telegram(f"ver_{head}", action, query.from_user.id, chat_id, "button")
    await query.answer()
    reply = _outcome_text(answer, lang, settings)
    if query.message is not None and isinstance(query.message, Message):
        await query.message.edit_text(reply)
    else:
        await query.bot.send_message(chat_id, reply)  # type: ignore[union-attr]


def _outcome_text(answer: TelegramAnswer, lang: str, settings: Settings) -> str:
    if answer.state == "approved":
        logger.info(
            "verification approved in Telegram", extra={"verification": answer.verification_id}
        )
        return text("approved", lang, site=_site_name(settings, answer.site))
    if answer.state == "declined":
        return text("declined", lang)
    if answer.state == "phone_mismatch":
        return text("phone_mismatch", lang)
    return text(_STATE_TEXT.get(answer.state, "closed"), lang)


async def contact(
    message: Message,
    lang: str,
    service: VerificationService,
    subscribers: Subscribers,
    settings: Settings,
) -> None:
    """A shared contact: the person's own phone, equal to the signup's, verifies it."""
    user = message.from_user
    shared = message.contact
    if user is None or shared is None:
        return
    pending = await subscribers.awaited_contact(message.chat.id)
    if pending is None:
        await message.answer(text("no_pending", lang), reply_markup=ReplyKeyboardRemove())
        return
    if shared.user_id != user.id:
        # A forwarded or picked contact of someone else proves nothing about this person.
        await message.answer(text("not_own_contact", lang))
        return
    # Telegram gives the account's number in international form, often without the "+".
    raw = shared.phone_number.strip()
    if raw[:1].isdigit():
        raw = "+" + raw
    try:
        phone = normalise_phone(raw, settings.sms.default_region)
    except ValueError:
        await message.answer(text("phone_mismatch", lang))
        return
    answer = await service.telegram(pending, "approve", user.id, message.chat.id, "contact", phone)
    if answer.state != "phone_mismatch":
        await subscribers.contact_received(message.chat.id)
    await message.answer(_outcome_text(answer, lang, settings), reply_markup=ReplyKeyboardRemove())


async def start(message: Message, lang: str, subscribers: Subscribers) -> None:
    """Plain ``/start``: subscribe (again) and say hello."""
    if message.from_user is None:
        return
    await subscribers.subscribe(message.chat.id, message.from_user.id)
    await message.answer(text("welcome", lang))


async def help_(message: Message, lang: str) -> None:
    """The commands."""
    await message.answer(text("help", lang))


async def stop(message: Message, lang: str, subscribers: Subscribers) -> None:
    """Unsubscribe from announcements."""
    await subscribers.unsubscribe(message.chat.id)
    await message.answer(text("stopped", lang))


async def language(message: Message, lang: str) -> None:
    """Offer the languages."""
    buttons = [
        InlineKeyboardButton(text=name, callback_data=callback_data(f"lang:{code}"))
        for code, name in LANGUAGES.items()
    ]
    await message.answer(
        text("choose_language", lang), reply_markup=InlineKeyboardMarkup(inline_keyboard=[buttons])
    )


async def set_language(query: CallbackQuery, subscribers: Subscribers) -> None:
    """Remember the chosen language."""
    assert query.data is not None  # noqa: S101 - the filter matched it
    chosen = query.data.split(":")[1]
    await subscribers.set_language(query.from_user.id, chosen)
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(text("language_set", chosen))


async def blocked(event: ChatMemberUpdated, subscribers: Subscribers) -> None:
    """The person blocked the bot: no more announcements."""
    await subscribers.unsubscribe(event.chat.id)


async def unknown_command(message: Message, lang: str) -> None:
    """Any other command (admin commands too, for people who are not admins)."""
    await message.answer(text("unknown", lang))


def build_router() -> Router:
    """People's router: deep links first, the catch-all for unknown commands last."""
    router = Router(name="people")
    # The bot talks to people one to one; group chats get nothing.
    router.message.filter(F.chat.type == ChatType.PRIVATE)
    router.message.outer_middleware(language_middleware)
    router.callback_query.outer_middleware(language_middleware)
    router.message.register(start_with_link, CommandStart(deep_link=True))
    router.callback_query.register(
        confirm, F.data.regexp(r"^v:(ok|no):[0-9a-f]{32}(?:[0-9a-f]{2})?$")
    )
    router.message.register(contact, F.contact)
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(stop, Command("stop"))
    router.message.register(language, Command("language"))
    router.callback_query.register(set_language, F.data.regexp(r"^lang:(en|zh)$"))
    router.my_chat_member.register(blocked, ChatMemberUpdatedFilter(member_status_changed=KICKED))
    reminder_commands.register(router)
    router.message.register(unknown_command, F.text.startswith("/"))
    return router
