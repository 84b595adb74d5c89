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


# The least Redis work a signup needs (as the shared peerbench floor does): the replay
# guard, the verification with its code hash, and the job, in one small script.
FLOOR_SCRIPT = """
local seen = redis.call('GET', KEYS[1])
if seen then return {'replay', seen} end
redis.call('HSET', KEYS[2], 'site', ARGV[1], 'user_id', ARGV[2], 'email', ARGV[3],
  'code_hash', ARGV[4], 'status', 'pending', 'expires_at', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[1], ARGV[7], 'PX', ARGV[8])
redis.call('HINCRBY', KEYS[4], 'verifications:created', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000000, '*', 'v', ARGV[7], 'c', ARGV[9])
return {'created'}
"""


def floor_app(cfg: dict[str, Any]) -> web.Application:
    """No framework: verify, parse, one small script that stores and queues, answer 202.

    The least this job needs, so the ratio shows every cost Tidings adds, Redis work
    included (more keys, limits, indexes, the taskiq message), not only Python's.
    """
    prefix = cfg["prefix"]
    site_id = cfg["site_id"]
    key = base64.b64decode(cfg["webhook_secret"].removeprefix("whsec_"))
    code_key = hashlib.sha256(cfg["secret_key"].encode()).digest()
    ttl_ms, replay_ms = 600_000, 86_400_000
    state: dict[str, Any] = {}

    async def resources(app: web.Application) -> AsyncIterator[None]:
        redis = Redis.from_url(cfg["redis_url"], decode_responses=True)
        state["redis"] = redis
        state["create"] = redis.register_script(FLOOR_SCRIPT)
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
        code = f"{secrets.randbelow(10**6):06d}"
        code_hash = hmac.new(code_key, f"{vid}:{code}".encode(), hashlib.sha256).hexdigest()
        # The code travels sealed: a one-time pad from a keyed hash of the id.
        pad = hmac.new(code_key, vid.encode(), hashlib.sha256).digest()
        sealed = bytes(a ^ b for a, b in zip(code.encode(), pad, strict=False)).hex()
        expires_at = now + ttl_ms
        reply = await state["create"](
            keys=[
                f"{prefix}:wh:{site_id}:{msg_id}",
                f"{prefix}:v:{vid}",
                f"{prefix}:queue",
                f"{prefix}:stats",
            ],
            args=[site_id, user_id, email, code_hash, expires_at, ttl_ms, vid, replay_ms, sealed],
        )
        if reply[0] == "replay":
            return web.json_response({"id": reply[1], "status": "pending"}, status=202)
        return web.json_response(
            {
                "id": vid,
                "object": "verification",
                "status": "pending",
                "expires_at": _iso(expires_at),
            },
            status=202,
        )

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
