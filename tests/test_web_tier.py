"""``tidings web --workers N``: several real server processes on one port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from config.settings import Settings
from tests.conftest import SECRET, signed_headers, signup_event, wait_for
from tests.processes import running
from tidings.embedded_redis import free_port


def _servers(parent: int) -> set[int]:
    """The parent's child processes (Linux)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children}


async def _signup(session: aiohttp.ClientSession, base: str, n: int) -> int:
    body = json.dumps(signup_event(user_id=f"tier-{n}", email=f"t{n}@example.com"))
    async with session.post(
        f"{base}/webhooks/shop", data=body, headers=signed_headers(SECRET, body, None)
    ) as response:
        return response.status


def _signups_counted(metrics: str) -> int:
    pattern = r'tidings_http_requests_total\{method="POST",route="/webhooks/\{site\}",status="202"\} (\S+)'
    return sum(int(float(v)) for v in re.findall(pattern, metrics))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads children from /proc")
async def test_a_tier_of_two_servers_shares_the_port_metrics_and_shutdown(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TIDINGS_HTTP__HOST": "127.0.0.1", "TIDINGS_HTTP__PORT": str(port)}
    async with (
        running("tidings", "web", "--workers", "2", settings=settings, env=env) as tier,
        aiohttp.ClientSession() as session,
    ):

        async def ready() -> bool:
            try:
                async with session.get(f"{base}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, 60, "the tier to answer")
        await wait_for(lambda: len(_servers(tier.pid)) == 2, 60, "two servers")
        first = _servers(tier.pid)

        statuses = await asyncio.gather(*(_signup(session, base, n) for n in range(40)))
        assert statuses == [202] * 40

        # Any server's /metrics counts the whole tier's requests.
        async def all_counted() -> bool:
            async with session.get(f"{base}/metrics") as response:
                return _signups_counted(await response.text()) == 40

        await wait_for(all_counted, 10, "every signup in the tier's metrics")

        # A server that dies is started again; the port keeps answering meanwhile.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await wait_for(
            lambda: len(_servers(tier.pid)) == 2 and victim not in _servers(tier.pid),
            60,
            "a new server in place of the killed one",
        )
        assert await _signup(session, base, 99) == 202

        servers = _servers(tier.pid)
        tier.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(tier.wait(), 60) == 0
        for pid in servers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )


async def test_a_port_taken_by_another_program_stops_the_tier_with_one_line(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    env = {"TIDINGS_HTTP__HOST": "127.0.0.1", "TIDINGS_HTTP__PORT": str(port)}
    try:
        async with running("tidings", "web", "--workers", "2", settings=settings, env=env) as tier:
            code = await asyncio.wait_for(tier.wait(), 60)
            assert tier.stderr is not None
            lines = (await tier.stderr.read()).decode().splitlines()
        assert code != 0
        assert any(f"cannot listen on 127.0.0.1:{port}" in line for line in lines), lines
        assert not any(line.startswith("Traceback") for line in lines), lines
    finally:
        blocker.close()
        await blocker.wait_closed()


_SLOW_TIER = """
import asyncio, sys
from pathlib import Path
from aiohttp import web
from config.settings import HttpSettings
from webhooks import serving
from webhooks.tier import Tier

port, marker = int(sys.argv[1]), Path(sys.argv[2])

async def slow(request):
    marker.write_text("started")
    await asyncio.sleep(2)  # a request still running when Ctrl-C comes
    return web.Response(text="finished")

def serve(on_listening):
    app = web.Application()
    app.router.add_get("/slow", slow)
    http = HttpSettings(host="127.0.0.1", port=port)
    loop = asyncio.new_event_loop()
    serving.run(app, http, loop=loop, reuse_port=True, on_listening=on_listening)

sys.exit(Tier(2, serve).run())
"""


async def test_ctrl_c_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    """Ctrl-C reaches every server and the parent, which passes SIGTERM on: the second
    signal must not cut the drain short, so a request in flight still gets its answer."""
    port = free_port()
    marker = tmp_path / "started"
    script = tmp_path / "tier.py"
    script.write_text(_SLOW_TIER)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(port), str(marker),
        cwd=Path(__file__).resolve().parent.parent,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:
                try:
                    _, probe = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    return False
                probe.close()
                return True

            await wait_for(listening, 60, "the tier to listen")
            request = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/slow"))
            await wait_for(marker.exists, 30, "the slow request to start")
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            response = await asyncio.wait_for(request, 30)
            assert response.status == 200
            assert await response.text() == "finished"
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def test_one_server_per_core_within_a_containers_cpu_quota(tmp_path: Path) -> None:
    from webhooks.tier import _cgroup_cpu_quota

    limits = tmp_path / "cpu.max"
    limits.write_text("150000 100000\n")  # --cpus 1.5
    assert _cgroup_cpu_quota(str(limits)) == 1.5
    limits.write_text("max 100000\n")
    assert _cgroup_cpu_quota(str(limits)) is None
    assert _cgroup_cpu_quota(str(tmp_path / "absent")) is None
