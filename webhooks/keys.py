"""Typed keys for what the app keeps between requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from taskiq import AsyncBroker

from bot.broadcasts import BroadcastStore
from config.settings import Settings
from verification.keys import Keys, Layout
from verification.service import VerificationService
from webhooks.metrics import HttpMetrics
from webhooks.registry import SiteRegistry

if TYPE_CHECKING:
    from aiogram import Bot, Dispatcher

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
BROKER = web.AppKey("broker", AsyncBroker)
SERVICE = web.AppKey("service", VerificationService)
SITES = web.AppKey("sites", SiteRegistry)
# The home shard's keys (bot-wide state, pages' rate limits, the dev outbox).
REDIS_KEYS = web.AppKey("redis_keys", Keys)
LAYOUT = web.AppKey("layout", Layout)
METRICS = web.AppKey("metrics", HttpMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
# What /metrics serves: REGISTRY, or in a web tier every server's metrics summed.
EXPOSED = web.AppKey("exposed", CollectorRegistry)
BROADCASTS = web.AppKey("broadcasts", BroadcastStore)
# Typed for the checker only: aiogram is imported where a bot is configured.
BOT: web.AppKey[Bot] = web.AppKey("bot")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
