"""Counters read from Redis for ``/metrics``, the bot's ``/stats`` and ``tidings stats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from verification.keys import Keys, Layout
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
        totals = {k: v for k, v in self.today.items() if ":" not in k}
        today = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none"
        return [
            f"Subscribers: {self.subscribers}",
            f"Verifications today (UTC): {today}",
            f"Queue: {self.queue_depth} waiting, {self.due} scheduled",
            f"Failed deliveries: {self.dead_letters}",
        ]


def _layout(where: Layout | Keys) -> Layout:
    return where if isinstance(where, Layout) else Layout(where.prefix)


def _add(total: dict[str, int], counts: dict[str, str]) -> None:
    for name, value in counts.items():
        total[name] = total.get(name, 0) + int(value)


async def read_snapshot(redis: Redis, where: Layout | Keys) -> Snapshot:
    """All counters, summed over every shard, in one round trip per node."""
    layout = _layout(where)
    day = now_ms() // DAY_MS
    async with redis.pipeline(transaction=False) as pipe:
        for keys in layout.shards:
            pipe.hgetall(keys.stats)
            pipe.xlen(keys.queue)
            pipe.zcard(keys.due)
            pipe.llen(keys.dead_letters)
            pipe.hgetall(keys.stats_day(day))
        pipe.zcard(layout.home.subscribers)
        *per_shard, subscribers = await pipe.execute()
    stats: dict[str, int] = {}
    today: dict[str, int] = {}
    snapshot = Snapshot(subscribers=int(subscribers))
    for index in range(0, len(per_shard), 5):
        shard_stats, depth, due, dead, shard_today = per_shard[index : index + 5]
        _add(stats, cast(dict[str, str], shard_stats))
        _add(today, cast(dict[str, str], shard_today))
        snapshot.queue_depth += int(depth)
        snapshot.due += int(due)
        snapshot.dead_letters += int(dead)
    snapshot.stats = {name: str(value) for name, value in stats.items()}
    snapshot.today = today
    return snapshot


async def day_report(redis: Redis, where: Layout | Keys, day: int) -> list[str]:
    """What happened on UTC day ``day`` (days since the epoch), for the admins' daily report."""
    layout = _layout(where)
    start, end = day * DAY_MS, (day + 1) * DAY_MS - 1
    async with redis.pipeline(transaction=False) as pipe:
        for keys in layout.shards:
            pipe.hgetall(keys.stats_day(day))
        pipe.zcount(layout.home.subscribers, start, end)
        pipe.zcount(layout.home.mail_subscribers, start, end)
        *days, telegram, mail = await pipe.execute()
    counts: dict[str, int] = {}
    for shard_day in days:
        _add(counts, cast(dict[str, str], shard_day))
    statuses = sorted(k for k in counts if ":" not in k)
    lines = [f"Report for {_date(day)} (UTC)"]
    for status in statuses:
        by_channel = ", ".join(
            f"{k.split(':', 1)[1]} {v}"
            for k, v in sorted(counts.items())
            if k.startswith(f"{status}:")
        )
        lines.append(
            f"Verifications {status}: {counts[status]}" + (f" ({by_channel})" if by_channel else "")
        )
    if not statuses:
        lines.append("Verifications: none")
    failed = {
        k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("deliveries_failed:")
    }
    failures = ", ".join(f"{channel} {n}" for channel, n in sorted(failed.items())) or "none"
    lines.append(f"Delivery failures: {failures}")
    lines.append(f"New subscribers: Telegram {int(telegram)}, email {int(mail)}")
    return lines


def _date(day: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(day * DAY_MS / 1000, UTC).date().isoformat()
