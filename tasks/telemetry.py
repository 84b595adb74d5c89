"""What a task carries from where it was queued into the worker that runs it.

Labels set at enqueue: ``request_id`` (the web request that caused the work),
``traceparent`` (its span, when tracing is on) and ``enqueued_ms``. In the worker they
become the request id of every log line the task writes, the parent of the task's span,
and the queueing latency of :mod:`tasks.metrics`.
"""

from __future__ import annotations

import time
from typing import Any

from taskiq.abc.middleware import TaskiqMiddleware
from taskiq.message import TaskiqMessage
from taskiq.result import TaskiqResult

from config import tracing
from config.logging import request_id_var
from tasks import metrics
from verification.models import now_ms

REQUEST_ID = "request_id"
TRACEPARENT = "traceparent"
ENQUEUED_MS = "enqueued_ms"


def outgoing_labels() -> dict[str, str]:
    """Labels for a task queued now, from the current request and span."""
    labels = {ENQUEUED_MS: str(now_ms())}
    request_id = request_id_var.get()
    if request_id is not None:
        labels[REQUEST_ID] = request_id
    traceparent = tracing.current_traceparent()
    if traceparent is not None:
        labels[TRACEPARENT] = traceparent
    return labels


class _Running:
    __slots__ = ("request_token", "span", "started")

    def __init__(self, started: float, request_token: Any, span: tracing.SpanScope | None):
        self.started = started
        self.request_token = request_token
        self.span = span


class TelemetryMiddleware(TaskiqMiddleware):
    """Labels on every kick; request id, span and metrics around every task run."""

    def __init__(self) -> None:
        super().__init__()
        self._running: dict[str, _Running] = {}

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        """Stamp the message with where and when it was queued (kept if already set)."""
        for key, value in outgoing_labels().items():
            message.labels.setdefault(key, value)
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Adopt the request id and open the task's span (a child of the request's)."""
        labels = message.labels
        request_id = labels.get(REQUEST_ID)
        token = request_id_var.set(str(request_id)) if request_id else None
        span = self._begin_span(message) if tracing.active() else None
        self._running[message.task_id] = _Running(time.perf_counter(), token, span)
        return message

    @staticmethod
    def _begin_span(message: TaskiqMessage) -> tracing.SpanScope | None:
        labels = message.labels
        carrier = {TRACEPARENT: str(labels[TRACEPARENT])} if TRACEPARENT in labels else None
        return tracing.begin_span(
            f"task {message.task_name}",
            kind="consumer",
            carrier=carrier,
            attributes={"tidings.task": message.task_name, "tidings.task_id": message.task_id},
        )

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Count the outcome, close the span, forget the request id."""
        running = self._running.pop(message.task_id, None)
        if running is None:
            return
        outcome = metrics.outcome_of(message.task_name, result.return_value, result.is_err)
        since_queued = None
        enqueued = message.labels.get(ENQUEUED_MS)
        if enqueued is not None:
            try:
                since_queued = (now_ms() - int(enqueued)) / 1000
            except ValueError:
                since_queued = None
        metrics.observe_task(
            message.task_name, outcome, time.perf_counter() - running.started, since_queued
        )
        if running.span is not None:
            running.span.set("tidings.outcome", outcome)
            failed = outcome in {"failed", "dead_lettered"}
            running.span.end(result.error if result.is_err else None, failed=failed)
        if running.request_token is not None:
            request_id_var.reset(running.request_token)
