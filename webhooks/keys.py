"""Typed keys for what the app keeps between requests."""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from taskiq import AsyncBroker

from bot.broadcasts import BroadcastStore
from config.settings import Settings
from verification.keys import Keys
from verification.service import VerificationService
from webhooks.metrics import HttpMetrics
from webhooks.registry import SiteRegistry

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
BROKER = web.AppKey("broker", AsyncBroker)
SERVICE = web.AppKey("service", VerificationService)
SITES = web.AppKey("sites", SiteRegistry)
REDIS_KEYS = web.AppKey("redis_keys", Keys)
METRICS = web.AppKey("metrics", HttpMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
BROADCASTS = web.AppKey("broadcasts", BroadcastStore)
BOT = web.AppKey("bot", Bot)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
