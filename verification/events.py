"""Outbound events: one per final status change, queued atomically with it (see _lib.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from verification.keys import Keys, Layout
from verification.models import now_ms, stored_verification, verification_resource
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

    def __init__(self, redis: Redis, layout: Layout | Keys) -> None:
        self._redis = redis
        self._layout = layout if isinstance(layout, Layout) else Layout(layout.prefix)
        self._scripts = Scripts.register(redis)

    async def claim(self, event_id: str, lease_ms: int, token: str) -> EventClaim | None:
        """Lease the event for one attempt, or None when it is finished or being sent.

        As with deliveries, the same ``token`` reclaims a running lease. Taking an approval
        first applies its email subscription (see :meth:`_subscribe`).
        """
        keys = self._layout.of(event_id)
        reply = as_text(
            await self._scripts.event_claim(
                keys=[keys.event_by_id(event_id), keys.events_due],
                args=[now_ms(), lease_ms, event_id, token],
            )
        )
        if reply[0] != "claimed":
            return None
        claim = EventClaim(event_id, int(reply[1]), reply[2], reply[3], reply[4], int(reply[5]))
        if claim.type == "verification.approved":
            await self._subscribe(claim.verification_id)
        return claim

    async def _subscribe(self, verification_id: str) -> None:
        """An approved signup that opted in puts its address on the announcement list.

        The list is bot-wide (home shard), the approval happened in the verification's
        shard, so it is applied here, from the approval's event: at least once, and
        idempotent (``NX`` keeps the first subscription time).
        """
        v = stored_verification(
            verification_id,
            cast(
                dict[str, str],
                await self._redis.hgetall(
                    self._layout.of(verification_id).verification(verification_id)
                ),
            ),
        )
        email = v.get("email", "")
        if v.get("subscribe") != "1" or v.get("channel") not in ("email", "link") or not email:
            return
        home = self._layout.home
        approved_at = int(v.get("updated_at") or now_ms())
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(home.mail_subscribers, {email: approved_at}, nx=True)
            pipe.hset(home.mail_subscriber_locales, email, v.get("locale") or "en")
            await pipe.execute()

    async def record(
        self, claim: EventClaim, outcome: str, detail: str = "", next_at_ms: int = 0
    ) -> str:
        """Outcome: ``delivered``, ``stopped``, ``failed``, ``skipped`` or ``retry``."""
        keys = self._layout.of(claim.event_id)
        reply = await self._scripts.event_record(
            keys=[
                keys.event_by_id(claim.event_id),
                keys.events_due,
                keys.stats,
                keys.events_failed,
            ],
            args=[now_ms(), outcome, detail[:300], next_at_ms, claim.event_id, claim.attempt],
        )
        return as_text(reply)[0]

    async def payload(self, claim: EventClaim) -> dict[str, Any]:
        """The event body: Standard Webhooks ``{type, timestamp, data}``."""
        v = stored_verification(
            claim.verification_id,
            cast(
                dict[str, str],
                await self._redis.hgetall(
                    self._layout.of(claim.verification_id).verification(claim.verification_id)
                ),
            ),
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
        """Event ids due for (re)sending in every shard, each to one caller per lease."""
        due: list[str] = []
        for keys in self._layout.shards:
            reply = await self._scripts.pump(
                keys=[keys.events_due], args=[now_ms(), lease_ms, limit]
            )
            due.extend(as_text(reply))
        return due


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
