"""Broadcasts in Redis: drafts, their audience, progress and outcome counters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from taskiq import ScheduledTask

from bot.limits import MESSAGE_MAX, telegram_length
from verification.durability import Durability
from verification.keys import Keys
from verification.models import iso, now_ms
from verification.schedule_records import stage_schedule
from verification.scripts import Scripts, as_text

#: Counters of a broadcast's outcomes, in report order.
OUTCOMES = ("sent", "blocked", "failed", "unknown", "skipped")
#: The task that starts a scheduled broadcast (registered by ``tasks.worker``).
START_BROADCAST = "tidings.start_broadcast"
#: States in which a broadcast may still send.
ACTIVE = ("queued", "running")
_KEEP_MS = 30 * 86_400_000
#: A worker sends one stretch of a broadcast under a lease, then the next task goes on.
STRETCH_SECONDS = 20.0
LEASE_MS = 30_000


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A broadcast as admins see it."""

    id: str
    state: str  # draft | scheduled | queued | running | done | canceled
    kind: str  # text | copy
    text: str
    from_chat: int | None
    message_id: int | None
    created_by: int
    total: int
    counts: dict[str, int]
    created_at: int
    started_at: int | None
    finished_at: int | None
    progress_chat: int | None
    progress_message: int | None
    at: int | None = None  # when a scheduled broadcast starts (ms)

    @property
    def done_count(self) -> int:
        """Recipients dealt with so far, whatever the outcome."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: id, state, counters."""
        counts = ", ".join(f"{name} {self.counts[name]}" for name in OUTCOMES if self.counts[name])
        when = iso(self.at if self.state == "scheduled" else self.created_at) or ""
        return f"{self.id} · {self.state} · {self.total} recipients · {counts or 'nothing sent'} · {when}"

    def duration_seconds(self) -> float | None:
        """From the first to the last send, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at) / 1000


class TooLong(Exception):
    """A broadcast text Telegram would refuse for every subscriber."""

    def __init__(self, length: int) -> None:
        super().__init__(f"broadcast text of {length} code units, at most {MESSAGE_MAX}")
        self.length = length
        self.limit = MESSAGE_MAX


def check_text(text: str) -> None:
    """Raise ``TooLong`` unless ``text`` fits one Telegram message."""
    length = telegram_length(text)
    if length > MESSAGE_MAX:
        raise TooLong(length)


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


class BroadcastStore:
    """Creates, starts, cancels and reads broadcasts; the sending is in ``tasks.broadcasting``."""

    def __init__(self, redis: Redis, keys: Keys, durable: Durability | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self.scripts = Scripts.register(redis)
        # "Broadcast started" is a promise: with replicas, it waits until they hold it.
        self._durable = durable

    @property
    def keys(self) -> Keys:
        """The key builder (the sender uses the same keys)."""
        return self._keys

    async def draft(
        self,
        created_by: int,
        *,
        text: str = "",
        from_chat: int | None = None,
        message_id: int | None = None,
    ) -> str:
        """A new draft: ``text``, or a copy of ``message_id`` in ``from_chat`` (any media).

        Raises ``TooLong`` for a text no subscriber could be sent.
        """
        check_text(text)
        broadcast_id = f"bc_{secrets.token_hex(6)}"
        now = now_ms()
        fields: dict[Any, Any] = {
            "id": broadcast_id,
            "state": "draft",
            "kind": "copy" if message_id is not None else "text",
            "text": text,
            "from_chat": "" if from_chat is None else str(from_chat),
            "message_id": "" if message_id is None else str(message_id),
            "created_by": str(created_by),
            "created_at": str(now),
            "total": "0",
        }
        key = self._keys.broadcast(broadcast_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, _KEEP_MS)
            pipe.zadd(self._keys.broadcasts, {broadcast_id: now})
            await pipe.execute()
        return broadcast_id

    async def set_progress_message(self, broadcast_id: str, chat_id: int, message_id: int) -> None:
        """The admin's message that shows progress, edited in place."""
        await self._redis.hset(
            self._keys.broadcast(broadcast_id),
            mapping={"progress_chat": str(chat_id), "progress_message": str(message_id)},
        )

    async def schedule(self, broadcast_id: str, at: datetime) -> None:
        """Start a draft at ``at`` (the schedule store fires it); cancelable until then."""
        at_ms = int(at.timestamp() * 1000)
        task = ScheduledTask(
            task_name=START_BROADCAST,
            labels={},
            args=[broadcast_id],
            kwargs={},
            schedule_id=broadcast_id,
            time=at,
        )
        keys = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.broadcast(broadcast_id), mapping={"state": "scheduled", "at": str(at_ms)}
            )
            stage_schedule(pipe, keys, task)
            await pipe.execute()

    async def start(self, broadcast_id: str) -> tuple[str, int]:
        """Fix the audience and queue the broadcast: ``('queued', total)`` or why not."""
        keys = self._keys
        reply = as_text(
            await self.scripts.bc_start(
                keys=[
                    keys.broadcast(broadcast_id),
                    keys.broadcast_audience(broadcast_id),
                    keys.subscribers,
                    keys.broadcasts_due,
                    keys.mail_subscribers,
                ],
                args=[now_ms(), broadcast_id],
            )
        )
        if reply[0] == "queued":
            await self._redis.pexpire(keys.broadcast_audience(broadcast_id), _KEEP_MS)
            if self._durable is not None:
                await self._durable.barrier(keys)
            return "queued", int(reply[1])
        return reply[-1], 0

    async def cancel(self, broadcast_id: str) -> str:
        """``canceled`` (now), ``not_found``, or ``already_<state>`` (done, canceled)."""
        reply = as_text(
            await self.scripts.bc_cancel(
                keys=[
                    self._keys.broadcast(broadcast_id),
                    self._keys.broadcasts_due,
                    self._keys.schedules,
                    self._keys.schedules_due,
                ],
                args=[now_ms(), broadcast_id],
            )
        )
        if reply[0] == "refused":
            return f"already_{reply[1]}"
        return reply[0]

    async def get(self, broadcast_id: str) -> Broadcast | None:
        """The broadcast, or None."""
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.broadcast(broadcast_id)))
        if not raw:
            return None
        return Broadcast(
            id=raw["id"],
            state=raw["state"],
            kind=raw["kind"],
            text=raw.get("text", ""),
            from_chat=_int(raw.get("from_chat")),
            message_id=_int(raw.get("message_id")),
            created_by=int(raw["created_by"]),
            total=int(raw.get("total", "0")),
            counts={name: int(raw.get(name, "0")) for name in OUTCOMES},
            created_at=int(raw["created_at"]),
            started_at=_int(raw.get("started_at")),
            finished_at=_int(raw.get("finished_at")),
            progress_chat=_int(raw.get("progress_chat")),
            progress_message=_int(raw.get("progress_message")),
            at=_int(raw.get("at")),
        )

    async def paused_until(self) -> int:
        """Until when (ms) Telegram asked the bot to pause, or 0."""
        value = await self._redis.get(self._keys.telegram_pause)
        return int(value) if value else 0

    async def mail_locale(self, address: str) -> str:
        """The language an email subscriber signed up in."""
        locale = await self._redis.hget(f"{self._keys.mail_subscribers}:locale", address)
        return str(locale) if locale else "en"

    async def unsubscribe_mail(self, address: str) -> bool:
        """Remove an email subscriber; True if it was subscribed."""
        return bool(await self._redis.zrem(self._keys.mail_subscribers, address))

    async def take_due(self, lease_ms: int, limit: int = 20) -> list[str]:
        """Broadcasts to (re)start: new ones, and those whose worker died mid-stretch."""
        reply = await self.scripts.pump(
            keys=[self._keys.broadcasts_due], args=[now_ms(), lease_ms, limit]
        )
        return as_text(reply)

    async def recent(self, limit: int = 10) -> list[Broadcast]:
        """The newest broadcasts first."""
        ids = cast(list[str], await self._redis.zrevrange(self._keys.broadcasts, 0, limit - 1))
        found = [await self.get(broadcast_id) for broadcast_id in ids]
        return [b for b in found if b is not None]
