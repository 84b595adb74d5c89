"""One benchmark target in its own process: the real Tidings app, or the bare-aiohttp floor.

Started by ``bench/intake.py`` as ``python -m bench.intake_server``; its configuration
comes as JSON in the ``BENCH_INTAKE_CONFIG`` environment variable. It prints ``READY``
once listening and stops cleanly on SIGTERM, printing ``STATS {json}`` (garbage
collector pauses since ``READY``) first. With ``profile`` set it runs cProfile from
``READY`` until stop and writes the stats to that path.
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import gc
import hashlib
import hmac
import json
import os
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

HOUR_MS = 3_600_000
TOLERANCE_SECONDS = 300
# Length of the sealed payload Tidings stores for {"code", "link"} (AES-GCM, "v1." + base64url):
# the same bytes in Redis.
SEALED_LEN = 167


# --------------------------------------------------------------------------- Tidings


def tidings_app(cfg: dict[str, Any]) -> web.Application:
    """The real app, assembled exactly as ``tidings web`` does, logging at WARNING."""
    from config.logging import setup_logging
    from config.settings import load_settings
    from webhooks.app import create_app

    settings = load_settings(
        redis_url=cfg["redis_url"],
        redis_prefix=cfg["prefix"],
        secret_key=cfg["secret_key"],
        sites=[
            {
                "id": cfg["site_id"],
                "name": "Bench Shop",
                "webhook_secrets": [cfg["webhook_secret"]],
                "api_keys": [cfg["api_key"]],
            }
        ],
        # Every request uses a fresh address, so only the site-wide limit could trip.
        codes={"sends_per_destination": 100, "site_sends_per_hour": 1_000_000_000},
        log={"level": "WARNING", "format": "json"},
        http={"host": "127.0.0.1", "port": cfg["port"]},
        # None: the topology's default (durable acceptance on where there are replicas).
        redis={"durable_replicas": cfg.get("durable_replicas")},
    )
    setup_logging(settings)
    return create_app(settings)


# --------------------------------------------------------------------------- floor


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def floor_app(cfg: dict[str, Any]) -> web.Application:
    """No framework: verify, parse, the same create.lua (which also XADDs), answer 202."""
    from verification.scripts import _source  # the exact script text Tidings runs

    prefix = cfg["prefix"]
    site_id = cfg["site_id"]
    key = base64.b64decode(cfg["webhook_secret"].removeprefix("whsec_"))
    index_key = hashlib.sha256(cfg["secret_key"].encode()).digest()
    queue = f"{prefix}:queue"
    ttl_ms, window_ms, replay_ms, retention_ms = 600_000, 600_000, 86_400_000, 86_400_000
    state: dict[str, Any] = {}

    def digest(value: str) -> str:
        return hmac.new(index_key, value.encode(), hashlib.sha256).hexdigest()[:32]

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # The same client options as webhooks/app.py: the timeouts cost redis-py CPU too.
        redis = Redis.from_url(
            cfg["redis_url"],
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        state["redis"] = redis
        state["create"] = redis.register_script(_source("create"))
        yield
        await redis.aclose()

    def problem(status: int, detail: str) -> web.Response:
        return web.json_response({"status": status, "detail": detail}, status=status)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if request.match_info["site"] != site_id or not (msg_id and stamp and signatures):
            return problem(401, "no matching signature")
        try:
            if abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
                return problem(401, "timestamp outside tolerance")
        except ValueError:
            return problem(401, "bad timestamp")
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = base64.b64encode(mac)
        if not any(
            hmac.compare_digest(expected, sig.partition(",")[2].encode())
            for sig in signatures.split(" ")
        ):
            return problem(401, "no matching signature")
        try:
            event = json.loads(body)
            data = event["data"]
            email, user_id = data["email"], data["user_id"]
        except (ValueError, KeyError, TypeError):
            return problem(400, "bad body")

        now = int(time.time() * 1000)
        vid = f"ver_{secrets.token_hex(16)}"
        # Tidings' delivery ids name their verification (verification/keys.py): same size.
        did = f"dlv_{vid.removeprefix('ver_')}_{secrets.token_hex(4)}"
        code = f"{secrets.randbelow(10**6):06d}"
        expires_at = now + ttl_ms
        verification = {
            "id": vid,
            "site": site_id,
            "user_id": user_id,
            "channel": "email",
            "destination": email,
            "locale": data.get("locale") or "en",
            "status": "pending",
            "code_hash": hashlib.sha256(f"{vid}:{code}".encode()).hexdigest(),
            "attempts_left": "5",
            "sends": "1",
            "created_at": str(now),
            "updated_at": str(now),
            "expires_at": str(expires_at),
            "last_send_at": str(now),
            "metadata": json.dumps(data.get("metadata")),
            "subscribe": "",
            "remind_after": "",
            "email": email,
            "phone": "",
            # Same size as Tidings' keyed hash of the magic link.
            "link_hash": hashlib.sha256(f"{vid}:link".encode()).hexdigest(),
        }
        delivery = {
            "purpose": "code",
            "id": did,
            "verification_id": vid,
            "channel": "email",
            "send_no": "1",
            "status": "queued",
            "attempts": "0",
            "created_at": str(now),
            "secret": secrets.token_urlsafe(90)[:SEALED_LEN],
        }
        created = _iso(now)
        resource = {
            "id": vid,
            "object": "verification",
            "site": site_id,
            "user_id": user_id,
            "channel": "email",
            "destination": f"{email[:1]}***@{email.rpartition('@')[2]}",
            "status": "pending",
            "attempts_left": 5,
            "sends": 1,
            "locale": verification["locale"],
            "created_at": created,
            "expires_at": _iso(expires_at),
            "metadata": data.get("metadata"),
            "deliveries": [
                {
                    "id": did,
                    "channel": "email",
                    "status": "queued",
                    "attempts": 0,
                    "provider_id": None,
                    "error": None,
                    "created_at": created,
                    "finished_at": None,
                    "next_attempt_at": None,
                }
            ],
            "telegram_link": None,
        }
        # What taskiq's kiq() puts on the stream: the same shape and size (~177 bytes);
        # create.lua appends it to the stream in the same script, as Tidings does.
        message = {
            "task_id": uuid.uuid4().hex,
            "task_name": "tidings.deliver",
            "labels": {},
            "labels_types": {},
            "args": [did],
            "kwargs": {},
        }
        hour = now // HOUR_MS
        reply = await state["create"](
            keys=[
                f"{prefix}:wh:{site_id}:{msg_id}",
                f"{prefix}:v:{vid}",
                f"{prefix}:rl:dest:{digest(email.lower())}",
                f"{prefix}:rl:site:{site_id}:{hour}",
                f"{prefix}:user:{site_id}:{digest(f'{site_id}:{user_id}')}",
                f"{prefix}:d:{did}",
                f"{prefix}:deliveries:due",
                f"{prefix}:v:{vid}:deliveries",
                f"{prefix}:v:expiring",
                f"{prefix}:stats",
                queue,
                f"{prefix}:rl:prefix:-:{hour}",
                f"{prefix}:sched:data",
                f"{prefix}:sched:due",
                f"{prefix}:stats:day:{now // 86_400_000}",
            ],
            args=[
                now,
                replay_ms,
                json.dumps(resource),
                json.dumps(verification),
                json.dumps(delivery),
                ttl_ms + retention_ms,
                window_ms,
                100,
                1_000_000_000,
                (hour + 1) * HOUR_MS - now,
                did,
                now + 120_000,
                vid,
                expires_at,
                json.dumps(message),
                1_000_000,
                0,  # no phone-prefix limit (email)
                0,
                "",  # no remind_after
                "",
                0,
            ],
        )
        if reply[0] == "replay":
            return web.Response(text=reply[1], status=202, content_type="application/json")
        if reply[0] == "limited":
            return problem(429, "rate limited")
        return web.json_response(resource, status=202)

    app = web.Application()
    app.cleanup_ctx.append(resources)
    app.router.add_post("/webhooks/{site}", receive)
    return app


# --------------------------------------------------------------------------- process


class GcPauses:
    """Collections and their pauses per generation, from gc.callbacks (cheap: per collection)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append((time.perf_counter() - self.started) * 1000)

    def report(self) -> dict[str, Any]:
        return {
            f"gen{g}": {"count": len(v), "total_ms": round(sum(v), 1), "max_ms": round(max(v), 2)}
            for g, v in self.pauses.items()
            if v
        }


async def serve(cfg: dict[str, Any]) -> None:
    app = tidings_app(cfg) if cfg["target"] == "tidings" else floor_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg["port"], backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    profiler = cProfile.Profile() if cfg.get("profile") else None
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    print("READY", flush=True)
    if profiler is not None:
        profiler.enable()
    await stop.wait()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(cfg["profile"])
    gc.callbacks.remove(pauses)
    print("STATS " + json.dumps({"gc": pauses.report()}), flush=True)
    await runner.cleanup()


def main() -> None:
    asyncio.run(serve(json.loads(os.environ["BENCH_INTAKE_CONFIG"])))


if __name__ == "__main__":
    main()
