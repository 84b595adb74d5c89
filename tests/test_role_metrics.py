"""Ops ports of workers and schedulers, `tidings health`, and stale Redis numbers on /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from tests.conftest import SmtpSink, post_event, signup_event, wait_for
from tests.processes import BIN, running
from tidings.embedded_redis import free_port, redis_server_binary
from webhooks.app import create_app


@contextlib.asynccontextmanager
async def role(
    *argv: str, settings: Settings, ops_port: int, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A production role with its ops port on ``ops_port``; SIGTERMed afterwards."""
    extra = {"TIDINGS_OPS__PORT": str(ops_port), **(env or {})}
    async with running(*argv, settings=settings, env=extra) as process:
        yield process


async def get(url: str) -> tuple[int, str]:
    """GET ``url``: status and body (0 and '' while nothing listens)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return 0, ""


async def readiness(port: int) -> dict[str, Any] | None:
    status, body = await get(f"http://127.0.0.1:{port}/readyz")
    return json.loads(body) if status in (200, 503) else None


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def health(*ports: int) -> tuple[int, str]:
    """Run ``tidings health`` against the ports' /readyz: exit status and stderr."""
    urls = [arg for port in ports for arg in ("--url", f"http://127.0.0.1:{port}/readyz")]
    process = await asyncio.create_subprocess_exec(
        str(BIN / "tidings"), "health", *urls, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_roles_report_waiting_for_redis_in_their_health_checks(
    make_settings: Callable[..., Settings],
) -> None:
    """Issue 10 item 6: worker and scheduler stay up while Redis is away, their /readyz
    and `tidings health` name the reason, and both turn ready once Redis is there."""
    redis_port, worker_port, scheduler_port = free_port(), free_port(), free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{redis_port}/0")
    async with (
        role("tidings", "worker", "--workers", "1", settings=settings, ops_port=worker_port),
        role("tidings", "scheduler", settings=settings, ops_port=scheduler_port) as scheduler,
    ):
        for port in (worker_port, scheduler_port):
            body = await wait_for(lambda p=port: readiness(p), 60, f"the ops port {port}")
            assert body["ready"] is False
            assert body["reason"] == "redis unavailable"
            status, text = await get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200, text
        code, err = await health(worker_port)
        assert code == 1
        assert err.strip().endswith("not ready (redis unavailable)"), err
        assert len(err.strip().splitlines()) == 1

        folder = tempfile.mkdtemp(prefix="tidings-ops-redis-")
        server = subprocess.Popen(
            [redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
             "--dir", folder, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for port in (worker_port, scheduler_port):

                async def ready(port: int = port) -> bool:
                    body = await readiness(port)
                    return bool(body and body["ready"])

                await wait_for(ready, 60, f"port {port} to turn ready")
            assert (await health(worker_port, scheduler_port))[0] == 0
            status, text = await get(f"http://127.0.0.1:{scheduler_port}/metrics")
            assert status == 200
            assert samples(text)[("tidings_redis_up", ())] == 1.0
            assert scheduler.returncode is None
        finally:
            server.terminate()
            server.wait(10)


async def test_each_worker_child_serves_its_own_port_and_metrics(
    client: TestClient, smtp: SmtpSink, settings: Settings
) -> None:
    """`--workers 2`: ports base and base+1, both ready; the delivery shows up in the task
    and provider metrics of the child that ran it; its log line carries the request id."""
    base = free_port()
    while not all(await asyncio.gather(*(_free(base + i) for i in range(2)))):
        base = free_port()
    async with role(
        "tidings", "worker", "--workers", "2", settings=settings, ops_port=base
    ) as process:
        for port in (base, base + 1):

            async def ready(port: int = port) -> bool:
                body = await readiness(port)
                return bool(body and body["ready"])

            await wait_for(ready, 60, f"worker child on {port}")
        response = await post_event(
            client, signup_event(), headers={"X-Request-ID": "req-from-site-1"}
        )
        assert response.status == 202
        await smtp.wait_for_messages(1, timeout=30)

        async def delivered() -> list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
            pages = [await get(f"http://127.0.0.1:{port}/metrics") for port in (base, base + 1)]
            parsed = [samples(text) for _, text in pages]
            ok = (("outcome", "ok"), ("task", "tidings.deliver"))
            done = sum(page.get(("tidings_tasks_total", ok), 0.0) for page in parsed)
            return parsed if done == 1.0 else []

        pages = await wait_for(delivered, 30, "the delivery in one child's metrics")
        smtp_calls = sum(
            page.get(("tidings_provider_request_seconds_count", (("provider", "smtp"),)), 0.0)
            for page in pages
        )
        assert smtp_calls == 1.0
        assert all(page[("tidings_redis_up", ())] == 1.0 for page in pages)
    assert process.stderr is not None
    lines = (await process.stderr.read()).decode().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON, manager's too
    assert any(e["logger"] == "taskiq.process-manager" for e in entries)
    [sent] = [e for e in entries if e["msg"] == "delivery sent"]
    assert sent["request_id"] == "req-from-site-1"


async def _free(port: int) -> bool:
    try:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    except OSError:
        return False
    server.close()
    await server.wait_closed()
    return True


async def test_web_metrics_mark_a_stale_redis_snapshot(
    aiohttp_client: Any, make_settings: Callable[..., Settings], smtp: SmtpSink
) -> None:
    """A scrape during a Redis outage keeps the last numbers and says they are stale."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="tidings-stale-redis-")
    server = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = await aiohttp_client(
            create_app(make_settings(redis_url=f"redis://127.0.0.1:{port}/0"))
        )

        async def scraped() -> dict[Any, float] | None:
            response = await client.get("/metrics")
            page = samples(await response.text())
            return page if page[("tidings_redis_up", ())] == 1.0 else None

        fresh = await wait_for(scraped, 20, "a scrape with Redis up")
        assert fresh[("tidings_redis_snapshot_age_seconds", ())] < 5
        accepted = await post_event(client, signup_event())
        assert accepted.status == 202
        before = samples(await (await client.get("/metrics")).text())
        assert before[("tidings_queue_depth", ())] == 1.0
    finally:
        server.terminate()
        server.wait(10)
    response = await client.get("/metrics")
    assert response.status == 200
    stale = samples(await response.text())
    assert stale[("tidings_redis_up", ())] == 0.0
    assert stale[("tidings_queue_depth", ())] == 1.0  # the last numbers, marked stale
    assert stale[("tidings_redis_snapshot_age_seconds", ())] > 0
