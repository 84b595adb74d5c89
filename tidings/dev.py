"""``tidings dev``: Redis, web, worker and scheduler in one process for a fresh machine."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from taskiq.api import run_receiver_task, run_scheduler_task

from config.logging import setup_logging
from config.settings import LogSettings, Settings, load_settings
from tasks.scheduling import build_scheduler
from tasks.stopping import stop_task
from tasks.worker import build_worker_broker
from tidings.devsite import ensure_dev_files
from tidings.devstate import AlreadyRunning, DevLock, DevState
from tidings.embedded_redis import EmbeddedRedis
from tidings.errors import CliError
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
    lines.append(f"  delivery  {delivery_note(settings)}")
    if settings.sites:
        site = settings.sites[0]
        lines += [
            "",
            "Post a signed signup (in another terminal, same folder):",
            f"  tidings signup --site {site.id} --email you@example.com",
            f"  tidings signup --site {site.id} --phone 13800138000",
            f"{where_messages_go(settings)}; check the code with the curl line",
            "it prints, or open the link in the email. Operator commands (tidings stats,",
            "tidings deliveries failed, …) run in this folder find this instance by themselves.",
        ]
    lines.append("Press Ctrl-C to stop.\n")
    return "\n".join(lines)


def delivery_note(settings: Settings) -> str:
    """Where email and SMS really go, for the banner."""
    email = "outbox" if settings.email.backend == "outbox" else f"SMTP {settings.email.host}"
    sms = {"console": "outbox", "ronglian": "Ronglian (real SMS)", "none": "off"}
    return f"email → {email}, SMS → {sms[settings.sms.provider]}"


def where_messages_go(settings: Settings) -> str:
    """The truth about where a test message lands, for the banner."""
    if settings.email.backend == "outbox":
        return "The message appears here and in the outbox"
    return f"Email goes to the SMTP server {settings.email.host} (not the outbox)"


async def run_dev(data_dir: Path, port: int) -> None:
    """Run everything until SIGINT or SIGTERM, then stop it all, Redis last.

    Holds the data folder's lock throughout: a second dev here stops before its Redis starts.
    """
    lock = DevLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    try:
        await _run_locked(lock, port)
    finally:
        lock.release()


async def _run_locked(lock: DevLock, port: int) -> None:
    data_dir = lock.data_dir
    redis_url = os.environ.get("TIDINGS_REDIS_URL")
    embedded: EmbeddedRedis | None = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir / "redis")
        await embedded.start()
        redis_url = embedded.url
    try:
        settings = dev_settings(data_dir, redis_url, port)
        setup_logging(settings)
        quiet_routine_logs(settings)
        note = (
            f"embedded, {redis_url}, data in {data_dir / 'redis'}" if embedded else _safe(redis_url)
        )
        await _serve(settings, note, lambda: lock.publish(dev_state(data_dir, settings)))
    finally:
        if embedded is not None:
            await embedded.stop()
            print("Stopped; Redis data kept in", data_dir / "redis", flush=True)


def _safe(redis_url: str) -> str:
    """The URL without its password, for the banner."""
    return redis_url if urlsplit(redis_url).password is None else "external (URL with a password)"


def dev_state(data_dir: Path, settings: Settings) -> DevState:
    """What operator commands need to reach this dev: addresses and paths, no secret."""
    folder = data_dir.resolve()
    redis_url = settings.require_redis_url()
    return DevState(
        pid=os.getpid(),
        data_dir=str(folder),
        web_url=f"http://127.0.0.1:{settings.http.port}",
        redis_url=redis_url if urlsplit(redis_url).password is None else None,
        redis_prefix=settings.redis_prefix,
        sites_file=str(settings.sites_file.resolve()) if settings.sites_file else None,
        secret_key_file=None
        if os.environ.get("TIDINGS_SECRET_KEY")
        else str(folder / "secret_key"),
    )


def quiet_routine_logs(settings: Settings) -> None:
    """Keep per-request and per-minute lines out of the terminal unless DEBUG is asked for.

    In dev the terminal doubles as the mailbox: a line per request and per scheduler tick
    would scroll the captured email away.
    """
    if settings.log.level == "DEBUG":
        return
    for name in ("tidings.access", "taskiq.cli.scheduler.run"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


async def _serve(settings: Settings, redis_note: str, ready: Callable[[], None]) -> None:
    stop = asyncio.Event()
    polling: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        # Bound first: a busy port stops start-up before a worker or scheduler runs.
        await web.TCPSite(runner, "127.0.0.1", settings.http.port).start()
    except OSError as exc:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        port = settings.http.port
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} is in use; choose another with --port") from None
        raise CliError(f"cannot listen on port {port} ({exc.strerror})") from None
    worker_broker, _ = build_worker_broker(settings)
    worker = asyncio.create_task(
        run_receiver_task(worker_broker, run_startup=True, max_async_tasks=50), name="worker"
    )
    scheduler = build_scheduler(settings)
    await scheduler.startup()
    ticker = asyncio.create_task(run_scheduler_task(scheduler), name="scheduler")
    try:
        polling = await _start_polling(app)
        ready()
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
