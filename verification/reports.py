"""Counters read from Redis for ``/metrics``, the bot's ``/stats`` and ``tidings stats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from verification.keys import Keys
from verification.models import now_ms

DAY_MS = 86_400_000


@dataclass(slots=True)
class Snapshot:
    """Every process agrees on these, because they live in Redis."""

    stats: dict[str, str] = field(default_factory=dict)
    queue_depth: int = 0
    due: int = 0
    dead_letters: int = 0
    today: dict[str, int] = field(default_factory=dict)
    subscribers: int = 0

    def lines(self) -> list[str]:
        """A short human report (the bot's /stats and ``tidings stats``)."""
        today = ", ".join(f"{k} {v}" for k, v in sorted(self.today.items())) or "none"
        return [
            f"Subscribers: {self.subscribers}",
            f"Verifications today (UTC): {today}",
            f"Queue: {self.queue_depth} waiting, {self.due} scheduled",
            f"Failed deliveries: {self.dead_letters}",
        ]


async def read_snapshot(redis: Redis, keys: Keys) -> Snapshot:
    """All counters in one round trip."""
    day = now_ms() // DAY_MS
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.stats)
        pipe.xlen(keys.queue)
        pipe.zcard(keys.due)
        pipe.llen(keys.dead_letters)
        pipe.hgetall(f"{keys.stats}:day:{day}")
        pipe.zcard(keys.subscribers)
        stats, depth, due, dead, today, subscribers = await pipe.execute()
    return Snapshot(
        stats=cast(dict[str, str], stats),
        queue_depth=int(depth),
        due=int(due),
        dead_letters=int(dead),
        today={k: int(v) for k, v in cast(dict[str, str], today).items()},
        subscribers=int(subscribers),
    )
