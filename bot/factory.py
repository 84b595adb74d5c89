"""The bot's ``Bot`` and ``Dispatcher``, assembled from the settings."""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.handlers.admin import build_router as build_admin_router
from bot.handlers.people import build_router as build_people_router
from config.settings import ConfigError, Settings


def create_bot(settings: Settings) -> Bot:
    """A ``Bot`` for the configured token and API server; its HTTP session opens lazily."""
    token = settings.telegram.token
    if token is None:
        raise ConfigError("TIDINGS_TELEGRAM__TOKEN: required for the Telegram bot")
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram.api_base))
    return Bot(token.get_secret_value(), session=session)


def create_dispatcher(settings: Settings) -> Dispatcher:
    """The dispatcher with every router; services are added as workflow data at start-up."""
    dispatcher = Dispatcher(name="tidings")
    # Order matters: admin commands first (their filter lets only admins through), then
    # people's commands, whose last handler answers any unknown command.
    dispatcher.include_router(build_admin_router(settings.telegram.admin_ids))
    dispatcher.include_router(build_people_router())
    return dispatcher
