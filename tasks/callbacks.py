"""POSTing signed events to sites' callback URLs, on the Standard Webhooks retry schedule."""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from config.settings import Settings
from config.sites import SiteConfig
from verification.connections import T, through_outage
from verification.events import EventClaim, EventStore
from verification.models import now_ms

logger = logging.getLogger(__name__)

LEASE_MARGIN_MS = 15_000


def sign_with_all(site: SiteConfig, msg_id: str, at: datetime, body: str) -> str:
    """One ``v1,…`` signature per secret of the site, space-separated (Standard Webhooks).

    During a key rotation the site may hold the old or the new secret; either verifies.
    """
    return " ".join(
        Webhook(secret.get_secret_value()).sign(msg_id, at, body) for secret in site.webhook_secrets
    )


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
        log: dict[str, object] = {"event": event_id}
        token = secrets.token_hex(8)
        claim = await self._through_outage(
            lambda: self.store.claim(event_id, self.lease_ms, token), "claim an event", log
        )
        if claim is None:
            return "not claimed"
        site = self.sites.get(claim.site)
        if site is None or site.callback_url is None:
            return await self._record(claim, log, "skipped", "site has no callback URL")
        payload = await self._through_outage(
            lambda: self.store.payload(claim), "read an event payload", log
        )
        body = json.dumps(payload, ensure_ascii=False)
        status, detail = await self._post(site, claim, body)
        log.update(type=claim.type, attempt=claim.attempt, status=status)
        if 200 <= status < 300:
            logger.info("event delivered", extra=log)
            return await self._record(claim, log, "delivered")
        if status == 410:
            logger.warning("site answered 410 Gone; not retrying", extra=log)
            return await self._record(claim, log, "stopped", "410 Gone")
        next_at = self._next_attempt_ms(claim.attempt)
        if next_at is None:
            logger.error("event failed for good", extra={**log, "reason": detail})
            return await self._record(claim, log, "failed", detail)
        logger.warning("event will be retried", extra={**log, "reason": detail})
        return await self._record(claim, log, "retry", detail, next_at)

    async def _through_outage(
        self, op: Callable[[], Awaitable[T]], what: str, log: dict[str, object]
    ) -> T:
        within = self.settings.queue.task_timeout_seconds
        return await through_outage(op, within=within, what=what, log=log)

    async def _record(
        self,
        claim: EventClaim,
        log: dict[str, object],
        outcome: str,
        detail: str = "",
        next_at_ms: int = 0,
    ) -> str:
        # A site that got the event must not get it again because Redis blinked.
        return await self._through_outage(
            lambda: self.store.record(claim, outcome, detail, next_at_ms),
            "record an event outcome",
            log,
        )

    async def _post(self, site: SiteConfig, claim: EventClaim, body: str) -> tuple[int, str]:
        # The same webhook-id on every attempt; the timestamp and signature are per attempt.
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "Tidings-Webhooks/1",
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign_with_all(site, claim.event_id, now, body),
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
