"""The data layout stored in Redis: checked at start-up, moved by ``tidings migrate``.

Layout 1 (before shards) kept every key under ``<prefix>:``. Layout 2 with one untagged
shard is the same key for key, so such data is adopted in place: the layout record is
written and nothing moves. A sharded layout (several shards, or a Redis Cluster) keeps
keys under hash-tagged shard prefixes; data of layout 1 must be moved there first, into
shard 0, where every id without shard digits belongs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from verification.keys import LAYOUT_VERSION, Keys, Layout

logger = logging.getLogger(__name__)

#: Index keys one of which exists wherever layout 1 holds any data (no SCAN needed).
_LEGACY_MARKERS = (
    "queue",
    "v:expiring",
    "deliveries:due",
    "events:due",
    "sched:data",
    "tg:subs",
    "mail:subs",
    "bc:recent",
    "stats",
    "outbox",
)


class LayoutMismatch(Exception):
    """The data in Redis is in another layout than the settings describe (one line)."""


@dataclass(frozen=True, slots=True)
class StoredLayout:
    """What the layout record in Redis says, or that there is none."""

    version: int | None
    shards: int | None
    legacy_data: bool


async def read_layout(redis: Redis, layout: Layout) -> StoredLayout:
    """The stored layout record, and whether layout-1 keys exist under the prefix."""
    record = cast(dict[str, str], await redis.hgetall(layout.version_key))
    legacy = Keys(layout.prefix)
    found = False
    for marker in _LEGACY_MARKERS:
        if await redis.exists(f"{legacy.prefix}:{marker}"):
            found = True
            break
    version = int(record["version"]) if record.get("version") else None
    shards = int(record["shards"]) if record.get("shards") else None
    return StoredLayout(version, shards, found)


def _is_legacy_compatible(layout: Layout) -> bool:
    """Whether this layout's keys are layout 1's keys (one shard, no hash tag)."""
    return layout.count == 1 and not layout.tagged


async def ensure_layout(redis: Redis, layout: Layout) -> None:
    """Check the stored layout against ``layout``; adopt or stamp it when that is safe.

    Raises :class:`LayoutMismatch` (a configuration error) when the data must be
    migrated first or was written for another shard count.
    """
    stored = await read_layout(redis, layout)
    if stored.version is not None:
        if stored.version > LAYOUT_VERSION:
            raise LayoutMismatch(
                f"the data in Redis is in layout {stored.version}, newer than this "
                f"release's {LAYOUT_VERSION}: upgrade Tidings"
            )
        if stored.shards != layout.count:
            raise LayoutMismatch(
                f"TIDINGS_REDIS__SHARDS: the data in Redis is spread over {stored.shards} "
                f"shard(s), the settings say {layout.count}; set it back (a change of shard "
                "count moves every key: not supported in place)"
            )
        if stored.version < LAYOUT_VERSION:
            # This release reads every record the older layout holds; from now on it
            # writes records older releases cannot read, so they must refuse to start.
            await _stamp(redis, layout)
            logger.warning(
                "data layout upgraded in place; earlier releases now refuse to start",
                extra={"from_version": stored.version, "to_version": LAYOUT_VERSION},
            )
        return
    legacy_here = stored.legacy_data and not _is_legacy_compatible(layout)
    if legacy_here:
        raise LayoutMismatch(
            "the data in Redis is in layout 1 (before shards) and these settings use "
            f"{layout.count} shard(s): stop every role and run `tidings migrate` first"
        )
    await _stamp(redis, layout)
    if stored.legacy_data:
        logger.warning("adopted the data of layout 1 in place (one shard, same keys)")


async def _stamp(redis: Redis, layout: Layout) -> None:
    await redis.hset(
        layout.version_key, mapping={"version": LAYOUT_VERSION, "shards": layout.count}
    )


async def migrate(redis: Redis, layout: Layout, *, source: Redis | None = None) -> int:
    """Move layout-1 keys into shard 0 of ``layout``; returns how many moved.

    ``source``: another Redis holding the layout-1 data (e.g. the single server a
    cluster replaces); its keys are copied with DUMP/RESTORE (TTLs kept) and left as
    they were. Without it, the keys are renamed in place on this (single) server.
    Run it with every role stopped. Streams keep their consumer group and pending
    entries, so unfinished tasks go on after the move.
    """
    stored = await read_layout(redis, layout)
    if stored.version is not None and source is None:
        return 0  # already in a layout of this release
    if _is_legacy_compatible(layout) and source is None:
        await _stamp(redis, layout)
        return 0
    origin = source or redis
    old = Keys(layout.prefix).prefix + ":"
    new = layout.home.prefix + ":"
    moved = 0
    async for raw in origin.scan_iter(match=f"{_glob_escape(old)}*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key == f"{old}layout":
            continue
        target = new + key.removeprefix(old)
        if source is None:
            await redis.rename(key, target)
        else:
            ttl = int(await origin.pttl(key))
            payload = await origin.dump(key)
            if payload is None:
                continue  # expired meanwhile
            await redis.restore(target, max(ttl, 0), payload, replace=True)
        moved += 1
    await _stamp(redis, layout)
    logger.warning("migrated layout 1 into shard 0", extra={"keys": moved})
    return moved


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
