"""Prometheus metrics of worker and scheduler processes (served by :mod:`tasks.ops`).

Module-level, as prometheus-client intends: one set per process. Each ``--workers``
child has its own and serves it on its own port (see :mod:`tasks.ops`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram

from config import tracing
from tasks.errors import DeliveryError

REGISTRY = CollectorRegistry()

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

TASKS = Counter(
    "tidings_tasks",
    "Tasks finished, by name and outcome (ok, retry, failed, dead_lettered).",
    ["task", "outcome"],
    registry=REGISTRY,
)
TASK_RUN = Histogram(
    "tidings_task_run_seconds",
    "How long a task ran.",
    ["task"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TASK_LATENCY = Histogram(
    "tidings_task_latency_seconds",
    "From queueing to the end of the task (tasks that carry their queueing time).",
    ["task"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter(
    "tidings_task_retries", "Attempts that will be tried again.", ["task"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "tidings_task_dead_letters",
    "Deliveries that failed for good in this process.",
    ["task"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "tidings_provider_request_seconds",
    "One call to a delivery provider (SMTP, Telegram, SMS).",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "tidings_provider_errors",
    "Failed provider calls, by provider and kind (retryable, final, or the exception type).",
    ["provider", "kind"],
    registry=REGISTRY,
)
BROADCAST_MESSAGES = Counter(
    "tidings_broadcast_messages",
    "Broadcast messages handled, by channel and outcome (rate: rate(...[1m])).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
SCHEDULE_LATENESS = Histogram(
    "tidings_schedule_lateness_seconds",
    "How long after its due time a one-off schedule was sent.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

#: What a task's return value says about how it went (anything else is ``ok``).
_OUTCOMES = {"retry": "retry", "failed": "dead_lettered"}
#: Tasks whose "failed" means a dead letter (a delivery or an event given up on).
_DEAD_LETTERING = frozenset({"tidings.deliver", "tidings.send_event"})


def outcome_of(task: str, value: object, error: bool) -> str:
    """The outcome label of a finished task."""
    if error:
        return "failed"
    if isinstance(value, str):
        outcome = _OUTCOMES.get(value, "ok")
        if outcome == "dead_lettered" and task not in _DEAD_LETTERING:
            return "failed"
        return outcome
    return "ok"


@lru_cache(maxsize=256)
def _task_series(task: str, outcome: str) -> tuple[Counter, Histogram, Histogram]:
    # A labelled child is looked up under a lock on every labels() call; the few
    # (task, outcome) pairs keep theirs (children live as long as their metric).
    return TASKS.labels(task, outcome), TASK_RUN.labels(task), TASK_LATENCY.labels(task)


@lru_cache(maxsize=64)
def _provider_latency(provider: str) -> Histogram:
    return PROVIDER_LATENCY.labels(provider)


def observe_task(
    task: str, outcome: str, run_seconds: float, since_queued: float | None = None
) -> None:
    """Count one finished task."""
    finished, run, latency = _task_series(task, outcome)
    finished.inc()
    run.observe(run_seconds)
    if since_queued is not None:
        latency.observe(max(since_queued, 0.0))
    if outcome == "retry":
        RETRIES.labels(task).inc()
    elif outcome == "dead_lettered":
        DEAD_LETTERS.labels(task).inc()


_PROVIDER_NAMES = {
    "SmtpSender": "smtp",
    "OutboxSender": "outbox",
    "RonglianSender": "ronglian",
    "ConsoleSmsSender": "sms-console",
}


def provider_name(sender: object) -> str:
    """The provider label of a sender object."""
    name = type(sender).__name__
    return _PROVIDER_NAMES.get(name, name.lower())


@contextmanager
def provider_call(provider: str) -> Iterator[None]:
    """Time one provider call, count its failure, and trace it as a child span."""
    started = time.perf_counter()
    with tracing.span(f"provider {provider}", {"tidings.provider": provider}):
        try:
            yield
        except DeliveryError as exc:
            PROVIDER_ERRORS.labels(provider, "retryable" if exc.retryable else "final").inc()
            raise
        except Exception as exc:
            PROVIDER_ERRORS.labels(provider, type(exc).__name__).inc()
            raise
        finally:
            _provider_latency(provider).observe(time.perf_counter() - started)


def broadcast_message(channel: str, outcome: str) -> None:
    """Count one broadcast message (``sent``, ``blocked``, ``failed``, ...)."""
    BROADCAST_MESSAGES.labels(channel, outcome).inc()


def schedule_sent(due_ms: float, now_ms: float) -> None:
    """Record how late a one-off schedule went out."""
    SCHEDULE_LATENESS.observe(max(now_ms - due_ms, 0.0) / 1000)
