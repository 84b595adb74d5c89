"""Several web processes on one port: ``tidings web --workers N``.

One Python process uses one core. The parent here forks ``N`` servers that each bind the
port with ``SO_REUSEPORT``, so the kernel spreads new connections over them, and then only
supervises: a server that dies is started again, SIGTERM or SIGINT stops every server
gracefully (each finishes its requests, as a single ``tidings web`` does) and the parent
exits 0 once all have. A server that fails before it listens (a port taken without
``SO_REUSEPORT``, say) stops the whole tier with its exit code, rather than a restart loop.

Prometheus metrics of the tier are one set: every server writes its counters to files in
a folder of this run (prometheus-client's multiprocess mode) and any server's ``/metrics``
sums them. The folder has to be named before ``prometheus_client`` is imported, which is
why :func:`prepare_metrics` runs first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.context import ForkProcess
from multiprocessing.synchronize import Event
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    from config.settings import Settings

logger = logging.getLogger(__name__)

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# A server that keeps dying is started again after a pause that doubles up to this.
_MAX_PAUSE = 30.0
# A server that lived this long before dying starts the pause from the beginning again.
_HEALTHY_AFTER = 60.0


def default_workers() -> int:
    """One server per core this process may run on.

    Its CPU affinity, capped by a cgroup CPU quota (a container's ``--cpus`` or a
    Kubernetes CPU limit).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """Cores allowed by cgroup v2's ``cpu.max`` ("<quota> <period>", or "max ...")."""
    try:
        with open(path) as limits:
            quota, period = limits.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def prepare_metrics() -> str:
    """Make the folder the servers' metrics share, and name it for prometheus-client.

    Must run before anything imports ``prometheus_client``.
    """
    folder = tempfile.mkdtemp(prefix="tidings-web-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = folder
    return folder


class Tier:
    """The parent of ``count`` forked servers, each running ``serve(on_listening)``."""

    def __init__(self, count: int, serve: Callable[[Callable[[], None]], None]) -> None:
        self._count = count
        self._serve = serve
        self._context = multiprocessing.get_context("fork")
        self._stopping = False

    def run(self) -> int:
        """Start the servers and supervise them until a signal; returns the exit status."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        servers: dict[int, tuple[ForkProcess, Event, float]] = {}
        pauses = [0.0] * self._count
        # A server that fails before it first listens stops the tier (a configuration or
        # port problem); one that fails after a restart is started again, with its pause.
        first_start = [True] * self._count
        try:
            for slot in range(self._count):
                servers[slot] = self._start(slot)
            logger.info("web tier started", extra={"workers": self._count})
            while servers:
                sentinels = [process.sentinel for process, _, _ in servers.values()]
                wait(sentinels, timeout=1.0)
                for slot, (process, listening, started) in list(servers.items()):
                    if process.is_alive():
                        continue
                    process.join()
                    code = process.exitcode or 0
                    del servers[slot]
                    if self._stopping:
                        continue
                    if not listening.is_set() and first_start[slot]:
                        logger.error(
                            "a web server failed before it listened; stopping the tier",
                            extra={"exit_code": code},
                        )
                        self._stop_all(servers)
                        return code if code > 0 else 1
                    pause = _next_pause(pauses[slot], time.monotonic() - started)
                    pauses[slot] = pause
                    logger.warning(
                        "a web server died; starting it again",
                        extra={"exit_code": code, "in_seconds": pause},
                    )
                    self._pause(pause)
                    if not self._stopping:
                        first_start[slot] = False
                        servers[slot] = self._start(slot)
            return 0
        finally:
            self._stop_all(servers)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _pause(self, seconds: float) -> None:
        """Wait before a restart, but not past a signal to stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _start(self, slot: int) -> tuple[ForkProcess, Event, float]:
        listening = self._context.Event()
        process = self._context.Process(
            target=_child, args=(self._serve, listening), name=f"web-{slot}", daemon=False
        )
        process.start()
        return process, listening, time.monotonic()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            logger.info("stopping the web tier", extra={"signal": signal.Signals(signum).name})
        self._stopping = True
        # Each server takes SIGTERM as ``tidings web`` does: finish requests, close, exit.
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    @staticmethod
    def _stop_all(servers: dict[int, tuple[ForkProcess, Event, float]]) -> None:
        for process, _, _ in servers.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process, _, _ in servers.values():
            process.join()


def _next_pause(pause: float, lived: float) -> float:
    if lived >= _HEALTHY_AFTER:
        return 0.0
    return min(_MAX_PAUSE, max(0.5, pause * 2))


def _child(serve: Callable[[Callable[[], None]], None], listening: Event) -> None:
    # The parent's handlers would only flag it; a server installs its own in its loop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        serve(listening.set)
    except OSError as exc:  # the port: taken, not allowed
        logger.error("a web server could not listen", extra={"error": exc.strerror})
        raise SystemExit(1) from None
    except Exception as exc:
        # One line, as everywhere: multiprocessing would print the traceback.
        logger.critical("a web server stopped", extra={"exc_type": type(exc).__name__})
        raise SystemExit(1) from None


def remove_metrics(folder: str) -> None:
    """Drop the run's metrics folder (the tier has stopped)."""
    shutil.rmtree(folder, ignore_errors=True)


def serve_web(
    settings: Settings,
    workers: int | None,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    before_serving: Callable[[], None] = lambda: None,
) -> int:
    """Run ``tidings web``: one server in this process, or a tier of ``workers`` servers.

    ``workers``: from the command line; ``None`` takes ``TIDINGS_HTTP__WORKERS``, whose
    0 means one per core. ``before_serving`` runs once, after the app was assembled (so a
    configuration error stops start-up before anything is forked) and before any server.
    """
    count = workers if workers is not None else settings.http.workers
    count = count or default_workers()
    if count == 1:
        return _serve_one(settings, new_loop, before_serving)
    folder = prepare_metrics()
    try:
        return _serve_tier(settings, count, new_loop, before_serving)
    finally:
        remove_metrics(folder)


def _serve_one(
    settings: Settings,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    before_serving: Callable[[], None],
) -> int:
    from config.logging import setup_logging
    from webhooks import serving
    from webhooks.app import create_app

    app = create_app(settings)
    setup_logging(settings)
    before_serving()
    serving.run(app, settings.http, loop=new_loop(), shutdown_timeout=10)
    return 0


def _serve_tier(
    settings: Settings,
    count: int,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    before_serving: Callable[[], None],
) -> int:
    # Imported only now: prometheus-client must see the metrics folder.
    from config.logging import setup_logging
    from webhooks import serving
    from webhooks.app import create_app

    create_app(settings)  # a configuration error stops start-up before anything forks
    setup_logging(settings)
    before_serving()
    _require_free_port(settings.http.host, settings.http.port)

    def serve(on_listening: Callable[[], None]) -> None:
        serving.run(
            create_app(settings),
            settings.http,
            loop=new_loop(),
            shutdown_timeout=10,
            reuse_port=True,
            on_listening=on_listening,
        )

    return Tier(count, serve).run()


def _require_free_port(host: str, port: int) -> None:
    """Stop unless the port is free.

    SO_REUSEPORT would let the servers share it silently with another program of this
    user (an old tier still running, say).
    """
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


def exposed_registry(registry: CollectorRegistry, collectors: list[Collector]) -> CollectorRegistry:
    """What ``/metrics`` serves: ``registry`` alone, or in a tier every server's summed.

    ``collectors`` are read at scrape time (from Redis), not counted per process, so the
    tier's registry takes them as they are.
    """
    folder = os.environ.get(METRICS_DIR_VARIABLE)
    if not folder:
        return registry
    from prometheus_client import CollectorRegistry, multiprocess

    exposed = CollectorRegistry()
    multiprocess.MultiProcessCollector(exposed, path=folder)  # type: ignore[no-untyped-call]
    for collector in collectors:
        exposed.register(collector)
    return exposed
