"""Sending a broadcast from the workers: paced, resumable, each person at most once.

A task sends one stretch (about ``STRETCH_SECONDS``) under a lease, then hands the rest
to a new task, so no task outlives the task timeout and a crash costs one lease. Every
send takes a slot on one bot-wide schedule in Redis (a GCRA: each slot is the previous
one plus 1/rate), so the configured rate holds across broadcasts and workers, and
Telegram's ``retry_after`` pushes the whole schedule back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.broadcasts import LEASE_MS, OUTCOMES, STRETCH_SECONDS, Broadcast, BroadcastStore
from bot.reminders import fired_message
from config.settings import Settings
from tasks.delivery import backoff_seconds
from tasks.email.rendering import EmailRenderer
from tasks.email.senders import EmailSender
from tasks.errors import DeliveryError
from tasks.metrics import broadcast_message, provider_call, provider_name
from verification.codes import CodeHasher
from verification.models import now_ms
from verification.scripts import as_text

if TYPE_CHECKING:  # aiogram takes seconds to import: only processes with a bot load it
    from aiogram import Bot
    from aiogram.exceptions import TelegramAPIError

logger = logging.getLogger(__name__)

__all__ = ["LEASE_MS", "STRETCH_SECONDS", "Broadcaster", "send_reminder"]
PROGRESS_EVERY_SECONDS = 2.0
MAX_TRIES = 5
# Sends in flight at once; the schedule, not this, sets the pace.
SENDERS = 8


@dataclass
class _Run:
    broadcast: Broadcast
    token: str
    interval_ms: int
    deadline: float
    stop: bool = False


def _final_outcome(exc: TelegramAPIError) -> str:
    """How a send that will not be retried counts."""
    from aiogram.exceptions import TelegramForbiddenError, TelegramNetworkError

    if isinstance(exc, TelegramForbiddenError):
        return "blocked"  # the person blocked the bot (or deleted their account)
    if isinstance(exc, TelegramNetworkError):
        return "unknown"  # it may have reached Telegram: sending again could double it
    return "failed"  # chat not found and other refusals


class Broadcaster:
    """Runs broadcasts with the workers' ``Bot``."""

    def __init__(
        self,
        settings: Settings,
        store: BroadcastStore,
        bot: Bot | None,
        email: EmailSender,
        renderer: EmailRenderer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._bot = bot
        self._email = email
        self._renderer = renderer
        self._hasher = CodeHasher(settings.require_secret_key())
        self._keys = store.keys
        self._scripts = store.scripts

    @property
    def interval_ms(self) -> int:
        """Milliseconds between sends at the configured rate (0: no limit)."""
        rate = self._settings.telegram.broadcast_rate
        return round(1000 / rate) if rate > 0 else 0

    def _lease_keys(self, broadcast_id: str) -> list[str]:
        """What claiming and finishing a stretch touch: the broadcast, its lease, in-flight."""
        keys = self._keys
        return [
            keys.broadcast(broadcast_id),
            keys.broadcasts_due,
            keys.broadcast_inflight(broadcast_id),
        ]

    async def run(self, broadcast_id: str) -> str:
        """Send a stretch of ``broadcast_id``; returns ``done``, ``continues`` or why not."""
        token = secrets.token_hex(8)
        claim = as_text(
            await self._scripts.bc_claim(
                keys=self._lease_keys(broadcast_id),
                args=[now_ms(), LEASE_MS, token, broadcast_id],
            )
        )
        if claim[0] != "claimed":
            return " ".join(claim)
        broadcast = await self._store.get(broadcast_id)
        if broadcast is None:
            return "gone"
        loop = asyncio.get_running_loop()
        run = _Run(broadcast, token, self.interval_ms, loop.time() + STRETCH_SECONDS)
        progress = asyncio.create_task(self._show_progress(broadcast_id))
        try:
            await asyncio.gather(*(self._sender(run) for _ in range(SENDERS)))
        finally:
            progress.cancel()
        finished = run.stop and loop.time() < run.deadline
        reply = as_text(
            await self._scripts.bc_finish(
                keys=self._lease_keys(broadcast_id),
                args=[now_ms(), token, "done" if finished else "release", broadcast_id],
            )
        )
        if reply[0] == "done":
            await self._report(broadcast_id)
            return "done"
        return "continues" if reply[0] == "released" else reply[0]

    async def _sender(self, run: _Run) -> None:
        keys = self._keys
        bid = run.broadcast.id
        loop = asyncio.get_running_loop()
        while not run.stop and loop.time() < run.deadline:
            reply = as_text(
                await self._scripts.bc_next(
                    keys=[
                        keys.broadcast(bid),
                        keys.broadcast_audience(bid),
                        keys.broadcast_inflight(bid),
                        keys.subscribers,
                        keys.telegram_rate,
                        keys.broadcasts_due,
                        keys.mail_subscribers,
                    ],
                    args=[now_ms(), run.token, LEASE_MS, run.interval_ms, bid],
                )
            )
            if reply[0] == "send_none":
                continue
            if reply[0] != "send":
                run.stop = True
                return
            index, target, wait_ms = reply[1], reply[2], int(reply[3])
            if target.startswith("m:"):
                channel = "email"
                outcome = await self._send_email(run, target.removeprefix("m:"))
            else:
                channel = "telegram"
                outcome = await self._send_one(run, int(target), wait_ms)
            broadcast_message(channel, outcome)
            await self._scripts.bc_record(
                keys=[keys.broadcast(bid), keys.broadcast_inflight(bid), keys.subscribers],
                args=[index, target, outcome],
            )

    async def _send_email(self, run: _Run, address: str) -> str:
        """One announcement email, with RFC 8058 one-click unsubscribe."""
        locale = await self._store.mail_locale(address)
        url = (
            f"{self._settings.public_url.rstrip('/')}/unsubscribe/"
            f"{self._hasher.unsubscribe_token(address)}"
        )
        text = run.broadcast.text
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        message = self._renderer.render(
            "broadcast",
            locale,
            address,
            {"subject": first_line[:78], "text": text, "unsubscribe_url": url},
            headers={
                "List-Unsubscribe": f"<{url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for attempt in range(1, MAX_TRIES + 1):
            try:
                with provider_call(provider_name(self._email)):
                    await self._email.send(message)
                return "sent"
            except DeliveryError as exc:
                if not exc.retryable or attempt == MAX_TRIES:
                    return "failed"
                await asyncio.sleep(backoff_seconds(attempt, 1.0, 10.0))
        return "failed"

    async def _send_one(self, run: _Run, chat_id: int, wait_ms: int) -> str:
        """Send to one chat at its slot; the outcome counter to add."""
        from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter, TelegramServerError

        b = run.broadcast
        bot = self._bot
        if bot is None:
            return "failed"  # Telegram subscribers, but no bot token any more
        tries = 0
        while tries < MAX_TRIES:
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            if await self._store.paused_until() > now_ms():
                # Telegram said retry_after after this slot was handed out: a new slot.
                wait_ms = await self._slot(run, 0)
                continue
            tries += 1
            try:
                with provider_call("telegram"):
                    if b.kind == "copy" and b.from_chat is not None and b.message_id is not None:
                        await bot.copy_message(chat_id, b.from_chat, b.message_id)
                    else:
                        await bot.send_message(chat_id, b.text)
                return "sent"
            except TelegramRetryAfter as exc:
                # Telegram wants the whole bot to slow down: move every later slot back.
                logger.warning(
                    "Telegram asked to slow down",
                    extra={"broadcast": b.id, "retry_after": exc.retry_after},
                )
                pause_ms = exc.retry_after * 1000
            except TelegramServerError:
                pause_ms = 1000
            except TelegramAPIError as exc:
                return _final_outcome(exc)
            wait_ms = await self._slot(run, pause_ms)
        return "failed"

    async def _slot(self, run: _Run, pause_ms: int) -> int:
        """Milliseconds until this sender's next slot; ``pause_ms`` pauses the whole bot."""
        keys = [self._keys.telegram_rate, self._keys.telegram_pause]
        return int(
            await self._scripts.bc_slot(keys=keys, args=[now_ms(), run.interval_ms, pause_ms])
        )

    async def _show_progress(self, broadcast_id: str) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_SECONDS)
            b = await self._store.get(broadcast_id)
            if b is not None:
                await self._edit(b, f"Broadcast {b.id}: {b.done_count} of {b.total} done…")

    async def _report(self, broadcast_id: str) -> None:
        b = await self._store.get(broadcast_id)
        if b is None:
            return
        counts = ", ".join(f"{name} {b.counts[name]}" for name in OUTCOMES)
        seconds = b.duration_seconds()
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        verb = "canceled" if b.state == "canceled" else "finished"
        logger.info("broadcast " + verb, extra={"broadcast": b.id, **b.counts})
        await self._edit(b, f"Broadcast {b.id} {verb}{took}: {counts} (of {b.total}).")

    async def _edit(self, b: Broadcast, text: str) -> None:
        from aiogram.exceptions import TelegramAPIError

        if b.progress_chat is None or b.progress_message is None or self._bot is None:
            return
        try:
            await self._bot.edit_message_text(
                text=text, chat_id=b.progress_chat, message_id=b.progress_message
            )
        except TelegramAPIError:
            logger.info("could not update a broadcast's progress message", exc_info=True)


async def send_reminder(bot: Bot | None, chat_id: int, text: str, lang: str) -> tuple[str, str]:
    """Send a reminder into its chat: ``(outcome, error)``, retrying Telegram's 429s."""
    from aiogram.exceptions import TelegramAPIError, TelegramRetryAfter

    if bot is None:
        return "failed", "no Telegram bot is configured"
    for _ in range(MAX_TRIES):
        try:
            with provider_call("telegram"):
                await bot.send_message(chat_id, fired_message(text, lang))
            return "sent", ""
        except TelegramRetryAfter as exc:
            await asyncio.sleep(exc.retry_after)
        except TelegramAPIError as exc:
            return "failed", f"{type(exc).__name__}: {exc.message}"[:200]
    return "failed", "Telegram kept asking to slow down"
