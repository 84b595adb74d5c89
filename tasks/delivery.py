"""Sending one delivery: claim, render, send, record. Safe to run more than once."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from config.settings import Settings
from config.sites import Channel, SiteConfig
from tasks.email.rendering import EmailRenderer
from tasks.email.senders import EmailSender
from tasks.errors import DeliveryError
from tasks.sms.base import SmsSender
from tasks.sms.rendering import SmsRenderer
from verification.connections import through_outage
from verification.deliveries import Claim, DeliveryStore, NotClaimed
from verification.models import mask_destination, now_ms

logger = logging.getLogger(__name__)


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return float(delay / 2 + random.uniform(0, delay / 2))


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

    async def _keep_lease(self, claim: Claim) -> None:
        """Renew the lease while the send runs, so a live worker's slow send is not retried."""
        while True:
            await asyncio.sleep(self.settings.queue.lease_seconds / 3)
            try:
                if not await self.store.extend(claim, self.lease_ms):
                    return
            except RedisError:
                logger.warning(
                    "could not renew a delivery lease", extra={"delivery": claim.delivery_id}
                )

    async def _send(self, claim: Claim) -> str:
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
            text = self.sms_renderer.render(purpose, claim.locale, claim.destination, params)
            return await self.sms.send(text)
        if claim.channel not in (Channel.EMAIL, Channel.LINK):
            raise DeliveryError(f"no provider for channel {claim.channel!r}", retryable=False)
        by_email = claim.channel == Channel.EMAIL
        template = "code" if by_email else "link"
        if claim.purpose == "reminder":
            template = "reminder"
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
        )
        await self.email.send(message)
        return message.message_id

    async def deliver(self, delivery_id: str) -> str:
        """Run one attempt of ``delivery_id``; returns what happened, for the task result."""
        token = secrets.token_hex(8)
        claim = await through_outage(
            lambda: self.store.claim(delivery_id, self.lease_ms, token),
            within=self.settings.queue.task_timeout_seconds,
            what="claim a delivery",
            log={"delivery": delivery_id},
        )
        if isinstance(claim, NotClaimed):
            logger.info("delivery not sent", extra={"delivery": delivery_id, "why": claim.reason})
            return claim.reason
        vid = claim.verification_id
        to = mask_destination(claim.channel, claim.destination)
        log = {"delivery": delivery_id, "attempt": claim.attempt, "to": to}
        # The lease is kept until the outcome is recorded, not just until the send returns.
        keeper = asyncio.create_task(self._keep_lease(claim), name=f"lease:{delivery_id}")
        try:
            try:
                provider_id = await self._send(claim)
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
            logger.info("delivery sent", extra=log)
            return "sent"
        finally:
            keeper.cancel()

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
