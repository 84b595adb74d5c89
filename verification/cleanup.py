"""Housekeeping for what Redis does not expire by itself (index lists and sets)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis

from verification.keys import Keys, Layout, delivery_verification
from verification.models import now_ms

#: Broadcasts are listed for this long (their own records expire after the same time).
BROADCAST_LIST_MS = 30 * 86_400_000


async def clean_up(redis: Redis, where: Layout | Keys) -> dict[str, int]:
    """Drop index entries whose records have expired (every shard); how many, per index."""
    layout = where if isinstance(where, Layout) else Layout(where.prefix)
    removed = {"dead_letters": 0, "failed_events": 0}
    for keys in layout.shards:
        removed["dead_letters"] += await _drop_gone(
            redis, keys.dead_letters, functools.partial(_delivery_records, keys)
        )
        removed["failed_events"] += await _drop_gone(redis, keys.events_failed, keys.event_by_id)
    cutoff = now_ms() - BROADCAST_LIST_MS
    home = layout.home
    removed["broadcasts"] = int(await redis.zremrangebyscore(home.broadcasts, "-inf", cutoff))
    return removed


def _delivery_records(keys: Keys, delivery_id: str) -> list[str]:
    """Where a delivery's record may be: its verification's hash, or its own (before 2026-12)."""
    vid = delivery_verification(delivery_id)
    own = keys.delivery(delivery_id)
    return [own] if vid is None else [own, keys.verification(vid)]


async def _drop_gone(
    redis: Redis, list_key: str, record_keys: Callable[[str], str | list[str]]
) -> int:
    """Remove ids from ``list_key`` whose record (any of ``record_keys(id)``) is gone."""
    ids = cast(list[str], await redis.lrange(list_key, 0, -1))
    if not ids:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for item in ids:
            where = record_keys(item)
            pipe.exists(*([where] if isinstance(where, str) else where))
        exists = await pipe.execute()
    gone = [item for item, alive in zip(ids, exists, strict=True) if not alive]
    if gone:
        async with redis.pipeline(transaction=False) as pipe:
            for item in gone:
                pipe.lrem(list_key, 0, item)
            await pipe.execute()
    return len(gone)
