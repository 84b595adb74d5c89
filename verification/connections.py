"""Redis clients that survive a Redis restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TimelyConnection(Connection):
    """redis-py's connection, with socket writes bounded by ``asyncio.timeout``.

    redis-py bounds each write with ``asyncio.wait_for``, which on Python 3.11 runs the
    write in a new task: 7 % of a worker's CPU per email in the delivery benchmark. The
    bound (``socket_timeout``) and the error (``TimeoutError`` after a disconnect) stay
    the same; Python 3.12+ implements ``wait_for`` this way already.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Write ``command`` within ``socket_timeout``."""
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]  # PINGs in time
        # Without socket_timeout the base class writes inline; the bound is ours.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health=False)
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


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
        "connection_class": TimelyConnection,
    }


def open_redis(url: str) -> Redis:
    """A decoded-string client with retries, for data (not for the broker's stream)."""
    return Redis.from_url(url, decode_responses=True, socket_timeout=5, **retry_options())


async def through_outage(
    op: Callable[[], Awaitable[T]], *, within: float, what: str, log: dict[str, object]
) -> T:
    """Run ``op`` until it gets through, waiting out a Redis outage of up to ``within`` s.

    For worker steps whose loss would cost a user a resend or a duplicate: a claim whose
    reply was lost is reissued (claims carry a lease token), and an outcome already sent
    out must not be forgotten.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.2
    while True:
        try:
            return await op()
        except (RedisError, OSError):
            if loop.time() + delay > deadline:
                raise
            logger.warning(
                "Redis unreachable; retrying", extra={**log, "step": what, "in_seconds": delay}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
