"""The worker's side of a delivery: claim it, record its outcome, find due work."""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from verification.codes import PayloadSealer
from verification.durability import Durability
from verification.keys import Keys
from verification.models import now_ms
from verification.scripts import Scripts, as_text


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker may send now."""

    delivery_id: str
    attempt: int
    code: str
    destination: str
    locale: str
    site: str
    channel: str
    expires_at_ms: int
    verification_id: str
    link: str = ""  # the magic link's token, for email and link deliveries
    purpose: str = "code"  # or "reminder" (remind_after)


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Why a delivery is not to be sent by this task (already done, busy, skipped)."""

    reason: str


class DeliveryStore:
    """Atomic delivery bookkeeping in Redis."""

    def __init__(
        self, redis: Redis, keys: Keys, master_key: bytes, *, durable: Durability | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._sealer = PayloadSealer(master_key)
        self._scripts = Scripts.register(redis)
        # A claim that replicas do not hold yet may be on a master that is about to lose
        # it (split brain after a failover): sending then could send a code twice.
        self._durable = durable or Durability(redis, 0, 0)

    async def claim(self, delivery_id: str, lease_ms: int, token: str) -> Claim | NotClaimed:
        """Lease the delivery for one attempt unless it is finished, leased or moot.

        Claiming again with the same ``token`` while the lease runs returns the same
        attempt, so a claim whose reply was lost can be retried.
        """
        keys = self._keys
        reply = as_text(
            await self._durable.run(
                self._scripts.claim,
                [keys.delivery(delivery_id), keys.due, keys.stats, keys.expiring, keys.events_due],
                [now_ms(), lease_ms, delivery_id, keys.prefix, token],
                promised=lambda r: bool(r) and as_text(r)[0] == "claimed",
            )
        )
        if reply[0] != "claimed":
            return NotClaimed(" ".join(reply))
        payload = json.loads(self._sealer.open(reply[2]))
        return Claim(
            delivery_id=delivery_id,
            attempt=int(reply[1]),
            code=payload["code"],
            destination=reply[3],
            locale=reply[4],
            site=reply[5],
            channel=reply[6],
            expires_at_ms=int(reply[7]),
            verification_id=reply[8],
            link=payload.get("link", ""),
            purpose=reply[9] if len(reply) > 9 else "code",
        )

    async def extend(self, claim: Claim, lease_ms: int) -> bool:
        """Renew the lease of a running attempt; False if it is no longer ours."""
        reply = await self._scripts.extend(
            keys=[self._keys.delivery(claim.delivery_id), self._keys.due],
            args=[now_ms(), lease_ms, claim.delivery_id, claim.attempt],
        )
        return bool(reply)

    async def _record(
        self,
        claim: Claim,
        verification_id: str,
        outcome: str,
        *,
        provider_id: str = "",
        error: str = "",
        next_at: int = 0,
        maybe_sent: bool = False,
    ) -> str:
        keys = self._keys
        reply = as_text(
            await self._scripts.record(
                keys=[
                    keys.delivery(claim.delivery_id),
                    keys.due,
                    keys.stats,
                    keys.dead_letters,
                    keys.verification(verification_id),
                    keys.expiring,
                    keys.event(verification_id),
                    keys.events_due,
                ],
                args=[
                    now_ms(),
                    outcome,
                    provider_id,
                    error,
                    next_at,
                    claim.delivery_id,
                    claim.attempt,
                    "1" if maybe_sent else "0",
                ],
            )
        )
        return reply[0]

    async def sent(self, claim: Claim, verification_id: str, provider_id: str) -> str:
        """Record a successful send."""
        return await self._record(claim, verification_id, "sent", provider_id=provider_id)

    async def failed(
        self, claim: Claim, verification_id: str, error: str, *, maybe_sent: bool = False
    ) -> str:
        """Record a final failure and keep it in the dead-letter list.

        It fails the verification too (nobody can get the code) unless ``maybe_sent``.
        """
        return await self._record(
            claim, verification_id, "failed", error=error, maybe_sent=maybe_sent
        )

    async def retry_at(self, claim: Claim, verification_id: str, error: str, at_ms: int) -> str:
        """Record a transient failure; the pump enqueues the delivery again at ``at_ms``."""
        return await self._record(claim, verification_id, "retry", error=error, next_at=at_ms)

    async def take_due(self, lease_ms: int, limit: int = 100) -> list[str]:
        """Delivery ids due for (re)enqueueing, each handed to one caller per lease."""
        reply = await self._scripts.pump(keys=[self._keys.due], args=[now_ms(), lease_ms, limit])
        return as_text(reply)

    async def sweep_expired(self, limit: int = 500) -> list[str]:
        """Mark pending verifications past their expiry as expired; returns their ids."""
        reply = await self._scripts.sweep(
            keys=[self._keys.expiring, self._keys.stats, self._keys.events_due],
            args=[now_ms(), limit, self._keys.prefix],
        )
        return as_text(reply)
