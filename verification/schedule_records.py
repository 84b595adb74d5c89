"""How a schedule is stored: the records that the bot, the service and the scheduler share.

Below the bot and the task layer, so that storing a reminder or a scheduled broadcast
together with its schedule needs nothing from the scheduler process's code.
"""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio.client import Pipeline
from taskiq import ScheduledTask

from verification.keys import Keys


def stage_schedule(pipe: Pipeline, keys: Keys, schedule: ScheduledTask) -> None:
    """Queue the writes that store ``schedule`` on ``pipe``.

    For callers that store a schedule in one transaction with their own record (a
    reminder, a scheduled broadcast).
    """
    pipe.hset(keys.schedules, schedule.schedule_id, schedule.model_dump_json())
    if schedule.time is not None:
        pipe.zadd(keys.schedules_due, {schedule.schedule_id: _ms(schedule.time)})
    else:
        pipe.sadd(keys.schedules_periodic, schedule.schedule_id)


def _ms(at: datetime) -> int:
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)
