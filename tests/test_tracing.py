"""OpenTelemetry traces: web request → queued task → provider call, one trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config import tracing
from config.settings import Settings
from tests.conftest import SmtpSink, post_event, signup_event, wait_for
from tests.test_role_metrics import role
from tidings.embedded_redis import free_port
from webhooks.app import create_app

SITE_TRACE = "0af7651916cd43dd8448eb211c80319c"
SITE_SPAN = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of this process, recorded in memory for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(None)
    provider.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_request_task_and_provider_spans_are_linked(
    spans: InMemorySpanExporter,
    aiohttp_client: Any,
    settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings))
    await start_worker(settings)
    response = await post_event(
        client, signup_event(), headers={"traceparent": f"00-{SITE_TRACE}-{SITE_SPAN}-01"}
    )
    assert response.status == 202
    await smtp.wait_for_messages(1)

    def finished() -> tuple[ReadableSpan, ...] | None:
        got = spans.get_finished_spans()
        return got if any(s.name == "provider smtp" for s in got) else None

    got = await wait_for(finished, 10, "the provider span")
    request = named(got, "POST /webhooks/{site}")
    task = named(got, "task tidings.deliver")
    provider = named(got, "provider smtp")
    # The site's trace goes on through the web, the queue and the worker.
    assert request.parent is not None and format(request.parent.span_id, "016x") == SITE_SPAN
    assert {format(s.context.trace_id, "032x") for s in (request, task, provider)} == {SITE_TRACE}
    assert task.parent is not None and task.parent.span_id == request.context.span_id
    assert provider.parent is not None and provider.parent.span_id == task.context.span_id
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 202
    assert task.attributes is not None and task.attributes["tidings.outcome"] == "ok"
    # Spans carry no destination or code.
    text = json.dumps([dict(s.attributes or {}) for s in got])
    assert "alice@example.com" not in text


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint, as a collector serves it."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def otlp() -> AsyncIterator[tuple[OtlpReceiver, int]]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver, port
    await runner.cleanup()


async def test_worker_process_continues_the_request_trace(
    spans: InMemorySpanExporter,
    otlp: tuple[OtlpReceiver, int],
    aiohttp_client: Any,
    settings: Settings,
    smtp: SmtpSink,
) -> None:
    """A `tidings worker` with OTEL_EXPORTER_OTLP_ENDPOINT exports its task span as a child
    of the web request's span (the traceparent rode in the task's labels)."""
    receiver, port = otlp
    client: TestClient = await aiohttp_client(create_app(settings))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    async with role("tidings", "worker", settings=settings, ops_port=0, env=env):
        response = await post_event(client, signup_event())
        assert response.status == 202
        await smtp.wait_for_messages(1, timeout=30)

        def exported() -> list[Any] | None:
            names = {s.name for s in receiver.spans}
            return receiver.spans if "provider smtp" in names else None

        remote = await wait_for(exported, 30, "the worker's spans at the collector")
    request = named(spans.get_finished_spans(), "POST /webhooks/{site}")
    [task] = [s for s in remote if s.name == "task tidings.deliver"]
    [provider] = [s for s in remote if s.name == "provider smtp"]
    assert task.trace_id == request.context.trace_id.to_bytes(16, "big")
    assert task.parent_span_id == request.context.span_id.to_bytes(8, "big")
    assert provider.parent_span_id == task.span_id


def test_tracing_off_imports_no_tracing_sdk() -> None:
    """Without OTEL_*, building the app and queueing a delivery loads no tracing code.

    (redis-py imports OpenTelemetry's metrics SDK by itself where it is installed: the
    baseline; nothing more may come from us.)
    """
    script = """
import sys
import redis.asyncio
baseline = {m for m in sys.modules if m.startswith("opentelemetry")}
from config import tracing
from config.settings import load_settings
from tasks.broker import build_broker
from tasks.worker import TaskiqDeliveryQueue, register_tasks
from webhooks.app import create_app
settings = load_settings(redis_url="redis://127.0.0.1:1/0", secret_key="k" * 40)
create_app(settings)
broker = build_broker(settings)
TaskiqDeliveryQueue(broker, register_tasks(broker, settings)).message("del_1")
print(tracing.active(), sorted({m for m in sys.modules if m.startswith("opentelemetry")} - baseline))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False []", out.stderr


def test_tracing_is_requested_only_by_otel_variables() -> None:
    assert not tracing.tracing_requested({})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.tracing_requested({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.tracing_requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
