"""OpenTelemetry traces, off unless the standard ``OTEL_*`` variables ask for them.

Nothing here imports opentelemetry until :func:`setup_tracing` finds tracing asked for,
so a process without ``OTEL_*`` pays one dictionary look-up per span site and nothing else.
Spans cross from the web to the workers as a W3C ``traceparent`` in the task's labels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: The tracer while tracing is on (an ``opentelemetry.trace.Tracer``), else None.
_tracer: Any = None
_provider: Any = None

_EXPORTER_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

logger = logging.getLogger(__name__)


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``OTEL_*`` asks for traces (an exporter or an OTLP endpoint is named)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return exporters.strip().lower() not in {"", "none"}
    return any(env.get(name) for name in _EXPORTER_VARS)


def active() -> bool:
    """Whether spans are being recorded in this process."""
    return _tracer is not None


def setup_tracing(role: str, env: Mapping[str, str] = os.environ) -> bool:
    """Install a tracer provider with the exporters ``OTEL_TRACES_EXPORTER`` names.

    ``otlp`` (the default) sends OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``;
    ``console`` prints spans to stdout. Returns whether tracing is on.
    """
    if _tracer is not None or not tracing_requested(env):
        return _tracer is not None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        # OTEL_* is often set for a whole cluster; an image without the extra runs on.
        logger.warning(
            "OTEL_* asks for traces but the tracing extra is not installed "
            "(pip install 'tidings[tracing]'); running without traces"
        )
        return False

    name = env.get("OTEL_SERVICE_NAME") or f"tidings-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(","):
        if exporter.strip() == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif exporter.strip() == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    _instrument_redis(provider)
    return True


def _instrument_redis(provider: Any) -> None:
    """A span per Redis command, where the instrumentation package is installed."""
    try:
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:
        return
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def use_tracer_provider(provider: Any) -> None:
    """Record spans with ``provider`` (None: stop); tests pass an in-memory one."""
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process, set at start-up
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("tidings")


def shutdown_tracing() -> None:
    """Send the spans still buffered (a role's shutdown)."""
    if _provider is not None and hasattr(_provider, "force_flush"):
        _provider.force_flush()


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to carry in a task's labels."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


class SpanScope:
    """A span made current until :meth:`end`, for hooks that open and close in two calls."""

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self._token = token

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute on the span."""
        self.span.set_attribute(key, value)

    def end(self, error: BaseException | None = None, *, failed: bool = False) -> None:
        """Close the span (an error marks it failed, by exception type only)."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        if error is not None:
            # The type only: exception texts from providers can carry addresses.
            self.span.set_attribute("exception.type", type(error).__name__)
        if error is not None or failed:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
        context.detach(self._token)


def begin_span(
    name: str,
    *,
    kind: str = "internal",
    carrier: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> SpanScope | None:
    """Open a current span (child of ``carrier``'s traceparent if given); None when off."""
    if _tracer is None:
        return None
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract

    parent = extract(carrier) if carrier is not None else None
    span = _tracer.start_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=dict(attributes or {}),
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    return SpanScope(span, token)


@contextmanager
def span(
    name: str, attributes: Mapping[str, str | int | float | bool] | None = None
) -> Iterator[SpanScope | None]:
    """A child span of the current one for the block; nothing at all when tracing is off."""
    scope = begin_span(name, attributes=attributes)
    if scope is None:
        yield None
        return
    try:
        yield scope
    except BaseException as exc:
        scope.end(exc)
        raise
    scope.end()
