"""The bot's admin actions on the command line: ``bot``, ``broadcast`` and ``stats``."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from tidings.operator_settings import data_dir_option, operator_settings

if TYPE_CHECKING:  # imported lazily at run time so `tidings --help` stays fast
    from aiogram import Bot
    from redis.asyncio import Redis

    from bot.broadcasts import Broadcast
    from config.settings import Settings
    from verification.keys import Keys

T = TypeVar("T")


def _run_with_bot(action: Callable[..., Awaitable[T]]) -> T:
    """Run ``action(bot, settings)`` with a Bot whose session is closed afterwards.

    Settings come from the environment only: a dev keeps no Telegram token in its folder.
    """
    import asyncio

    from bot.factory import create_bot
    from config.settings import load_settings

    settings = load_settings()

    async def run() -> T:
        bot = create_bot(settings)
        from aiogram.exceptions import TelegramAPIError

        try:
            return await action(bot, settings)
        except TelegramAPIError as exc:
            # Telegram's own reason (bad URL, bad token, unreachable) in one line.
            reason = exc.message
            if settings.telegram.token is not None:  # a URL in a network error carries it
                reason = reason.replace(settings.telegram.token.get_secret_value(), "[redacted]")
            raise click.ClickException(f"Telegram: {reason}") from None
        finally:
            await bot.session.close()

    return asyncio.run(run())


def _run_with_redis(action: Callable[..., Awaitable[T]], data_dir: Path | None) -> T:
    """Run ``action(redis, keys, settings)`` against the configured Redis, or the dev's."""
    settings = operator_settings(data_dir)  # first: no Redis known is said at once
    import asyncio

    from verification.connections import open_redis
    from verification.keys import Layout

    async def run() -> T:
        redis = open_redis(settings)
        try:
            return await action(redis, Layout.for_settings(settings).home, settings)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _admin_language() -> str:
    """The language of the admin's terminal (POSIX locale variables), else English."""
    from config.sites import normalise_locale

    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(name):
            return normalise_locale(value)
    return "en"


@click.group("bot")
def bot_group() -> None:
    """Point Telegram at the webhook, or look at what it has."""


@bot_group.command("set-webhook")
@click.option("--drop-pending", is_flag=True, help="Forget updates Telegram still holds.")
def set_webhook(drop_pending: bool) -> None:
    """Register TIDINGS_PUBLIC_URL + the webhook path, with the secret token."""
    from bot.factory import create_dispatcher

    async def action(bot: Bot, settings: Settings) -> str:
        secret = settings.telegram.webhook_secret
        if secret is None:
            raise click.ClickException(
                "TIDINGS_TELEGRAM__WEBHOOK_SECRET: required, so only Telegram can post updates"
            )
        url = settings.public_url.rstrip("/") + settings.telegram.webhook_path
        # Only the update types the routers handle (aiogram derives them from the routers).
        allowed = create_dispatcher(settings).resolve_used_update_types()
        await bot.set_webhook(
            url,
            secret_token=secret.get_secret_value(),
            allowed_updates=allowed,
            drop_pending_updates=drop_pending,
        )
        return f"webhook set to {url} for updates: {', '.join(allowed)}"

    click.echo(_run_with_bot(action))


@bot_group.command("delete-webhook")
@click.option("--drop-pending", is_flag=True, help="Forget updates Telegram still holds.")
def delete_webhook(drop_pending: bool) -> None:
    """Stop Telegram posting updates (for polling, as tidings dev does)."""

    async def action(bot: Bot, settings: Settings) -> str:
        await bot.delete_webhook(drop_pending_updates=drop_pending)
        return "webhook deleted"

    click.echo(_run_with_bot(action))


@bot_group.command("info")
def info() -> None:
    """The bot's name and Telegram's view of the webhook."""

    async def action(bot: Bot, settings: Settings) -> dict[str, object]:
        me = await bot.get_me()
        hook = await bot.get_webhook_info()
        return {
            "bot": f"@{me.username}",
            "webhook": hook.url or None,
            "pending_updates": hook.pending_update_count,
            "allowed_updates": hook.allowed_updates,
            "last_error": hook.last_error_message,
        }

    for key, value in _run_with_bot(action).items():
        click.echo(f"{key}: {value}")


@click.group("broadcast")
def broadcast_group() -> None:
    """Send, list and cancel broadcasts to the bot's subscribers."""


@broadcast_group.command("send")
@click.argument("text")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--at",
    "when",
    default=None,
    help="Start later: '10m', 'tomorrow 9:00', '2026-12-01 18:00' (in --timezone).",
)
@click.option("--timezone", "zone", default="UTC", show_default=True)
@data_dir_option
def broadcast_send(
    text: str, yes: bool, when: str | None, zone: str, data_dir: Path | None
) -> None:
    """Send TEXT to every subscriber (the workers do the sending)."""
    from datetime import UTC, datetime

    from bot import texts
    from bot.broadcasts import TooLong, check_text
    from bot.when import WhenError, describe, parse_timezone, parse_when

    try:
        check_text(text)  # before asking, and before anyone is sent anything
    except TooLong as exc:
        message = texts.text(
            "broadcast_too_long", _admin_language(), limit=exc.limit, length=exc.length
        )
        raise click.ClickException(message) from None
    at = None
    if when is not None:
        try:
            tz = parse_timezone(zone)
            parsed = parse_when(when, datetime.now(UTC), tz, command="broadcast_at")
            if parsed.text:
                raise click.ClickException(
                    f"--at: could not read {parsed.text!r} as part of a time"
                )
            at = parsed.at
        except WhenError as exc:
            raise click.ClickException(exc.message("en").splitlines()[0]) from None

    async def action(redis: Redis, keys: Keys, settings: Settings) -> str:
        from bot.broadcasts import BroadcastStore
        from verification.keys import Layout
        from verification.reports import read_snapshot

        store = BroadcastStore(redis, keys)
        audience = (await read_snapshot(redis, Layout.for_settings(settings))).subscribers
        if not yes and not click.confirm(f"Send to {audience} subscribers?"):
            return "not sent"
        bid = await store.draft(created_by=0, text=text)
        if at is not None:
            await store.schedule(bid, at)
            return f"broadcast {bid} scheduled for {describe(at, tz, 'en')}"
        state, total = await store.start(bid)
        # The workers' pump picks a queued broadcast up within a second.
        return f"broadcast {bid} {state} for {total} subscribers"

    click.echo(_run_with_redis(action, data_dir))


@broadcast_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@data_dir_option
def broadcast_list(as_json: bool, data_dir: Path | None) -> None:
    """The latest broadcasts, newest first."""
    import dataclasses
    import json

    async def action(redis: Redis, keys: Keys, settings: Settings) -> list[Broadcast]:
        from bot.broadcasts import BroadcastStore

        return list(await BroadcastStore(redis, keys).recent(20))

    found = _run_with_redis(action, data_dir)
    for b in found:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(b)))
        else:
            click.echo(b.summary())
    if not found and not as_json:
        click.echo("no broadcasts yet")


@broadcast_group.command("cancel")
@click.argument("broadcast_id")
@data_dir_option
def broadcast_cancel(broadcast_id: str, data_dir: Path | None) -> None:
    """Stop a broadcast midway."""

    async def action(redis: Redis, keys: Keys, settings: Settings) -> str:
        from bot.broadcasts import BroadcastStore

        return await BroadcastStore(redis, keys).cancel(broadcast_id)

    state = _run_with_redis(action, data_dir)
    if state != "canceled":
        raise click.ClickException(f"broadcast {broadcast_id}: {state.replace('_', ' ')}")
    click.echo(f"broadcast {broadcast_id} canceled")


@click.command("stats")
@data_dir_option
def stats(data_dir: Path | None) -> None:
    """Subscribers, today's verifications, queue depth, failed deliveries."""

    async def action(redis: Redis, keys: Keys, settings: Settings) -> list[str]:
        from verification.keys import Layout
        from verification.reports import read_snapshot

        return (await read_snapshot(redis, Layout.for_settings(settings))).lines()

    for line in _run_with_redis(action, data_dir):
        click.echo(line)
