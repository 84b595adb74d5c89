"""Sending one delivery: claim, render, send, record. Safe to run more than once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from config.logging import RecordTemplate
from config.settings import Settings
from config.sites import EMAIL_CHANNELS, Channel, SiteConfig
from tasks.email.rendering import EmailRenderer
from tasks.email.senders import EmailSender, Reservation
from tasks.email.unsubscribe import one_click_unsubscribe
from tasks.errors import DeliveryError
from tasks.metrics import provider_call, provider_name
from tasks.sms.base import SmsSender
from tasks.sms.rendering import SmsRenderer
from verification.codes import CodeHasher, random_hex
from verification.connections import through_outage
from verification.deliveries import Claim, DeliveryStore, NotClaimed
from verification.models import mask_destination, now_ms

logger = logging.getLogger(__name__)
#: The line every email logs at INFO, made the cheap way (config.logging.RecordTemplate).
_SENT = RecordTemplate(logger, logging.INFO, "delivery sent")


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return float(delay / 2 + random.uniform(0, delay / 2))


class _LeaseKeeper:
    """Renews a claimed delivery's lease every third of it until stopped.

    A timer rather than a task per attempt: almost every send ends long before the first
    renewal, and a timer costs a fraction of a task's creation and cancellation.
    """

    __slots__ = ("_claim", "_every", "_lease_ms", "_renewal", "_store", "_timer")

    def __init__(self, store: DeliveryStore, claim: Claim, lease_ms: int, seconds: float) -> None:
        self._store, self._claim, self._lease_ms = store, claim, lease_ms
        self._every = seconds / 3
        self._renewal: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(self._every, self._due)

    def _due(self) -> None:
        self._renewal = asyncio.create_task(self._renew(), name=f"lease:{self._claim.delivery_id}")

    async def _renew(self) -> None:
        """Renew once, and again later unless the lease was lost."""
        try:
            if not await self._store.extend(self._claim, self._lease_ms):
                return
        except RedisError:
            logger.warning(
                "could not renew a delivery lease", extra={"delivery": self._claim.delivery_id}
            )
        self._timer = asyncio.get_running_loop().call_later(self._every, self._due)

    def stop(self) -> None:
        """Renew no more (the outcome is recorded)."""
        self._timer.cancel()
        if self._renewal is not None:
            self._renewal.cancel()


class _Capacity:
    """:meth:`Deliverer._capacity`, as a class: it runs for every delivery."""

    __slots__ = ("_deliverer", "_delivery_id", "_held")

    def __init__(self, deliverer: Deliverer, delivery_id: str) -> None:
        self._deliverer, self._delivery_id = deliverer, delivery_id
        self._held: AbstractAsyncContextManager[Reservation] | None = None

    async def __aenter__(self) -> Reservation | None:
        deliverer = self._deliverer
        if (
            deliverer.sms is not None
            and await deliverer.channel_of(self._delivery_id) not in EMAIL_CHANNELS
        ):
            return None
        held = deliverer.email.reserve()
        reservation = await held.__aenter__()
        self._held = held
        return reservation

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._held is not None:
            await self._held.__aexit__(*exc_info)


@dataclass(slots=True)
class Deliverer:
    """Everything a delivery task needs, built once per worker process."""

    settings: Settings
    store: DeliveryStore
    email: EmailSender
    renderer: EmailRenderer
    sites: dict[str, SiteConfig]
    sms: SmsSender | None = None
    sms_renderer: SmsRenderer = field(default_factory=SmsRenderer)
    hasher: CodeHasher = field(init=False)

    def __post_init__(self) -> None:
        self.hasher = CodeHasher(self.settings.require_secret_key())

    async def close(self) -> None:
        """Release the providers' connections."""
        await self.email.close()
        if self.sms is not None:
            await self.sms.close()

    def link_url(self, token: str) -> str:
        """The magic link a person opens (``GET /v/{token}`` on the public URL)."""
        return f"{self.settings.public_url.rstrip('/')}/v/{token}"

    @property
    def lease_ms(self) -> int:
        """How long one attempt holds a delivery before it must renew its lease."""
        return int(self.settings.queue.lease_seconds * 1000)

    async def channel_of(self, delivery_id: str) -> str:
        """The delivery's channel, read before claiming (a claim counts an attempt)."""
        store = self.store
        return await through_outage(
            lambda: store.channel_of(delivery_id),
            within=self.settings.queue.task_timeout_seconds,
            what="read a delivery",
            log={"delivery": delivery_id},
        )

    def _capacity(self, delivery_id: str) -> _Capacity:
        """Hold what the send needs (an SMTP connection) before the attempt is claimed.

        Waiting for a pooled connection is not part of an attempt: a task cut while it
        waits has claimed nothing, counted nothing and sent nothing, and the due set
        brings the delivery back.
        """
        return _Capacity(self, delivery_id)

    async def _send(self, claim: Claim, reservation: Reservation | None) -> str:
        site = self.sites.get(claim.site)
        if site is None:
            raise DeliveryError(f"site {claim.site!r} is no longer configured", retryable=False)
        minutes = max(1, math.ceil((claim.expires_at_ms - now_ms()) / 60_000))
        if claim.channel == Channel.SMS:
            if self.sms is None:
                raise DeliveryError("no SMS provider is configured", retryable=False)
            params = {
                "code": claim.code,
                "minutes": str(minutes),
                "site_name": site.display_name,
                "domain": site.code_domain or "",
            }
            purpose = "reminder" if claim.purpose == "reminder" else "verification"
            text = self.sms_renderer.render(
                purpose, claim.locale, claim.destination, params, site=site.id
            )
            with provider_call(provider_name(self.sms)):
                return await self.sms.send(text)
        if claim.channel not in (Channel.EMAIL, Channel.LINK):
            raise DeliveryError(f"no provider for channel {claim.channel!r}", retryable=False)
        by_email = claim.channel == Channel.EMAIL
        template = "code" if by_email else "link"
        headers: dict[str, str] = {}
        if claim.purpose == "reminder":
            # Unasked-for mail: one click stops it (RFC 8058); codes are asked for each time.
            template = "reminder"
            _, headers = one_click_unsubscribe(
                self.settings.public_url, self.hasher, claim.destination
            )
        message = self.renderer.render(
            template,
            claim.locale,
            claim.destination,
            {
                "site_name": site.display_name,
                # A link-channel message carries no code.
                "code": claim.code if by_email else "",
                "minutes": minutes,
                "link_url": self.link_url(claim.link),
            },
            headers=headers,
            site=site.id,
        )
        with provider_call(provider_name(self.email)):
            if reservation is None:
                await self.email.send(message)
            else:
                await reservation.send(message)
        return message.message_id

    async def deliver(self, delivery_id: str) -> str:
        """Run one attempt of ``delivery_id``; returns what happened, for the task result.

        Once claimed, the attempt runs to its recorded outcome even if the task is
        cancelled (a task timeout, a shutdown): cut between DATA and the server's reply,
        the message may be out, and a blind retry would send the code twice. Its own
        bounds are the providers' per-operation timeouts and the outage waits.
        """
        async with self._capacity(delivery_id) as held:
            token = random_hex(8)
            claim = await through_outage(
                lambda: self.store.claim(delivery_id, self.lease_ms, token),
                within=self.settings.queue.task_timeout_seconds,
                what="claim a delivery",
                log={"delivery": delivery_id},
            )
            if isinstance(claim, NotClaimed):
                logger.info(
                    "delivery not sent", extra={"delivery": delivery_id, "why": claim.reason}
                )
                return claim.reason
            reservation = held
            if held is not None and claim.channel not in EMAIL_CHANNELS:
                held.release()  # a delivery enqueued while SMS was off, now SMS
                reservation = None
            attempt = asyncio.ensure_future(self._attempt(claim, reservation))
            try:
                return await asyncio.shield(attempt)
            except asyncio.CancelledError:
                logger.warning(
                    "delivery task cancelled mid-attempt; finishing the attempt first",
                    extra={"delivery": delivery_id, "verification": claim.verification_id},
                )
                while not attempt.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(attempt)
                raise

    async def _attempt(self, claim: Claim, reservation: Reservation | None) -> str:
        """Send a claimed delivery and record the outcome, holding the lease throughout."""
        vid = claim.verification_id
        to = mask_destination(claim.channel, claim.destination)
        log = {
            "delivery": claim.delivery_id,
            "verification": vid,
            "attempt": claim.attempt,
            "to": to,
        }
        # The lease is kept until the outcome is recorded, not just until the send returns.
        keeper = _LeaseKeeper(self.store, claim, self.lease_ms, self.settings.queue.lease_seconds)
        try:
            try:
                provider_id = await self._send(claim, reservation)
            except DeliveryError as exc:
                return await self._failed(claim, vid, exc, log)
            except Exception as exc:  # a bug or an unexpected library error: retry, do not lose
                logger.exception("delivery crashed", extra=log)
                return await self._failed(
                    claim,
                    vid,
                    DeliveryError(f"internal error: {type(exc).__name__}", retryable=True),
                    log,
                )
            await self._persist(lambda: self.store.sent(claim, vid, provider_id), log)
            _SENT.log(log)
            return "sent"
        finally:
            keeper.stop()

    async def _persist(self, record: Callable[[], Awaitable[str]], log: dict[str, object]) -> None:
        """Record an outcome, waiting out a Redis outage.

        Once a message has left, forgetting that it did would send it again after the
        lease runs out.
        """
        within = self.settings.queue.task_timeout_seconds
        await through_outage(record, within=within, what="record a delivery outcome", log=log)

    async def _failed(
        self, claim: Claim, vid: str, exc: DeliveryError, log: dict[str, object]
    ) -> str:
        q = self.settings.queue
        if exc.retryable and claim.attempt < q.max_attempts:
            delay = backoff_seconds(claim.attempt, q.backoff_base_seconds, q.backoff_max_seconds)
            at = now_ms() + int(delay * 1000)
            await self._persist(lambda: self.store.retry_at(claim, vid, exc.reason, at), log)
            logger.warning(
                "delivery will be retried",
                extra={**log, "reason": exc.reason, "in_seconds": round(delay, 2)},
            )
            return "retry"
        await self._persist(
            lambda: self.store.failed(claim, vid, exc.reason, maybe_sent=exc.maybe_sent), log
        )
        logger.error("delivery failed", extra={**log, "reason": exc.reason})
        return "failed"
