"""The middleware that tells every handler which language to answer in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram.types import TelegramObject, User

from bot.texts import language_of


async def language_middleware(
    handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
    event: TelegramObject,
    data: dict[str, Any],
) -> Any:
    """Put the person's language into ``data["lang"]`` for every handler."""
    user: User | None = data.get("event_from_user")
    override = None
    if user is not None:
        override = await data["subscribers"].language(user.id)
    data["lang"] = language_of(user.language_code if user else None, override)
    return await handler(event, data)
