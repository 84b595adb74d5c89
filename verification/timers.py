"""Timers kept as lists, one per bucket of time, instead of sorted-set entries.

A new verification needs two timers: its expiry (the sweep marks it expired and sends
the event) and its first delivery's watchdog (queue it again if no worker has taken it
by then). In a sorted set each costs ~130-145 bytes; an entry of a list costs its id and
two bytes. Both are set in the future and only ever checked, never moved: the entry is
left where it is when the verification finishes or the delivery is sent, and the check
then does nothing. Leases, retries and operators' replays, which move, stay in the
sorted sets (``Keys.due``, ``Keys.expiring``).

Buckets are read in order from a cursor (the first bucket not known to be empty); a
bucket is read once it lies wholly in the past, and nothing is added to a past bucket,
so the cursor only moves forward.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from verification.keys import Keys
from verification.scripts import as_text

#: Buckets read in one round trip.
MAX_BUCKETS = 600


@dataclass(frozen=True, slots=True)
class TimerKind:
    """One kind of timer: its name in keys and how long its buckets are."""

    name: str
    bucket_ms: int
    #: Buckets to look back when there is no cursor yet (a new deployment).
    lookback: int

    def bucket(self, at_ms: int) -> int:
        """The bucket a timer due at ``at_ms`` goes into."""
        return at_ms // self.bucket_ms


#: A pending verification's expiry: the sweep runs every minute.
EXPIRY = TimerKind("exp", 60_000, 1_500)
#: A new delivery's watchdog: seconds, so a short ``requeue_after_seconds`` holds.
REQUEUE = TimerKind("rq", 1_000, 3_600)

#: Checks one bucket's entries: (bucket key, entries) -> (entries left, results).
Check = Callable[[str, list[str]], Awaitable[tuple[int, list[str]]]]


async def drain(
    redis: Redis,
    keys: Keys,
    kind: TimerKind,
    now: int,
    check: Check,
    *,
    batch: int = 500,
    budget: int = 5_000,
) -> list[str]:
    """Check the entries of the buckets wholly in the past, oldest first; their results.

    ``check`` runs the kind's script on up to ``batch`` entries, which takes them out of
    the bucket only if they are still its first ones (another worker may have taken
    them). One call checks about ``budget`` entries at most; the next goes on from there.
    """
    current = kind.bucket(now)
    cursor = keys.timer_cursor(kind.name)
    raw = await redis.get(cursor)
    start = int(raw) if raw else current - kind.lookback
    results: list[str] = []
    checked = 0
    while start < current and checked < budget:
        end = min(current, start + MAX_BUCKETS)
        async with redis.pipeline(transaction=False) as pipe:
            for bucket in range(start, end):
                pipe.lrange(keys.timer_bucket(kind.name, bucket), 0, batch - 1)
            found = cast(list[list[str]], await pipe.execute())
        reached = end
        for bucket, first in zip(range(start, end), found, strict=True):
            key = keys.timer_bucket(kind.name, bucket)
            entries = as_text(first)
            left = 0
            while entries and checked < budget:
                left, done = await check(key, entries)
                results.extend(done)
                checked += len(entries)
                entries = as_text(await redis.lrange(key, 0, batch - 1)) if left else []
            if entries or left:
                reached = bucket
                break
        if reached > start:
            await redis.set(cursor, reached)
        if reached < end:
            break
        start = end
    return results
