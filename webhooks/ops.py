"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from taskiq import AsyncBroker
from taskiq_redis import RedisStreamBroker

from webhooks import keys
from webhooks.metrics import RedisSnapshotCollector

routes = web.RouteTableDef()

SNAPSHOT = web.AppKey("snapshot", RedisSnapshotCollector)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    return web.json_response({"status": "ok"})


async def _broker_ready(redis: Redis, broker: AsyncBroker, streams: list[str]) -> bool:
    """Every shard's task stream exists; declared again if Redis came back without data."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.exists(stream)
        missing = [s for s, found in zip(streams, await pipe.execute(), strict=True) if not found]
    if not missing:
        return True
    if not isinstance(broker, RedisStreamBroker):
        return False
    # A Redis restarted without persistence lost the streams and the workers' consumer
    # group; declare them again as the broker does at start-up (idempotent), rather than
    # answering "starting" until every web process is restarted.
    for stream in missing:
        try:
            await redis.xgroup_create(
                stream, broker.consumer_group_name, id=broker.consumer_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    return all([bool(await redis.exists(stream)) for stream in missing])


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """A write to Redis would succeed now, and the broker's stream exists.

    The probe is a write, not a PING: a demoted master, a replica, a master without its
    ``min-replicas-to-write`` and a cluster that is down all answer PING.
    """
    redis = request.app[keys.REDIS]
    layout = request.app[keys.LAYOUT]
    streams = [shard.queue for shard in layout.shards]
    try:
        async with asyncio.timeout(2):
            # One probe per shard: on a cluster each master that holds shards is asked.
            async with redis.pipeline(transaction=False) as pipe:
                for shard in layout.shards:
                    pipe.set(shard.readiness, "1", px=10_000)
                await pipe.execute()
            broker_ready = await _broker_ready(redis, request.app[keys.BROKER], streams)
    except (RedisError, OSError, TimeoutError):
        return web.json_response(
            {"status": "unavailable", "redis": False}, status=503, headers={"Retry-After": "5"}
        )
    status = 200 if broker_ready else 503
    return web.json_response(
        {"status": "ok" if broker_ready else "starting", "redis": True, "broker": broker_ready},
        status=status,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; domain counters come from Redis so every process agrees."""
    app = request.app
    # On a Redis error the last snapshot is served, marked stale (tidings_redis_up 0):
    # HTTP metrics still matter during an outage.
    await app[SNAPSHOT].refresh(app[keys.REDIS], app[keys.LAYOUT])
    body = generate_latest(app[keys.EXPOSED])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
