"""The worker's side of a delivery: claim it, record its outcome, find due work."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from verification.codes import CodeHasher, PayloadSealer
from verification.durability import Durability
from verification.keys import Keys, Layout, delivery_verification
from verification.models import delivery_field, folded_delivery, now_ms
from verification.scripts import Scripts, as_text
from verification.timers import EXPIRY, REQUEUE, Check, drain


async def read_deliveries(
    redis: Redis, keys: Keys, v: dict[str, str], ids: list[str]
) -> list[dict[str, str]]:
    """The records of ``ids``, deliveries of the verification whose hash is ``v``.

    Folded into ``v`` since 2026-12; earlier releases' have hashes of their own, read in
    one round trip. Records that are gone are left out.
    """
    found = {did: folded_delivery(v, did) for did in ids}
    own = [did for did, d in found.items() if d is None]
    if own:
        async with redis.pipeline(transaction=False) as pipe:
            for did in own:
                pipe.hgetall(keys.delivery(did))
            for did, d in zip(own, await pipe.execute(), strict=True):
                found[did] = cast(dict[str, str], d) or None
    return [d for d in found.values() if d]


async def read_delivery(redis: Redis, layout: Layout, delivery_id: str) -> dict[str, str]:
    """One delivery's record with its ``verification_id`` ({} when it is gone)."""
    keys = layout.of(delivery_id)
    vid = delivery_verification(delivery_id)
    if vid is not None:
        v = cast(dict[str, str], await redis.hgetall(keys.verification(vid)))
        d = folded_delivery(v, delivery_id)
        if d is not None:
            d["verification_id"] = vid
            return d
    d = cast(dict[str, str], await redis.hgetall(keys.delivery(delivery_id)))
    if d and vid is not None:
        d.setdefault("verification_id", vid)
    return d


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
        self,
        redis: Redis,
        layout: Layout | Keys,
        master_key: bytes,
        *,
        durable: Durability | None = None,
    ) -> None:
        self._redis = redis
        self._layout = layout if isinstance(layout, Layout) else Layout(layout.prefix)
        self._sealer = PayloadSealer(master_key)
        self._hasher = CodeHasher(master_key)
        self._scripts = Scripts.register(redis)
        # A claim that replicas do not hold yet may be on a master that is about to lose
        # it (split brain after a failover): sending then could send a code twice.
        self._durable = durable or Durability(redis, 0, 0)

    async def claim(self, delivery_id: str, lease_ms: int, token: str) -> Claim | NotClaimed:
        """Lease the delivery for one attempt unless it is finished, leased or moot.

        Claiming again with the same ``token`` while the lease runs returns the same
        attempt, so a claim whose reply was lost can be retried.
        """
        keys = self._layout.of(delivery_id)
        vid = delivery_verification(delivery_id)
        if vid is None:  # a delivery queued before ids named their verification
            vid = cast(
                str | None, await self._redis.hget(keys.delivery(delivery_id), "verification_id")
            )
            if vid is None:
                return NotClaimed("gone")
        now = now_ms()
        reply = as_text(
            await self._durable.run(
                self._scripts.claim,
                [*keys.status(vid, now), keys.delivery(delivery_id), keys.due],
                [now, lease_ms, delivery_id, token, vid],
                promised=lambda r: bool(r) and as_text(r)[0] == "claimed",
            )
        )
        if reply[0] != "claimed":
            return NotClaimed(" ".join(reply))
        code, link = self._secrets(delivery_id, reply[8], reply[2])
        return Claim(
            delivery_id=delivery_id,
            attempt=int(reply[1]),
            code=code,
            destination=reply[3],
            locale=reply[4],
            site=reply[5],
            channel=reply[6],
            expires_at_ms=int(reply[7]),
            verification_id=reply[8],
            link=link,
            purpose=reply[9] if len(reply) > 9 else "code",
        )

    def _secrets(self, delivery_id: str, verification_id: str, sealed: str) -> tuple[str, str]:
        """The code and the magic link a claimed delivery sends.

        The sealed secret holds the code; the link is derived from the delivery's id.
        Deliveries queued by earlier releases seal both as JSON.
        """
        opened = self._sealer.open(sealed, delivery_id)
        if opened.startswith("{"):
            payload = json.loads(opened)
            return payload["code"], payload.get("link", "")
        return opened, str(self._hasher.delivery_link(delivery_id, verification_id))

    async def channel_of(self, delivery_id: str) -> str:
        """The delivery's channel ('' when it is gone), read without claiming it."""
        keys = self._layout.of(delivery_id)
        vid = delivery_verification(delivery_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            if vid is not None:  # folded into its verification's hash (_lib.lua)
                pipe.hget(keys.verification(vid), delivery_field(delivery_id, "channel"))
            pipe.hget(keys.delivery(delivery_id), "channel")  # earlier releases' own hash
            found = [c for c in await pipe.execute() if c]
        raw = found[0] if found else ""
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def extend(self, claim: Claim, lease_ms: int) -> bool:
        """Renew the lease of a running attempt; False if it is no longer ours."""
        keys = self._layout.of(claim.delivery_id)
        reply = await self._durable.unpromised(
            self._scripts.extend,
            [
                keys.delivery(claim.delivery_id),
                keys.due,
                keys.verification(claim.verification_id),
            ],
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
        keys = self._layout.of(claim.delivery_id)
        now = now_ms()
        reply = as_text(
            await self._durable.unpromised(
                self._scripts.record,
                [
                    *keys.status(verification_id, now),
                    keys.delivery(claim.delivery_id),
                    keys.due,
                    keys.dead_letters,
                ],
                args=[
                    now,
                    outcome,
                    provider_id,
                    error,
                    next_at,
                    claim.delivery_id,
                    claim.attempt,
                    "1" if maybe_sent else "0",
                    verification_id,
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
        """Delivery ids due for (re)enqueueing in every shard, each to one caller per lease.

        New deliveries nobody took in time are moved from their watchdog timers into the
        due set first (``verification.timers``).
        """
        due: list[str] = []
        for keys in self._layout.shards:
            await drain(self._redis, keys, REQUEUE, now_ms(), self._requeue_check(keys))
            reply = await self._scripts.pump(keys=[keys.due], args=[now_ms(), lease_ms, limit])
            due.extend(as_text(reply))
        return due

    def _requeue_check(self, keys: Keys) -> Check:
        async def check(bucket: str, entries: list[str]) -> tuple[int, list[str]]:
            homes = [keys.verification(delivery_verification(did) or "-") for did in entries]
            reply = as_text(
                await self._scripts.timer_requeue(
                    keys=[bucket, keys.due, *homes], args=[now_ms(), *entries]
                )
            )
            return int(reply[0]), reply[1:]

        return check

    def _expiry_check(self, keys: Keys) -> Check:
        async def check(bucket: str, entries: list[str]) -> tuple[int, list[str]]:
            now = now_ms()
            per_id = [
                k
                for head in entries
                for k in (keys.verification(f"ver_{head}"), keys.event(f"ver_{head}"))
            ]
            reply = as_text(
                await self._scripts.timer_expire(
                    keys=[bucket, *self._sweep_keys(keys, now), *per_id], args=[now, *entries]
                )
            )
            return int(reply[0]), reply[1:]

        return check

    @staticmethod
    def _sweep_keys(keys: Keys, now: int) -> list[str]:
        """The shard-wide keys an expiry touches (``timer_expire.lua``, ``sweep.lua``)."""
        return [
            keys.expiring,
            keys.stats,
            keys.stats_day(now // 86_400_000),
            keys.events_due,
            keys.schedules,
            keys.schedules_due,
        ]

    async def sweep_expired(self, limit: int = 500) -> list[str]:
        """Mark pending verifications past their expiry as expired; returns their ids.

        Per shard: the due ids are read first, so the script is given every key it touches.
        """
        expired: list[str] = []
        for keys in self._layout.shards:
            expired += await drain(self._redis, keys, EXPIRY, now_ms(), self._expiry_check(keys))
            # The sorted set: operators' replays and earlier releases' verifications.
            now = now_ms()
            ids = cast(
                list[str], await self._redis.zrangebyscore(keys.expiring, "-inf", now, 0, limit)
            )
            if not ids:
                continue
            shared = self._sweep_keys(keys, now)
            per_id = [k for vid in ids for k in (keys.verification(vid), keys.event(vid))]
            reply = await self._scripts.sweep(
                keys=[*shared, *per_id],
                args=[now, *ids],
            )
            expired.extend(as_text(reply))
        return expired
