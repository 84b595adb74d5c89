"""The web app factory: one settings object in, one assembled application out."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from config.settings import Settings
from tasks.broker import build_broker
from tasks.worker import TaskiqDeliveryQueue, register_tasks
from verification.connections import open_redis
from verification.keys import Keys
from verification.service import VerificationService
from webhooks import api, inbound, keys, links, openapi, ops, outbox
from webhooks.metrics import HttpMetrics, RedisSnapshotCollector
from webhooks.middleware import request_middleware
from webhooks.problems import problem_middleware
from webhooks.registry import SiteRegistry


async def _resources(app: web.Application) -> AsyncIterator[None]:
    """Open Redis and the broker client for the app's lifetime, and close them."""
    settings = app[keys.SETTINGS]
    redis = open_redis(settings.require_redis_url())
    broker = build_broker(settings)
    tasks = register_tasks(broker, settings)
    await broker.startup()
    app[keys.REDIS] = redis
    app[keys.BROKER] = broker
    app[keys.SERVICE] = VerificationService(redis, settings, TaskiqDeliveryQueue(broker, tasks))
    # Everything built so far lives as long as the process: move it out of the cyclic
    # collector's sight, so full collections stay short and do not stall requests.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        await broker.shutdown()
        await redis.aclose()


def create_app(settings: Settings) -> web.Application:
    """Assemble the web app: webhooks, public API, docs, operations, dev pages."""
    settings.require_secret_key()  # fail at start-up, not on the first signup
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    snapshot = RedisSnapshotCollector()
    registry.register(snapshot)

    app = web.Application(
        middlewares=[request_middleware(http_metrics), problem_middleware],
        client_max_size=settings.http.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.SITES] = SiteRegistry(settings.sites, settings.webhook_tolerance_seconds)
    app[keys.REDIS_KEYS] = Keys(settings.redis_prefix)
    app[keys.METRICS] = http_metrics
    app[keys.REGISTRY] = registry
    app[ops.SNAPSHOT] = snapshot
    app.cleanup_ctx.append(_resources)

    app.router.add_post("/webhooks/{site}", inbound.receive)
    app.router.add_routes(api.routes)
    app.router.add_routes(links.routes)
    app.router.add_routes(ops.routes)
    app.router.add_routes(openapi.routes)
    if settings.dev:
        app.router.add_routes(outbox.routes)
    return app
