"""The web app factory: one settings object in, one assembled application out."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bot.broadcasts import BroadcastStore
from bot.reminders import Reminders
from bot.subscribers import Subscribers
from config.settings import Settings
from tasks.broker import build_broker
from tasks.worker import TaskiqDeliveryQueue, Tasks, register_tasks
from verification.connections import is_unavailable, open_redis
from verification.durability import Durability
from verification.keys import Layout
from verification.service import VerificationService
from webhooks import api, assets, inbound, keys, landing, links, openapi, ops, outbox
from webhooks.metrics import HttpMetrics, RedisSnapshotCollector
from webhooks.middleware import request_middleware
from webhooks.problems import problem_middleware
from webhooks.registry import SiteRegistry
from webhooks.serving import name_server
from webhooks.tier import exposed_registry
from webhooks.tracing import tracing_middlewares

if TYPE_CHECKING:  # aiogram takes seconds to import: only apps with a bot load it
    from aiogram import Bot

logger = logging.getLogger(__name__)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Open Redis and the broker client for the app's lifetime, and close them."""
    settings = app[keys.SETTINGS]
    redis = open_redis(settings)
    broker = build_broker(settings)
    tasks = register_tasks(broker, settings)
    broker.wait_at_startup = False
    try:
        await broker.startup()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # Start anyway: requests answer 503 and /readyz declares the stream once Redis is
        # back, rather than a crash loop that a load balancer cannot tell from a bug.
        logger.warning(
            "Redis is not available at start-up; answering 503 until it is",
            extra={"redis": settings.redis_target().describe(), "error": type(exc).__name__},
        )
    app[keys.REDIS] = redis
    app[keys.BROKER] = broker
    service = VerificationService(
        redis, settings, TaskiqDeliveryQueue(broker, tasks), layout=app[keys.LAYOUT]
    )
    app[keys.SERVICE] = service
    durable = Durability.for_settings(redis, settings)
    app[keys.BROADCASTS] = BroadcastStore(redis, app[keys.REDIS_KEYS], durable)
    bot = app.get(keys.BOT)
    if bot is not None:
        await _start_bot(app, bot, service, redis, tasks)
    # Everything built so far lives as long as the process: move it out of the cyclic
    # collector's sight, so full collections stay short and do not stall requests.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await broker.shutdown()
        if bot is not None:
            await bot.session.close()
        await redis.aclose()


async def _start_bot(
    app: web.Application, bot: Bot, service: VerificationService, redis: Redis, tasks: Tasks
) -> None:
    """Give the bot's handlers their services, and learn the bot's username if unset."""
    from aiogram.exceptions import TelegramAPIError

    settings = app[keys.SETTINGS]
    redis_keys = app[keys.REDIS_KEYS]
    dispatcher = app[keys.DISPATCHER]
    dispatcher.workflow_data.update(
        settings=settings,
        service=service,
        redis=redis,
        keys=redis_keys,
        layout=app[keys.LAYOUT],
        subscribers=Subscribers(redis, redis_keys),
        broadcasts=app[keys.BROADCASTS],
        reminders=Reminders(
            redis,
            redis_keys,
            Durability.for_settings(redis, settings),
        ),
        kick_broadcast=tasks.broadcast.kiq,
    )
    if not service.bot_username:
        try:
            me = await bot.get_me()
        except TelegramAPIError as exc:
            logger.error(
                "could not ask Telegram for the bot's username; set TIDINGS_TELEGRAM__USERNAME",
                extra={"error": type(exc).__name__},
            )
        else:
            service.bot_username = me.username or ""


def create_app(settings: Settings) -> web.Application:
    """Assemble the web app: webhooks, public API, docs, operations, dev pages."""
    settings.require_secret_key()  # fail at start-up, not on the first signup
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    snapshot = RedisSnapshotCollector()
    registry.register(snapshot)

    app = web.Application(
        middlewares=[request_middleware(http_metrics), problem_middleware, *tracing_middlewares()],
        client_max_size=settings.http.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.SITES] = SiteRegistry(settings.sites, settings.webhook_tolerance_seconds)
    layout = Layout.for_settings(settings)
    app[keys.LAYOUT] = layout
    app[keys.REDIS_KEYS] = layout.home
    app[keys.METRICS] = http_metrics
    app[keys.REGISTRY] = registry
    app[keys.EXPOSED] = exposed_registry(registry, [snapshot])
    app[ops.SNAPSHOT] = snapshot
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(name_server)

    app.router.add_post("/webhooks/{site}", inbound.receive)
    app.router.add_routes(api.routes)
    app.router.add_routes(links.routes)
    app.router.add_routes(ops.routes)
    app.router.add_routes(openapi.routes)
    app.router.add_routes(landing.routes)
    app.router.add_routes(assets.routes)
    if settings.dev:
        app.router.add_routes(outbox.routes)
    if settings.telegram.token is not None:
        _mount_bot(app, settings)
    return app


def _mount_bot(app: web.Application, settings: Settings) -> None:
    """The Telegram webhook (when a secret is set; dev may poll instead)."""
    from bot.factory import create_bot, create_dispatcher
    from webhooks.telegram import TelegramWebhook

    bot = create_bot(settings)
    dispatcher = create_dispatcher(settings)
    app[keys.BOT] = bot
    app[keys.DISPATCHER] = dispatcher
    secret = settings.telegram.webhook_secret
    if secret is None:
        return
    webhook = TelegramWebhook(dispatcher, bot, secret.get_secret_value(), app[keys.REGISTRY])
    app.router.add_post(settings.telegram.webhook_path, webhook.handle)
