"""Redis clients that survive a Redis restart."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def retry_options() -> dict[str, Any]:
    """Connection options that retry a command on a dead pooled connection.

    After Redis restarts, every pooled connection is dead but looks open; without a retry
    the first command on each one fails. Commands that reach this path are idempotent or
    guarded (scripts check state, webhook ids, leases), so a retry is safe.
    """
    return {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        "health_check_interval": 30,
        "socket_connect_timeout": 2,
        "socket_keepalive": True,
    }


def open_redis(url: str) -> Redis:
    """A decoded-string client with retries, for data (not for the broker's stream)."""
    return Redis.from_url(url, decode_responses=True, socket_timeout=5, **retry_options())
