"""Running real Tidings processes from tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from config.settings import Settings

BIN = Path(sys.executable).parent


def process_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process load the same settings as ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    sites = [
        {
            "id": s.id,
            "name": s.name,
            "webhook_secrets": [x.get_secret_value() for x in s.webhook_secrets],
            "api_keys": [x.get_secret_value() for x in s.api_keys],
            "channels": [c.value for c in s.channels],
        }
        for s in settings.sites
    ]
    assert settings.secret_key is not None
    env.update(
        {
            "TIDINGS_REDIS_URL": settings.require_redis_url(),
            "TIDINGS_REDIS_PREFIX": settings.redis_prefix,
            "TIDINGS_SECRET_KEY": settings.secret_key.get_secret_value(),
            "TIDINGS_SITES": json.dumps(sites),
            "TIDINGS_EMAIL": settings.email.model_dump_json(
                exclude={"password"}, exclude_none=True
            ),
            "TIDINGS_QUEUE": settings.queue.model_dump_json(),
            "TIDINGS_LOG__FORMAT": "json",
            # One web server per test process unless a test asks for a tier (--workers).
            "TIDINGS_HTTP__WORKERS": "1",
        }
    )
    return env


@contextlib.asynccontextmanager
async def running(
    *argv: str,
    settings: Settings,
    stop_signal: int = signal.SIGTERM,
    env: dict[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a command from the venv's bin folder for the duration of the block.

    ``env``: variables on top of those that reproduce ``settings``.
    """
    process = await asyncio.create_subprocess_exec(
        str(BIN / argv[0]),
        *argv[1:],
        env={**process_env(settings), **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, stop_signal)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
