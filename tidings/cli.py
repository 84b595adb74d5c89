"""The ``tidings`` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from config.settings import ConfigError, Settings, load_settings

DEFAULT_DATA_DIR = Path(".tidings")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """Tidings: verification codes and messages by email, SMS and Telegram."""


@main.command()
@click.option("--port", default=8080, show_default=True, help="Port of the web app.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True
)
def dev(port: int, data_dir: Path) -> None:
    """Everything in one process: embedded Redis, web, worker, scheduler, outbox."""
    from tidings.dev import run_dev

    try:
        asyncio.run(run_dev(data_dir, port))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _check_layout(settings: Settings, *, wait: bool) -> None:
    """Stop with one line if the data in Redis is in another layout than the settings.

    ``wait``: wait (with backoff) while Redis is away, as workers and schedulers do;
    the web skips the check then and starts anyway, answering 503 until Redis is back.
    """
    from verification.connections import is_unavailable, open_redis, until_available
    from verification.keys import Layout
    from verification.migration import LayoutMismatch, ensure_layout

    async def check() -> None:
        redis = open_redis(settings)
        layout = Layout.for_settings(settings)
        try:
            if wait:
                where = settings.redis_target().describe()
                await until_available(
                    lambda: ensure_layout(redis, layout), what="start-up", where=where
                )
            else:
                try:
                    await ensure_layout(redis, layout)
                except Exception as exc:
                    if not is_unavailable(exc):
                        raise
        finally:
            await redis.aclose()

    try:
        asyncio.run(check())
    except LayoutMismatch as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def web() -> None:
    """Run the web app (webhooks, API, metrics)."""
    from config.logging import setup_logging
    from webhooks import serving
    from webhooks.app import create_app

    settings = _settings()
    try:
        settings.redis_target()
        app = create_app(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging(settings)
    _check_layout(settings, wait=False)
    serving.run(app, settings.http, loop=_event_loop(), shutdown_timeout=10)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The event loop for a server process: uvloop where it exists, else asyncio's.

    taskiq's worker picks uvloop up by itself when it is installed.
    """
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _taskiq(argv: list[str]) -> None:
    from taskiq.__main__ import main as taskiq_main

    sys.argv = ["taskiq", *argv]
    taskiq_main()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run delivery workers (extra options go to ``taskiq worker``)."""
    settings = _settings()
    try:
        settings.redis_target()
        settings.require_secret_key()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from config.logging import setup_logging

    setup_logging(settings)
    _check_layout(settings, wait=True)
    q = settings.queue
    _taskiq(
        [
            "worker",
            "tasks.worker:create_broker",
            "--no-configure-logging",
            "--max-async-tasks",
            str(q.max_async_tasks),
            "--wait-tasks-timeout",
            str(q.task_timeout_seconds),
            *ctx.args,
        ]
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Run the scheduler: reminders, scheduled broadcasts, periodic jobs.

    Extra options go to ``taskiq scheduler``.
    """
    import signal

    settings = _settings()
    try:
        settings.redis_target()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from config.logging import setup_logging

    setup_logging(settings)
    _check_layout(settings, wait=True)
    # taskiq shuts the scheduler down cleanly on Ctrl-C only; make SIGTERM (docker stop,
    # systemd) take the same path, so claims in flight are confirmed or handed back.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    _taskiq(["scheduler", "tasks.scheduling:create_scheduler", "--no-configure-logging", *ctx.args])


@main.command()
@click.option(
    "--from",
    "source_url",
    default=None,
    help="A Redis holding the old data, if not the configured one (copied, left as is).",
)
def migrate(source_url: str | None) -> None:
    """Move data of the previous layout into this release's (run with every role stopped)."""
    from redis.asyncio import Redis

    from verification.connections import open_redis
    from verification.keys import Layout
    from verification.migration import migrate as move

    settings = _settings()
    try:
        settings.redis_target()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> int:
        redis = open_redis(settings)
        source = Redis.from_url(source_url) if source_url else None
        try:
            return await move(redis, Layout.for_settings(settings), source=source)
        finally:
            await redis.aclose()
            if source is not None:
                await source.aclose()

    moved = asyncio.run(run())
    click.echo(f"moved {moved} key(s); the data is in layout {_layout_version()}")


def _layout_version() -> int:
    from verification.keys import LAYOUT_VERSION

    return LAYOUT_VERSION


@main.group()
def sites() -> None:
    """Inspect configured sites or generate secrets for a new one."""


@sites.command("list")
def sites_list() -> None:
    """List sites (never their secrets)."""
    for site in _settings().sites:
        click.echo(
            f"{site.id}\t{site.display_name}\tchannels={','.join(site.channels)}\t"
            f"secrets={len(site.webhook_secrets)}\tapi_keys={len(site.api_keys)}"
        )


@sites.command("new")
@click.argument("site_id")
@click.option("--name", default="", help="Display name shown in messages.")
def sites_new(site_id: str, name: str) -> None:
    """Print a TOML block with fresh secrets for a new site."""
    import tomli_w

    from tidings.devsite import site_toml

    click.echo(tomli_w.dumps({"sites": [site_toml(site_id, name or site_id)]}))


@main.group()
def deliveries() -> None:
    """Inspect deliveries that failed for good, and send them again."""


async def _with_service(settings: Settings, action: Any) -> Any:
    from tasks.broker import build_broker
    from tasks.worker import TaskiqDeliveryQueue, register_tasks
    from verification.connections import open_redis
    from verification.service import VerificationService

    redis = open_redis(settings)
    broker = build_broker(settings)
    service = VerificationService(
        redis, settings, TaskiqDeliveryQueue(broker, register_tasks(broker, settings))
    )
    try:
        return await action(service)
    finally:
        await redis.aclose()


@deliveries.command("failed")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def deliveries_failed(limit: int, as_json: bool) -> None:
    """List the newest dead-lettered deliveries with their reasons."""
    rows = asyncio.run(_with_service(_settings(), lambda s: s.failed_deliveries(limit)))
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{row['id']}  {row['failed_at']}  {row['channel']}  attempts={row['attempts']}  "
                f"verification={row['verification_id']} ({row['verification_status']})  "
                f"{row['error']}"
            )
    if not rows and not as_json:
        click.echo("no failed deliveries")


@deliveries.command("retry")
@click.argument("delivery_id")
def deliveries_retry(delivery_id: str) -> None:
    """Send a failed delivery again with a fresh code (reopening a failed verification)."""
    from verification.errors import VerificationError

    try:
        new_id = asyncio.run(_with_service(_settings(), lambda s: s.replay_delivery(delivery_id)))
    except VerificationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued again as {new_id}")


@main.command()
@click.option("--site", "site_id", default="demo", show_default=True)
@click.option("--email", default=None, help="Where the code or link goes by email.")
@click.option("--phone", default=None, help="Where the code goes by SMS (E.164 or national).")
@click.option(
    "--channel",
    type=click.Choice(["email", "sms", "link"]),
    default=None,
    help="How to verify [default: email, or sms when only --phone is given].",
)
@click.option("--user-id", default=None, help="The site's user id (random if omitted).")
@click.option("--locale", default=None, help="en or zh.")
@click.option("--url", default="http://localhost:8080", show_default=True)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True
)
def signup(
    site_id: str,
    email: str | None,
    phone: str | None,
    channel: str | None,
    user_id: str | None,
    locale: str | None,
    url: str,
    data_dir: Path,
) -> None:
    """Post a correctly signed ``signup.created`` webhook, as a site would."""
    from tidings.signup_client import post_signup

    if not (email or phone):
        raise click.UsageError("give --email, --phone or both")

    overrides: dict[str, Any] = {}
    dev_sites = data_dir / "dev-sites.toml"
    if not (os.environ.get("TIDINGS_SITES_FILE") or os.environ.get("TIDINGS_SITES")):
        overrides["sites_file"] = dev_sites if dev_sites.exists() else None
    site = next((s for s in _settings(**overrides).sites if s.id == site_id), None)
    if site is None:
        raise click.ClickException(f"no site {site_id!r} is configured")
    data: dict[str, Any] = {
        "user_id": user_id or f"user-{uuid.uuid4().hex[:8]}",
        "channel": channel or ("email" if email else "sms"),
    }
    if email:
        data["email"] = email
    if phone:
        data["phone"] = phone
    if locale:
        data["locale"] = locale
    event = {"type": "signup.created", "timestamp": datetime.now(UTC).isoformat(), "data": data}
    status, body = asyncio.run(
        post_signup(url, site.id, site.webhook_secrets[0].get_secret_value(), event)
    )
    click.echo(f"HTTP {status}")
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    if status == 202:
        api_key = site.api_keys[0].get_secret_value()
        click.echo(
            "\nCheck the code from the message (or open the link in the email):\n"
            f"  curl -s -X POST {url}/v1/verifications/{body['id']}/check "
            f"-H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' "
            '-d \'{"code": "123456"}\''
        )
    if status >= 400:
        sys.exit(1)


def _add_bot_commands() -> None:
    from tidings.botcli import bot_group, broadcast_group, stats

    main.add_command(bot_group)
    main.add_command(broadcast_group)
    main.add_command(stats)


_add_bot_commands()
