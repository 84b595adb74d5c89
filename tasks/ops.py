"""The ops port of workers and schedulers: ``/healthz``, ``/readyz`` and ``/metrics``.

One small aiohttp server per process, opened and closed by taskiq's start-up and shutdown
events. ``tidings worker --workers N`` runs N children: each serves its own port, the base
port plus its index (taskiq names them ``worker-0`` …), so each ``/readyz`` answers for
exactly one process and a restarted child gets its port back. Multiprocess metrics would
give one port, but its readiness could only answer for whichever child took the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis
from redis.exceptions import ClusterDownError, ReadOnlyError, RedisError, ResponseError
from taskiq import AsyncBroker, TaskiqEvents, TaskiqScheduler
from taskiq.state import TaskiqState
from taskiq.utils import maybe_awaitable

from config.settings import Settings
from tasks import metrics
from verification.connections import open_redis
from verification.keys import Layout
from webhooks.metrics import RedisSnapshotCollector

logger = logging.getLogger(__name__)

Role = Literal["worker", "scheduler"]
DEFAULT_PORTS: dict[Role, int] = {"worker": 9101, "scheduler": 9102}
#: A role-specific readiness check: the reason it is not ready, or None.
Check = Callable[[], Awaitable[str | None]]


def child_index() -> int:
    """The index of this process among ``taskiq worker --workers N`` children (else 0)."""
    match = re.fullmatch(r"worker-(\d+)", multiprocessing.current_process().name)
    return int(match.group(1)) if match else 0


def ops_port(settings: Settings, role: Role) -> int:
    """The port this process serves (0: none)."""
    base = settings.ops.port if settings.ops.port is not None else DEFAULT_PORTS[role]
    if base == 0:
        return 0
    port = base + child_index() if role == "worker" else base
    return port if port <= 65_535 else 0


class OpsServer:
    """Health, readiness and metrics of one worker or scheduler process."""

    def __init__(self, settings: Settings, role: Role, check: Check | None = None) -> None:
        self.settings = settings
        self.role = role
        self.check = check
        #: The role's own start-up has finished (until then it is "starting").
        self.started = False
        self.stopping = False
        self._layout = Layout.for_settings(settings)
        self._redis: Redis | None = None
        self._runner: web.AppRunner | None = None
        self._snapshot = RedisSnapshotCollector()
        self._registry = CollectorRegistry()
        self._registry.register(self._snapshot)

    @property
    def redis(self) -> Redis:
        """The server's own client (probes never wait behind the role's work)."""
        if self._redis is None:
            self._redis = open_redis(self.settings)
        return self._redis

    async def start(self) -> bool:
        """Listen on the role's port; False when it is off or taken (the role runs on)."""
        port = ops_port(self.settings, self.role)
        if port == 0:
            return False
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.settings.ops.host, port, reuse_address=True).start()
        except OSError as exc:
            # The role's work matters more than its probes: say so once and go on.
            logger.error(
                "ops port unavailable; health and metrics are off",
                extra={"port": port, "error": type(exc).__name__},
            )
            await runner.cleanup()
            return False
        self._runner = runner
        logger.info("ops port open", extra={"port": port, "role": self.role})
        return True

    async def stop(self) -> None:
        """Close the port and the probe client."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is alive."""
        return web.json_response({"status": "ok", "role": self.role})

    async def reason(self) -> str | None:
        """Why the role cannot do its job now, or None when it can."""
        if self.stopping:
            return "shutting down"
        try:
            async with asyncio.timeout(2):
                # A write, not a PING: a replica, a demoted master and a cluster that is
                # down all answer PING. One per shard: each master that holds one.
                async with self.redis.pipeline(transaction=False) as pipe:
                    for shard in self._layout.shards:
                        pipe.set(shard.readiness, "1", px=10_000)
                    await pipe.execute()
                if not self.started:
                    return "starting"
                return await self.check() if self.check is not None else None
        except ReadOnlyError:
            return "redis read-only"
        except ClusterDownError:
            return "redis cluster down"
        except (RedisError, OSError, TimeoutError):
            return "redis unavailable"

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when the role is doing its job, else 503 naming the reason."""
        reason = await self.reason()
        if reason is None:
            return web.json_response({"ready": True, "role": self.role})
        return web.json_response(
            {"ready": False, "role": self.role, "reason": reason},
            status=503,
            headers={"Retry-After": "5"},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text: this process's task metrics and Redis's counters (or staleness)."""
        await self._snapshot.refresh(self.redis, self._layout)
        body = generate_latest(metrics.REGISTRY) + generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def consumer_group_check(redis: Callable[[], Redis], settings: Settings, group: str) -> Check:
    """Every shard's stream has the workers' consumer group."""
    streams = [shard.queue for shard in Layout.for_settings(settings).shards]

    async def check() -> str | None:
        for stream in streams:
            try:
                groups: list[dict[str, Any]] = await redis().xinfo_groups(stream)
            except ResponseError:  # no such stream
                return "consumer group missing"
            if not any(g.get("name") == group for g in groups):
                return "consumer group missing"
        return None

    return check


def _first(broker: AsyncBroker, event: TaskiqEvents, handler: Callable[..., Any]) -> None:
    broker.event_handlers[event].insert(0, handler)


def _fatal_on_error(handler: Callable[[TaskiqState], Any], what: str) -> Any:
    """Turn a start-up error into one log line (its type only) and exit status 1."""

    async def guarded(state: TaskiqState) -> None:
        try:
            await maybe_awaitable(handler(state))
        except Exception:
            logger.critical("%s start-up failed", what, exc_info=True)
            raise SystemExit(1) from None

    return guarded


def attach_worker_ops(broker: AsyncBroker, settings: Settings, group: str) -> OpsServer:
    """Serve the ops port from WORKER_STARTUP, before the worker waits for Redis."""
    server = OpsServer(settings, "worker")
    server.check = consumer_group_check(lambda: server.redis, settings, group)
    startup = broker.event_handlers[TaskiqEvents.WORKER_STARTUP]
    startup[:] = [_fatal_on_error(h, "worker") for h in startup]

    async def open_port(state: TaskiqState) -> None:
        await server.start()

    async def ready(state: TaskiqState) -> None:
        server.started = True

    async def stopping(state: TaskiqState) -> None:
        server.stopping = True

    async def close_port(state: TaskiqState) -> None:
        await server.stop()

    _first(broker, TaskiqEvents.WORKER_STARTUP, open_port)
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, ready)
    _first(broker, TaskiqEvents.WORKER_SHUTDOWN, stopping)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, close_port)
    return server


def attach_scheduler_ops(
    scheduler: TaskiqScheduler, settings: Settings, dispatching: Callable[[], bool]
) -> OpsServer:
    """Serve the ops port from the scheduler broker's start-up (CLIENT_STARTUP)."""

    async def check() -> str | None:
        return None if dispatching() else "dispatcher not running"

    server = OpsServer(settings, "scheduler", check)
    broker = scheduler.broker

    async def open_port(state: TaskiqState) -> None:
        await server.start()
        server.started = True

    async def close_port(state: TaskiqState) -> None:
        server.stopping = True
        await server.stop()

    _first(broker, TaskiqEvents.CLIENT_STARTUP, open_port)
    broker.add_event_handler(TaskiqEvents.CLIENT_SHUTDOWN, close_port)
    return server


@contextlib.contextmanager
def serving_while_starting(settings: Settings, role: Role) -> Iterator[None]:
    """Serve the ops port during the CLI's pre-start checks (the wait for Redis).

    A thread with its own loop, joined before taskiq starts (and forks its children),
    so the probes show ``redis unavailable`` rather than a closed port while Redis is away.
    """
    server = OpsServer(settings, role)
    loop = asyncio.new_event_loop()
    opened = threading.Event()
    done: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal done
        done = asyncio.Event()
        try:
            await server.start()
        finally:
            opened.set()
        await done.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    opened.wait(30)
    try:
        yield
    finally:
        if done is not None:
            loop.call_soon_threadsafe(done.set)
        thread.join(10)
        loop.close()
