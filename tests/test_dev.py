"""``tidings dev`` on a fresh folder, driven like a person would from two terminals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import signup_event, wait_for
from tidings.embedded_redis import free_port
from tidings.signup_client import signed_headers

TIDINGS = Path(sys.executable).parent / "tidings"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class DevProcess:
    """A running ``tidings dev`` and everything it printed so far (stdout and stderr)."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> str:
        match = re.search(pattern, self.text, re.MULTILINE)
        assert match, f"{pattern!r} not in the output of tidings dev:\n{self.text}"
        return match.group(1)


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def _tidings_dev(folder: Path) -> AsyncIterator[tuple[DevProcess, int]]:
    """``tidings dev --port <free>`` in ``folder`` with no TIDINGS_* settings, banner printed."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(TIDINGS), "dev", "--port", str(port),
        cwd=folder,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )  # fmt: skip
    assert process.stdout is not None
    running = DevProcess(process)
    reader = asyncio.create_task(_collect(process.stdout, running.lines))
    try:
        await wait_for(
            lambda: "Press Ctrl-C to stop." in running.text or process.returncode is not None,
            timeout=30,
            what="the tidings dev banner",
        )
        assert process.returncode is None, running.text
        yield running, port
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
        # Whatever is left of this test's own process group (its redis-server, if stranded).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[tuple[DevProcess, int]]:
    """A running ``tidings dev`` in a fresh folder."""
    async with _tidings_dev(tmp_path) as running:
        yield running


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_runs_the_whole_flow_and_stops_cleanly(
    dev: tuple[DevProcess, int], tmp_path: Path
) -> None:
    running, port = dev
    webhook_secret = running.find(r"webhook secret\s+(whsec_\S+)")
    api_key = running.find(r"API key\s+(\S+)")
    redis_port = int(running.find(r"redis\s+embedded, redis://127\.0\.0\.1:(\d+)/"))
    command = running.find(r"^\s+(tidings signup .*)$")
    server_key = (tmp_path / ".tidings" / "secret_key").read_text().strip()
    assert _listening(redis_port)

    # The second terminal: the printed command, with a real address.
    argv = shlex.split(command)
    assert argv[0] == "tidings"
    argv[0] = str(TIDINGS)
    argv[argv.index("--email") + 1] = "dev@example.com"
    signup = await asyncio.create_subprocess_exec(
        *argv,
        cwd=tmp_path,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(signup.communicate(), 30)
    printed = out.decode()
    assert signup.returncode == 0, printed
    assert "HTTP 202" in printed
    check_url = re.search(r"curl -s -X POST (\S+/v1/verifications/ver_\w+/check)", printed)
    assert check_url, printed
    assert f"Authorization: Bearer {api_key}" in printed

    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            async with http.get(f"{base}/readyz") as response:
                return response.status == 200

        await wait_for(ready, timeout=10, what="/readyz to answer 200")

        async def outbox_email() -> dict[str, Any] | None:
            async with http.get(f"{base}/dev/outbox", params={"format": "json"}) as response:
                assert response.status == 200
                entries: list[dict[str, Any]] = await response.json()
            return next((e for e in entries if e["to"] == "dev@example.com"), None)

        email = await wait_for(outbox_email, timeout=10, what="the email in the outbox")
        match = re.search(r"^\s+(\d{6})\s*$", email["text"], re.MULTILINE)
        assert match, email["text"]
        code = match.group(1)

        # The terminal of `tidings dev` shows the same email.
        await wait_for(
            lambda: "outbox: email to dev@example.com" in running.text,
            timeout=10,
            what="the email echoed in the terminal",
        )
        shown = running.text[running.text.index("outbox: email to dev@example.com") :]
        assert re.search(rf"^\s*{code}\s*$", shown, re.MULTILINE)

        # The curl line, done with aiohttp.
        async with http.post(
            check_url.group(1).replace(f"http://localhost:{port}", base),
            json={"code": code},
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "approved"

    # Ctrl-C: everything stops, Redis too, and its data stays on disk.
    running.process.send_signal(signal.SIGINT)
    returncode = await asyncio.wait_for(running.process.wait(), 15)
    assert returncode == 0, running.text
    assert not _listening(redis_port), "the embedded redis-server outlived tidings dev"
    redis_dir = tmp_path / ".tidings" / "redis"
    assert (redis_dir / "appendonly.aof").exists() or (redis_dir / "appendonlydir").is_dir()

    # Log lines never carry the secrets (or the code); the banner and outbox may.
    log_lines = [line for line in running.lines if LOG_LINE.match(line)]
    assert log_lines, running.text
    for line in log_lines:
        for secret in (webhook_secret, api_key, server_key, code):
            assert secret not in line, f"a secret leaked into the log: {line}"


async def test_ctrl_c_to_the_process_group_then_restart_keeps_data(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches redis-server too; a restart finds site and data again."""
    async with _tidings_dev(tmp_path) as (first, port):
        secret = first.find(r"webhook secret\s+(whsec_\S+)")
        api_key = first.find(r"API key\s+(\S+)")
        redis_port = int(first.find(r"redis://127\.0\.0\.1:(\d+)/"))
        event = signup_event(email="keep@example.com")
        body = json.dumps(event)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/webhooks/demo",
                data=body,
                headers=signed_headers(secret, body),
            ) as response,
        ):
            assert response.status == 202
            vid = (await response.json())["id"]
        os.killpg(first.process.pid, signal.SIGINT)
        assert await asyncio.wait_for(first.process.wait(), 15) == 0, first.text
        assert not _listening(redis_port)

    async with _tidings_dev(tmp_path) as (second, port):
        assert second.find(r"webhook secret\s+(whsec_\S+)") == secret
        assert second.find(r"API key\s+(\S+)") == api_key
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/v1/verifications/{vid}",
                headers={"Authorization": f"Bearer {api_key}"},
            ) as response,
        ):
            assert response.status == 200
            assert (await response.json())["destination"] == "k***@example.com"
