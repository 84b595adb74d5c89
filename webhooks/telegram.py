"""The Telegram webhook: each update handled at most once, never redelivered for nothing.

Telegram delivers an update again after any answer that is not 2xx, and holds the chat's
later updates behind it. So an update is claimed in Redis by its ``update_id`` before it is
handled (a redelivery finds the claim and does nothing), and after the claim it is answered
200 whatever happened: a retry could only repeat what the handler already did. The one
answer that asks for a redelivery is the 503 when the claim itself cannot be written (Redis
is unreachable): then nothing has happened yet.

Telegram's 429 and 5xx answers to the bot's own calls are retried in place, a few times, so
a passing hiccup does not cost the person their reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from verification.connections import is_unavailable
from verification.keys import Keys
from webhooks import keys
from webhooks.problems import Problem

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
#: How long an update's claim is kept: Telegram gives up on an update after a day.
UPDATE_SEEN_SECONDS = 86_400
#: Tries of one Bot API call that Telegram answered 429 or 5xx.
CALL_TRIES = 3
#: A longer ``retry_after`` is not waited for inside a webhook request (Telegram waits 60 s).
MAX_RETRY_AFTER_SECONDS = 5
#: Telegram's answers that say the call can never succeed as made.
PERMANENT_ERRORS = (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramUnauthorizedError,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramMigrateToChat,
)


def update_seen_key(redis_keys: Keys, bot_id: int, update_id: int) -> str:
    """The claim of one update (``update_id`` counts per bot, so the bot's id is in it)."""
    return f"{redis_keys.prefix}:tg:update:{bot_id}:{update_id}"


class RetryTransient(BaseRequestMiddleware):
    """Retry a Bot API call that Telegram answered 429 or 5xx: it was not carried out."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """Make the call, waiting between tries as Telegram asks."""
        attempt = 1
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if attempt >= CALL_TRIES or exc.retry_after > MAX_RETRY_AFTER_SECONDS:
                    raise
                wait = float(exc.retry_after)
            except TelegramServerError:
                if attempt >= CALL_TRIES:
                    raise
                wait = 0.5 * attempt
            await asyncio.sleep(wait)
            attempt += 1


class TelegramWebhook:
    """The aiohttp handler Telegram posts updates to."""

    def __init__(
        self, dispatcher: Dispatcher, bot: Bot, secret_token: str, registry: CollectorRegistry
    ) -> None:
        self._dispatcher = dispatcher
        self._bot = bot
        self._secret = secret_token.encode()
        self._updates = Counter(
            "tidings_telegram_updates",
            "Telegram updates received on the webhook, by outcome.",
            ["outcome"],
            registry=registry,
        )
        bot.session.middleware(RetryTransient())

    async def handle(self, request: web.Request) -> web.Response:
        """Check the secret token, claim the update, handle it; 200 unless nothing happened."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not secrets.compare_digest(given, self._secret):
            raise Problem("unauthorized", f"missing or wrong {SECRET_HEADER}")
        update = self._parse(await request.read())
        if update is None:
            self._updates.labels("malformed").inc()
            return _ok()
        app = request.app
        claim = update_seen_key(app[keys.REDIS_KEYS], self._bot.id, update.update_id)
        # A Redis error here propagates: a 503 and a redelivery, since nothing happened yet.
        if not await app[keys.REDIS].set(claim, "1", nx=True, ex=UPDATE_SEEN_SECONDS):
            logger.info("Telegram update already handled", extra={"update_id": update.update_id})
            self._updates.labels("duplicate").inc()
            return _ok()
        self._updates.labels(await self._feed(update)).inc()
        return _ok()

    def _parse(self, body: bytes) -> Update | None:
        """The update, or None (logged) when the body is not one."""
        reason = None
        data: Any = None
        if not body.strip():
            reason = "empty body"
        else:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                reason = "not JSON"
        if reason is None:
            try:
                return Update.model_validate(data, context={"bot": self._bot})
            except (ValidationError, RecursionError):
                reason = "not a Telegram update"
        logger.warning(
            "malformed Telegram update ignored", extra={"reason": reason, "bytes": len(body)}
        )
        return None

    async def _feed(self, update: Update) -> str:
        """Run the handlers; the outcome to count. Failures are logged, never raised."""
        context: dict[str, Any] = {"update_id": update.update_id}
        try:
            update.event_type  # noqa: B018 - raises for a kind this aiogram does not know
        except UpdateTypeLookupError:
            # Newer than our aiogram: nothing routes it (and aiogram would log its content).
            logger.info("Telegram update of an unknown kind ignored", extra=context)
            return "unknown"
        try:
            result = await self._dispatcher.feed_update(self._bot, update)
            if isinstance(result, TelegramMethod):  # a handler returned its reply
                await self._bot(result)
        except PERMANENT_ERRORS as exc:
            logger.warning(
                "Telegram refused the bot's answer to an update",
                extra={**context, **_call_of(exc), "description": exc.message},
            )
            return "refused"
        except TelegramAPIError as exc:
            # 429/5xx after the retries, or the network: the call may even have gone through.
            logger.warning(
                "the bot's answer to an update could not be sent; it is not tried again",
                extra={**context, **_call_of(exc)},
            )
            return "unsent"
        except Exception as exc:
            if is_unavailable(exc):
                logger.warning(
                    "redis unavailable while handling a Telegram update; not tried again",
                    extra={**context, "error": type(exc).__name__},
                )
            else:
                logger.exception("a Telegram update's handler failed", extra=context)
            return "failed"
        return "handled"


def _call_of(exc: TelegramAPIError) -> dict[str, str]:
    return {"error": type(exc).__name__, "method": type(exc.method).__name__}


def _ok() -> web.Response:
    return web.json_response({})
