"""Outbound events: one per final status change, queued atomically with it (see _lib.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from verification.keys import Keys
from verification.models import now_ms, verification_resource
from verification.scripts import Scripts, as_text


@dataclass(frozen=True, slots=True)
class EventClaim:
    """An event this worker may POST now."""

    event_id: str
    attempt: int
    type: str
    site: str
    verification_id: str
    created_at_ms: int


class EventStore:
    """Claiming, recording and reading outbound events."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = Scripts.register(redis)

    async def claim(self, event_id: str, lease_ms: int, token: str) -> EventClaim | None:
        """Lease the event for one attempt, or None when it is finished or being sent.

        As with deliveries, the same ``token`` reclaims a running lease.
        """
        reply = as_text(
            await self._scripts.event_claim(
                keys=[self._keys.event_by_id(event_id), self._keys.events_due],
                args=[now_ms(), lease_ms, event_id, token],
            )
        )
        if reply[0] != "claimed":
            return None
        return EventClaim(event_id, int(reply[1]), reply[2], reply[3], reply[4], int(reply[5]))

    async def record(
        self, claim: EventClaim, outcome: str, detail: str = "", next_at_ms: int = 0
    ) -> str:
        """Outcome: ``delivered``, ``stopped``, ``failed``, ``skipped`` or ``retry``."""
        reply = await self._scripts.event_record(
            keys=[
                self._keys.event_by_id(claim.event_id),
                self._keys.events_due,
                self._keys.stats,
                self._keys.events_failed,
            ],
            args=[now_ms(), outcome, detail[:300], next_at_ms, claim.event_id, claim.attempt],
        )
        return as_text(reply)[0]

    async def payload(self, claim: EventClaim) -> dict[str, Any]:
        """The event body: Standard Webhooks ``{type, timestamp, data}``."""
        v = cast(
            dict[str, str],
            await self._redis.hgetall(self._keys.verification(claim.verification_id)),
        )
        data: dict[str, Any] = {"id": claim.verification_id, "site": claim.site}
        if v:
            data = verification_resource(v, [], now_ms())
            data.pop("deliveries", None)
        data["status"] = claim.type.removeprefix("verification.")
        return {
            "type": claim.type,
            "timestamp": _iso_ms(claim.created_at_ms),
            "data": data,
        }

    async def take_due(self, lease_ms: int, limit: int = 100) -> list[str]:
        """Event ids due for (re)sending, each handed to one caller per lease."""
        reply = await self._scripts.pump(
            keys=[self._keys.events_due], args=[now_ms(), lease_ms, limit]
        )
        return as_text(reply)


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
