"""People's reminders: stored with their schedule in one transaction, sent once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis
from taskiq import ScheduledTask

from bot import texts
from bot.limits import MESSAGE_MAX, telegram_length
from verification.durability import Durability
from verification.keys import Keys
from verification.models import now_ms
from verification.schedule_records import stage_schedule
from verification.scripts import Scripts, as_text

REMIND = "tidings.remind"
#: A reminder's record outlives its due time by this long (for /reminders and support).
KEEP_AFTER_MS = 7 * 86_400_000
#: Scheduled reminders per chat, against abuse.
MAX_PER_CHAT = 50


def fired_message(reminder_text: str, lang: str) -> str:
    """The message a reminder sends when it goes off."""
    return texts.text("reminder_fired", lang, text=reminder_text)


#: The longest reminder text that fits one message with its prefix, in every language.
MAX_TEXT = MESSAGE_MAX - max(telegram_length(fired_message("", lang)) for lang in texts.LANGUAGES)


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder as its owner sees it."""

    id: str
    at_ms: int
    text: str
    status: str

    @property
    def at(self) -> datetime:
        """When it fires (UTC)."""
        return datetime.fromtimestamp(self.at_ms / 1000, UTC)


class TooMany(Exception):
    """The chat already has ``MAX_PER_CHAT`` reminders waiting."""


class TextTooLong(Exception):
    """The text could not be sent with its prefix when the reminder fires."""

    def __init__(self, length: int) -> None:
        super().__init__(f"reminder text of {length} code units, at most {MAX_TEXT}")
        self.length = length
        self.limit = MAX_TEXT


class Reminders:
    """Create, list, cancel and (on the workers) claim reminders."""

    def __init__(self, redis: Redis, keys: Keys, durable: Durability | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = Scripts.register(redis)
        # "Reminder set" is a promise: with replicas, it waits until they hold it.
        self._durable = durable

    async def create(self, chat_id: int, at: datetime, text: str, lang: str) -> str:
        """Store a reminder and its one-off schedule atomically; returns its id."""
        length = telegram_length(text)
        if length > MAX_TEXT:
            raise TextTooLong(length)
        if len(await self.upcoming(chat_id)) >= MAX_PER_CHAT:
            raise TooMany
        reminder_id = f"rem_{secrets.token_hex(5)}"
        at_ms = int(at.timestamp() * 1000)
        schedule = ScheduledTask(
            task_name=REMIND,
            labels={},
            args=[reminder_id],
            kwargs={},
            schedule_id=reminder_id,
            time=at,
        )
        keys = self._keys
        record = keys.reminder(reminder_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                record,
                mapping={
                    "id": reminder_id,
                    "chat_id": str(chat_id),
                    "text": text,
                    "at": str(at_ms),
                    "lang": lang,
                    "status": "scheduled",
                    "created_at": str(now_ms()),
                },
            )
            pipe.pexpireat(record, at_ms + KEEP_AFTER_MS)
            pipe.zadd(keys.chat_reminders(chat_id), {reminder_id: at_ms})
            pipe.pexpireat(keys.chat_reminders(chat_id), at_ms + KEEP_AFTER_MS)
            stage_schedule(pipe, keys, schedule)
            await pipe.execute()
        if self._durable is not None:
            await self._durable.barrier(self._keys)
        return reminder_id

    async def upcoming(self, chat_id: int) -> list[Reminder]:
        """The chat's reminders still to fire, soonest first."""
        key = self._keys.chat_reminders(chat_id)
        ids = cast(list[str], await self._redis.zrangebyscore(key, now_ms() - 60_000, "+inf"))
        async with self._redis.pipeline(transaction=False) as pipe:
            for reminder_id in ids:
                pipe.hgetall(self._keys.reminder(reminder_id))
            found = cast(list[dict[str, str]], await pipe.execute())
        return [
            Reminder(r["id"], int(r["at"]), r["text"], r["status"])
            for r in found
            if r and r.get("status") == "scheduled"
        ]

    async def cancel(self, chat_id: int, reminder_id: str) -> str:
        """``canceled``, ``not_found`` (not this chat's), or its status (already sent)."""
        keys = self._keys
        reply = await self._scripts.rem_cancel(
            keys=[keys.reminder(reminder_id), keys.schedules, keys.schedules_due],
            args=[chat_id, reminder_id, now_ms()],
        )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def claim(self, reminder_id: str, lease_ms: int) -> tuple[str, int, str, str] | None:
        """``(token, chat id, text, language)`` to send now, or None (sent, canceled, busy)."""
        token = secrets.token_hex(8)
        reply = as_text(
            await self._scripts.rem_claim(
                keys=[self._keys.reminder(reminder_id)], args=[now_ms(), lease_ms, token]
            )
        )
        if reply[0] != "claimed":
            return None
        return token, int(reply[1]), reply[2], reply[3]

    async def finish(self, reminder_id: str, token: str, outcome: str, error: str = "") -> None:
        """Record ``sent`` or ``failed``."""
        await self._scripts.rem_done(
            keys=[self._keys.reminder(reminder_id)],
            args=[now_ms(), token, outcome, error[:200]],
        )
