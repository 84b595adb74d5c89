"""Prometheus metrics: HTTP in-process, domain counters read from Redis at scrape time."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from verification.keys import Layout
from verification.reports import read_snapshot

_LATENCY_BOUNDS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


class HttpMetrics:
    """Request counters and latencies for one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tidings_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "tidings_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children cached: this runs per request)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RedisSnapshotCollector(Collector):
    """Exposes counters that workers keep in Redis, read just before a scrape."""

    def __init__(self) -> None:
        self.stats: dict[str, str] = {}
        self.queue_depth = 0
        self.due = 0
        self.dead_letters = 0
        # Whether the last read worked, and when one last did (wall clock): a scrape
        # during an outage still shows the old numbers, and says how old they are.
        self.up = False
        self.read_at: float | None = None

    async def refresh(self, redis: Redis, layout: Layout) -> None:
        """Read the counters now; on a Redis error keep the old ones and mark them stale."""
        try:
            read = await read_snapshot(redis, layout)
        except (RedisError, OSError):
            self.up = False
            return
        self.stats, self.queue_depth, self.due, self.dead_letters = (
            read.stats,
            read.queue_depth,
            read.due,
            read.dead_letters,
        )
        self.up, self.read_at = True, time.time()

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        """Build metric families from the last snapshot."""
        verifications = CounterMetricFamily(
            "tidings_verifications", "Verification status changes.", labels=["status"]
        )
        deliveries = CounterMetricFamily(
            "tidings_deliveries", "Delivery outcomes by channel.", labels=["channel", "outcome"]
        )
        events = CounterMetricFamily(
            "tidings_events", "Outbound event attempts to sites by outcome.", labels=["outcome"]
        )
        for key, value in sorted(self.stats.items()):
            parts = key.split(":")
            if parts[0] == "verifications" and len(parts) == 2:
                verifications.add_metric([parts[1]], float(value))
            elif parts[0] == "deliveries" and len(parts) == 3:
                deliveries.add_metric([parts[2], parts[1]], float(value))
            elif parts[0] == "events" and len(parts) == 2:
                events.add_metric([parts[1]], float(value))
        yield verifications
        yield deliveries
        yield events
        # Each send counts in its own bucket ('latency:in:<ms>'); earlier releases counted
        # every bucket it fits in ('latency:le:<ms>'), which is already cumulative.
        buckets = []
        below = 0.0
        for bound in _LATENCY_BOUNDS_MS:
            below += float(self.stats.get(f"latency:in:{bound}", 0))
            cumulative = below + float(self.stats.get(f"latency:le:{bound}", 0))
            buckets.append((str(bound / 1000), cumulative))
        count = float(self.stats.get("latency:count", 0))
        latency = HistogramMetricFamily(
            "tidings_delivery_latency_seconds", "Time from queueing to a successful send."
        )
        latency.add_metric(
            [], [*buckets, ("+Inf", count)], float(self.stats.get("latency:sum_ms", 0)) / 1000
        )
        yield latency
        yield GaugeMetricFamily(
            "tidings_queue_depth", "Tasks waiting in the stream.", self.queue_depth
        )
        yield GaugeMetricFamily(
            "tidings_deliveries_unfinished", "Deliveries not yet sent or failed.", self.due
        )
        yield GaugeMetricFamily(
            "tidings_dead_letters", "Deliveries that failed for good.", self.dead_letters
        )
        yield GaugeMetricFamily(
            "tidings_redis_up", "Whether the last read of Redis for a scrape worked.", self.up
        )
        age = math.nan if self.read_at is None else max(time.time() - self.read_at, 0.0)
        yield GaugeMetricFamily(
            "tidings_redis_snapshot_age_seconds",
            "Age of the Redis counters above (NaN: never read); grows during an outage.",
            age,
        )
