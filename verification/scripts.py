"""Lua scripts, loaded once per Redis client and run with EVALSHA."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_NAMES = (
    "create",
    "check",
    "resend",
    "cancel",
    "claim",
    "extend",
    "record",
    "pump",
    "sweep",
    "event_claim",
    "event_record",
    "replay",
    "link",
    "telegram",
    "timer_expire",
    "timer_requeue",
    "bc_start",
    "bc_claim",
    "bc_next",
    "bc_slot",
    "bc_record",
    "bc_finish",
    "bc_cancel",
    "sched_claim",
    "sched_done",
    "rem_cancel",
    "rem_claim",
    "rem_done",
)


#: Each script lives beside the code that calls it: broadcasts and reminders in the bot,
#: schedules in the task layer, the verification core here (with the shared helpers).
_HOMES = {"bc": "bot", "rem": "bot", "sched": "tasks"}


def _source(name: str) -> str:
    helpers = resources.files("verification") / "lua" / "_lib.lua"
    home = _HOMES.get(name.split("_", 1)[0], "verification")
    return helpers.read_text() + "\n" + (resources.files(home) / "lua" / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one Redis client."""

    create: AsyncScript
    check: AsyncScript
    resend: AsyncScript
    cancel: AsyncScript
    claim: AsyncScript
    extend: AsyncScript
    record: AsyncScript
    pump: AsyncScript
    sweep: AsyncScript
    event_claim: AsyncScript
    event_record: AsyncScript
    replay: AsyncScript
    link: AsyncScript
    telegram: AsyncScript
    timer_expire: AsyncScript
    timer_requeue: AsyncScript
    bc_start: AsyncScript
    bc_claim: AsyncScript
    bc_next: AsyncScript
    bc_slot: AsyncScript
    bc_record: AsyncScript
    bc_finish: AsyncScript
    bc_cancel: AsyncScript
    sched_claim: AsyncScript
    sched_done: AsyncScript
    rem_cancel: AsyncScript
    rem_claim: AsyncScript
    rem_done: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        """Register every script on ``redis`` (no I/O until first use)."""
        return cls(**{name: redis.register_script(_source(name)) for name in _NAMES})


def as_text(reply: Any) -> list[str]:
    """Normalise a script's array reply to strings."""
    return [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
