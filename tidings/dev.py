"""``tidings dev``: Redis, web, worker and scheduler in one process for a fresh machine."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from aiohttp import web
from taskiq.api import run_receiver_task, run_scheduler_task

from config.logging import setup_logging
from config.settings import LogSettings, Settings, load_settings
from tasks.scheduling import build_scheduler
from tasks.stopping import stop_task
from tasks.worker import build_worker_broker
from tidings.devsite import ensure_dev_files
from tidings.embedded_redis import EmbeddedRedis
from webhooks import keys
from webhooks.app import create_app

logger = logging.getLogger(__name__)


def dev_settings(data_dir: Path, redis_url: str, port: int) -> Settings:
    """Settings for development: outbox delivery and a demo site unless configured."""
    overrides: dict[str, object] = {"dev": True, "redis_url": redis_url}
    sites_file, secret_key = ensure_dev_files(data_dir)
    if not os.environ.get("TIDINGS_SECRET_KEY"):
        overrides["secret_key"] = secret_key
    if not os.environ.get("TIDINGS_SITES_FILE") and not os.environ.get("TIDINGS_SITES"):
        overrides["sites_file"] = sites_file
    if not os.environ.get("TIDINGS_LOG__FORMAT"):
        overrides["log"] = LogSettings(format="text")
    if not os.environ.get("TIDINGS_PUBLIC_URL"):
        overrides["public_url"] = f"http://localhost:{port}"
    settings = load_settings(**overrides)
    if not os.environ.get("TIDINGS_EMAIL__BACKEND"):
        email = settings.email.model_copy(update={"backend": "outbox"})
        settings = settings.model_copy(update={"email": email})
    if not os.environ.get("TIDINGS_SMS__PROVIDER"):
        sms = settings.sms.model_copy(update={"provider": "console"})
        settings = settings.model_copy(update={"sms": sms})
    return settings.model_copy(update={"http": settings.http.model_copy(update={"port": port})})


def banner(settings: Settings, redis_note: str) -> str:
    """What a person needs to try the flow, printed once everything is up."""
    url = settings.public_url
    lines = [
        "",
        "Tidings is running (development mode).",
        f"  web       {url}   docs {url}/docs   outbox {url}/dev/outbox",
        f"  redis     {redis_note}",
    ]
    for site in settings.sites:
        lines += [
            f"  site      {site.id} ({site.display_name})",
            f"    webhook secret  {site.webhook_secrets[0].get_secret_value()}",
            f"    API key         {site.api_keys[0].get_secret_value()}",
        ]
    if settings.sites:
        site = settings.sites[0]
        lines += [
            "",
            "Post a signed signup (in another terminal, same folder):",
            f"  tidings signup --site {site.id} --email you@example.com --url {url}",
            f"  tidings signup --site {site.id} --phone 13800138000 --url {url}",
            "The message appears here and in the outbox; check the code with the curl line",
            "it prints, or open the link in the email.",
        ]
    lines.append("Press Ctrl-C to stop.\n")
    return "\n".join(lines)


async def run_dev(data_dir: Path, port: int) -> None:
    """Run everything until SIGINT or SIGTERM, then stop it all, Redis last."""
    redis_url = os.environ.get("TIDINGS_REDIS_URL")
    embedded: EmbeddedRedis | None = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")
        await embedded.start()
        redis_url = embedded.url
    try:
        settings = dev_settings(data_dir, redis_url, port)
        setup_logging(settings)
        note = f"embedded, {redis_url}, data in {data_dir / 'redis'}" if embedded else redis_url
        await _serve(settings, note)
    finally:
        if embedded is not None:
            await embedded.stop()
            print("Stopped; Redis data kept in", data_dir / "redis", flush=True)


async def _start_polling(app: web.Application) -> asyncio.Task[None] | None:
    """With a bot token, poll Telegram for updates (no public URL needed in development)."""
    bot = app.get(keys.BOT)
    if bot is None:
        return None
    from aiogram.exceptions import TelegramAPIError

    try:
        # Polling and a webhook exclude each other; the webhook is production's.
        await bot.delete_webhook()
    except TelegramAPIError as exc:
        logger.error("Telegram bot unavailable", extra={"error": type(exc).__name__})
        return None
    dispatcher = app[keys.DISPATCHER]
    return asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False),
        name="telegram polling",
    )


async def _serve(settings: Settings, redis_note: str) -> None:
    stop = asyncio.Event()
    polling: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    worker_broker, _ = build_worker_broker(settings)
    worker = asyncio.create_task(
        run_receiver_task(worker_broker, run_startup=True, max_async_tasks=50), name="worker"
    )
    scheduler = build_scheduler(settings)
    await scheduler.startup()
    ticker = asyncio.create_task(run_scheduler_task(scheduler), name="scheduler")
    try:
        site = web.TCPSite(runner, "127.0.0.1", settings.http.port)
        await site.start()
        polling = await _start_polling(app)
        print(banner(settings, redis_note), flush=True)
        await stop.wait()
        print("Stopping…", flush=True)
    finally:
        if polling is not None:
            await app[keys.DISPATCHER].stop_polling()
            await stop_task(polling)
        for task in (ticker, worker):
            await stop_task(task)
        for source in scheduler.sources:
            await source.shutdown()
        await scheduler.shutdown()
        await worker_broker.shutdown()
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
