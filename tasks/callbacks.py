"""POSTing signed events to sites' callback URLs, on the Standard Webhooks retry schedule."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from config.settings import Settings
from config.sites import SiteConfig
from verification.events import EventClaim, EventStore
from verification.models import now_ms

logger = logging.getLogger(__name__)

LEASE_MARGIN_MS = 15_000


@dataclass(slots=True)
class EventSender:
    """Sends one event attempt and records what happened."""

    settings: Settings
    store: EventStore
    session: aiohttp.ClientSession
    sites: dict[str, SiteConfig]

    @property
    def lease_ms(self) -> int:
        """An attempt is bounded by the HTTP timeout; the lease outlives it."""
        return int(self.settings.events.timeout_seconds * 1000) + LEASE_MARGIN_MS

    def _next_attempt_ms(self, attempt: int) -> int | None:
        schedule = self.settings.events.retry_schedule_seconds
        if attempt > len(schedule):
            return None
        delay = schedule[attempt - 1]
        return now_ms() + int(delay * random.uniform(0.9, 1.1) * 1000)

    async def send(self, event_id: str) -> str:
        """One attempt: 2xx delivered, 410 stopped for good, anything else retried."""
        claim = await self.store.claim(event_id, self.lease_ms)
        if claim is None:
            return "not claimed"
        site = self.sites.get(claim.site)
        if site is None or site.callback_url is None:
            return await self.store.record(claim, "skipped", "site has no callback URL")
        body = json.dumps(await self.store.payload(claim), ensure_ascii=False)
        status, detail = await self._post(site, claim, body)
        log = {"event": event_id, "type": claim.type, "attempt": claim.attempt, "status": status}
        if 200 <= status < 300:
            logger.info("event delivered", extra=log)
            return await self.store.record(claim, "delivered")
        if status == 410:
            logger.warning("site answered 410 Gone; not retrying", extra=log)
            return await self.store.record(claim, "stopped", "410 Gone")
        next_at = self._next_attempt_ms(claim.attempt)
        if next_at is None:
            logger.error("event failed for good", extra={**log, "reason": detail})
            return await self.store.record(claim, "failed", detail)
        logger.warning("event will be retried", extra={**log, "reason": detail})
        return await self.store.record(claim, "retry", detail, next_at)

    async def _post(self, site: SiteConfig, claim: EventClaim, body: str) -> tuple[int, str]:
        # The same webhook-id on every attempt; the timestamp and signature are per attempt.
        now = datetime.now(UTC)
        signer = Webhook(site.webhook_secrets[0].get_secret_value())
        headers = {
            "content-type": "application/json",
            "user-agent": "Tidings-Webhooks/1",
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(claim.event_id, now, body),
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.events.timeout_seconds)
        try:
            async with self.session.post(
                str(site.callback_url), data=body.encode(), headers=headers, timeout=timeout
            ) as response:
                return response.status, f"HTTP {response.status}"
        except TimeoutError:
            return 0, "timeout"
        except aiohttp.ClientError as exc:
            return 0, f"network error: {type(exc).__name__}"
