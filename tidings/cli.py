"""The ``tidings`` command.

Only click is imported up front: each subcommand imports what it needs, so that
``tidings --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tidings.errors import CliError, run_cli
from tidings.operator_settings import (
    DEFAULT_DATA_DIR,
    data_dir_option,
    nothing_found,
    operator_settings,
)

if TYPE_CHECKING:
    import asyncio

    from config.settings import Settings
    from config.sites import SiteConfig


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment (errors are reported by :func:`main`, in one line)."""
    from config.settings import load_settings

    return load_settings(**overrides)


def _run(coroutine: Any) -> Any:
    import asyncio

    return asyncio.run(coroutine)


@click.group()
@click.version_option(package_name="tidings", prog_name="tidings")
def cli() -> None:
    """Tidings: verification codes and messages by email, SMS and Telegram."""


def main() -> None:
    """The console script: the CLI, every error as one line on stderr."""
    run_cli(cli)


@cli.command()
@click.option("--port", default=8080, show_default=True, help="Port of the web app.")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True
)
def dev(port: int, data_dir: Path) -> None:
    """Everything in one process: embedded Redis, web, worker, scheduler, outbox.

    Operator commands run in the same folder (or with the same --data-dir) find it.
    """
    from tidings.dev import run_dev

    _run(run_dev(data_dir, port))


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
        _run(check())
    except LayoutMismatch as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=None,
    help="Server processes on the port (default TIDINGS_HTTP__WORKERS, else one per core).",
)
def web(workers: int | None) -> None:
    """Run the web app (webhooks, API, metrics)."""
    from webhooks.tier import serve_web

    settings = _settings()
    settings.redis_target()
    code = serve_web(settings, workers, _event_loop, lambda: _check_layout(settings, wait=False))
    sys.exit(code)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The event loop for a server process: uvloop where it exists, else asyncio's.

    taskiq's worker picks uvloop up by itself when it is installed.
    """
    import asyncio

    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _taskiq(argv: list[str]) -> None:
    from taskiq.__main__ import main as taskiq_main

    sys.argv = ["taskiq", *argv]
    taskiq_main()


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run delivery workers (extra options go to taskiq worker)."""
    settings = _settings()
    settings.redis_target()
    settings.require_secret_key()
    from config.logging import setup_logging

    setup_logging(settings)
    from tasks.ops import serving_while_starting

    with serving_while_starting(settings, "worker"):  # /readyz says why while Redis is away
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Run the scheduler: reminders, scheduled broadcasts, periodic jobs.

    Extra options go to taskiq scheduler.
    """
    import signal

    settings = _settings()
    settings.redis_target()
    from config.logging import setup_logging

    setup_logging(settings)
    from tasks.ops import serving_while_starting

    with serving_while_starting(settings, "scheduler"):
        _check_layout(settings, wait=True)
    # taskiq shuts the scheduler down cleanly on Ctrl-C only; make SIGTERM (docker stop,
    # systemd) take the same path, so claims in flight are confirmed or handed back.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    _taskiq(["scheduler", "tasks.scheduling:create_scheduler", "--no-configure-logging", *ctx.args])


@cli.command()
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
    settings.redis_target()

    async def run() -> int:
        redis = open_redis(settings)
        source = Redis.from_url(source_url) if source_url else None
        try:
            return await move(redis, Layout.for_settings(settings), source=source)
        finally:
            await redis.aclose()
            if source is not None:
                await source.aclose()

    moved = _run(run())
    click.echo(f"moved {moved} key(s); the data is in layout {_layout_version()}")


def _layout_version() -> int:
    from verification.keys import LAYOUT_VERSION

    return LAYOUT_VERSION


@cli.group()
def sites() -> None:
    """Inspect configured sites or generate secrets for a new one."""


@sites.command("list")
@data_dir_option
def sites_list(data_dir: Path | None) -> None:
    """List sites (never their secrets)."""
    configured = operator_settings(data_dir, need_redis=False).sites
    if not configured:
        raise CliError(
            "no sites configured: set TIDINGS_SITES_FILE, or run this where `tidings dev` runs"
        )
    for site in configured:
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


@cli.group()
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
@data_dir_option
def deliveries_failed(limit: int, as_json: bool, data_dir: Path | None) -> None:
    """List the newest dead-lettered deliveries with their reasons."""
    import json

    settings = operator_settings(data_dir)
    rows = _run(_with_service(settings, lambda s: s.failed_deliveries(limit)))
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
@data_dir_option
def deliveries_retry(delivery_id: str, data_dir: Path | None) -> None:
    """Send a failed delivery again with a fresh code (reopening a failed verification)."""
    from verification.errors import VerificationError

    settings = operator_settings(data_dir)
    try:
        new_id = _run(_with_service(settings, lambda s: s.replay_delivery(delivery_id)))
    except VerificationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued again as {new_id}")


@cli.command()
@click.option("--site", "site_id", default="demo", show_default=True)
@click.option("--email", default=None, help="Where the code or link goes by email.")
@click.option("--phone", default=None, help="Where the code goes by SMS (E.164 or national).")
@click.option(
    "--channel",
    type=click.Choice(["email", "sms", "link", "telegram"]),
    default=None,
    help="How to verify [default: email, or sms when only --phone is given].",
)
@click.option("--user-id", default=None, help="The site's user id (random if omitted).")
@click.option("--locale", default=None, help="en or zh.")
@click.option(
    "--url", default=None, help="Tidings' address [default: the tidings dev running here]."
)
@data_dir_option
def signup(
    site_id: str,
    email: str | None,
    phone: str | None,
    channel: str | None,
    user_id: str | None,
    locale: str | None,
    url: str | None,
    data_dir: Path | None,
) -> None:
    """Post a correctly signed signup.created webhook, as a site would."""
    channel = channel or ("email" if email or not phone else "sms")
    if channel != "telegram" and not (email or phone):
        raise click.UsageError("give --email, --phone or both (or --channel telegram)")
    settings = operator_settings(data_dir, need_redis=False)
    site = next((s for s in settings.sites if s.id == site_id), None)
    if site is None:
        if not settings.sites:
            raise CliError(nothing_found(data_dir))
        known = ", ".join(s.id for s in settings.sites)
        raise CliError(f"no site {site_id!r} is configured (sites: {known})")
    url = (url or settings.public_url).rstrip("/")
    status, body = _run(_post_signup(url, site, channel, email, phone, user_id, locale))
    _print_answer(url, site.api_keys[0].get_secret_value(), channel, status, body)
    if status >= 400:
        sys.exit(1)


async def _post_signup(
    url: str,
    site: SiteConfig,
    channel: str,
    email: str | None,
    phone: str | None,
    user_id: str | None,
    locale: str | None,
) -> tuple[int, Any]:
    import uuid
    from datetime import UTC, datetime

    import aiohttp

    from tidings.signup_client import post_signup

    data: dict[str, Any] = {
        "user_id": user_id or f"user-{uuid.uuid4().hex[:8]}",
        "channel": channel,
    }
    for key, value in (("email", email), ("phone", phone), ("locale", locale)):
        if value:
            data[key] = value
    event = {"type": "signup.created", "timestamp": datetime.now(UTC).isoformat(), "data": data}
    try:
        return await post_signup(url, site.id, site.webhook_secrets[0].get_secret_value(), event)
    except aiohttp.ClientConnectionError as exc:
        raise CliError(
            f"cannot reach Tidings at {url} ({exc}); is `tidings dev` running?"
        ) from None


def _print_answer(url: str, api_key: str, channel: str, status: int, body: Any) -> None:
    """The answer, and what to do next with the verification it created."""
    import json

    click.echo(f"HTTP {status}")
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    if status != 202:
        return
    if channel == "telegram":
        click.echo(f"\nOpen {body.get('telegram_link')} in Telegram and press Start.")
        return
    if channel == "link":
        click.echo("\nOpen the link in the email to approve the verification.")
        return
    # CODE is no number: pasted unchanged, the API refuses it (422) without counting an attempt.
    click.echo(
        "\nCheck the code from the message with this line, CODE replaced by it"
        + (" (or open the link in the email):\n" if channel == "email" else ":\n")
        + f"  curl -s -X POST {url}/v1/verifications/{body['id']}/check "
        f"-H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' "
        '-d \'{"code": "CODE"}\''
    )


def _add_bot_commands() -> None:
    from tidings.botcli import bot_group, broadcast_group, stats

    cli.add_command(bot_group)
    cli.add_command(broadcast_group)
    cli.add_command(stats)


_add_bot_commands()


def _add_health_command() -> None:
    from tidings.health import health

    cli.add_command(health)


_add_health_command()
