"""Redis memory per pending email verification: ``INFO memory`` before and after N signups.

    .venv/bin/python bench/memory.py [--signups 10000] [--shards 1]

A private redis-server (the embedded one), the real app (``create_app``) answering signed
``signup.created`` webhooks over HTTP, no worker running (so every delivery stays queued,
as a burst would leave it). Prints ``used_memory`` per signup and, for one verification,
``MEMORY USAGE`` of each of its keys and how many entries it added to the shared sets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import load_settings
from tidings.devsite import new_api_key, new_webhook_secret
from tidings.embedded_redis import EmbeddedRedis
from webhooks.app import create_app

SECRET = new_webhook_secret()
API_KEY = new_api_key()


def _headers(body: str, msg_id: str) -> dict[str, str]:
    now = int(time.time())
    from datetime import UTC, datetime

    signature = Webhook(SECRET).sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }


async def _memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def measure(signups: int, shards: int) -> dict[str, Any]:
    """Run the measurement; returns the figures."""
    folder = Path(tempfile.mkdtemp(prefix="tidings-bench-memory-"))
    server = EmbeddedRedis(folder, appendonly=False)
    await server.start()
    try:
        settings = load_settings(
            redis_url=server.url,
            redis_prefix="mem",
            secret_key=secrets.token_urlsafe(48),
            sites=[
                {"id": "shop", "name": "Shop", "webhook_secrets": [SECRET], "api_keys": [API_KEY]}
            ],
            email={"backend": "smtp", "host": "127.0.0.1", "port": 2525, "security": "none"},
            codes={"sends_per_destination": 100, "site_sends_per_hour": 10**9},
            log={"level": "WARNING"},
            # Releases before sharding have no such option: leave it out for one shard.
            **({"redis": {"shards": shards}} if shards != 1 else {}),
        )
        redis = Redis.from_url(server.url, decode_responses=True)
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            # One signup first: scripts loaded, shared hashes and sets created.
            await _post(client, "warm@example.com", "warm")
            before = await _memory(redis)
            keys_before = await redis.dbsize()
            sample_id = ""
            for n in range(signups):
                accepted = await _post(client, f"user{n}@example.com", f"u{n}")
                sample_id = sample_id or accepted["id"]
            after = await _memory(redis)
            keys_after = await redis.dbsize()
            own = {}
            async for key in redis.scan_iter(match=f"*{sample_id[4:]}*", count=10_000):
                own[key] = await redis.memory_usage(key, samples=0)
            return {
                "signups": signups,
                "shards": shards,
                "used_memory_per_signup": (after - before) / signups,
                "keys_per_signup": (keys_after - keys_before) / signups,
                "sample_keys": own,
            }
        finally:
            await client.close()
            await redis.aclose()
    finally:
        await server.stop()


async def _post(client: TestClient, email: str, user: str) -> dict[str, Any]:
    body = json.dumps(
        {
            "type": "signup.created",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {"user_id": user, "email": email, "channel": "email"},
        }
    )
    response = await client.post(
        "/webhooks/shop", data=body, headers=_headers(body, f"msg_{uuid.uuid4().hex}")
    )
    if response.status != 202:
        raise SystemExit(f"signup answered {response.status}: {await response.text()}")
    accepted: dict[str, Any] = await response.json()
    return accepted


def main() -> None:
    """Parse options, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.signups, args.shards))
    print(f"signups: {figures['signups']}  shards: {figures['shards']}")
    print(f"used_memory per pending email verification: {figures['used_memory_per_signup']:.0f} B")
    print(f"keys per signup: {figures['keys_per_signup']:.2f}")
    print("one verification's own keys (MEMORY USAGE):")
    for key, size in sorted(figures["sample_keys"].items()):
        print(f"  {size:6} B  {key}")


if __name__ == "__main__":
    main()
