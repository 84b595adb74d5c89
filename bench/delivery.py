"""Delivery benchmark: signups in through the intake endpoint, emails out to an SMTP sink.

    python bench/delivery.py [--n 5000] [--workers 2] [--concurrency 32] [--profile] ...

Starts a private redis-server, an aiosmtpd sink in its own process (``bench.smtp_sink``),
``tidings web`` and ``tidings worker --workers 2`` as real processes. Measures the sink's
ceiling (one aiosmtplib client sending code emails of the same shape straight to it) and
Tidings end to end (N signed signups posted to ``/webhooks/{site}``, timed from the first
request to the last email received), checks every address got exactly one email, prints a
table with the ratio and PASS/FAIL, and writes bench/results/delivery-<timestamp>.json.
See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.settings import EmailSettings, QueueSettings  # noqa: E402
from tasks.email.rendering import EmailRenderer  # noqa: E402
from tidings.devsite import new_api_key, new_webhook_secret  # noqa: E402
from tidings.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from tidings.signup_client import signed_headers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
SITE_ID = "bench"
SITE_NAME = "Bench Shop"
FROM_ADDRESS = "codes@tidings.bench"
FROM_NAME = "Tidings"
RATIO_TARGET = 0.5
# More than this many cores used by unrelated processes makes a run "noisy".
QUIET_CORES = 0.3

# (address, body, headers) of one signed signup.
Signup = tuple[str, bytes, dict[str, str]]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child process (with its own children, for ``tidings worker``)."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            me = psutil.Process(self.pid)
            return [me, *me.children(recursive=True)]
        return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def spawn(name: str, argv: list[str], folder: Path, env: dict[str, str]) -> Proc:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=folder,  # no stray .env is read
            env=env,
            stdout=asyncio.subprocess.PIPE if name == "sink" else out,
            stderr=out,
            start_new_session=True,  # one process group: the worker's children stop with it
        )
    return Proc(name, process, log)


async def stop(proc: Proc, timeout: float = 20.0) -> int | None:
    """SIGTERM the process group, SIGKILL it if it does not end within ``timeout``."""
    process = proc.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return process.returncode


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Sink:
    """The SMTP sink process and its status endpoint."""

    def __init__(self, proc: Proc, smtp_port: int, http_port: int) -> None:
        self.proc, self.smtp_port, self.http_port = proc, smtp_port, http_port
        self._http = aiohttp.ClientSession(
            f"http://127.0.0.1:{http_port}", timeout=aiohttp.ClientTimeout(total=30)
        )

    @classmethod
    async def start(cls, folder: Path) -> Sink:
        smtp_port, http_port = free_port(), free_port()
        argv = [sys.executable, "-m", "bench.smtp_sink", "--smtp-port", str(smtp_port)]
        proc = await spawn("sink", [*argv, "--http-port", str(http_port)], folder, base_env())
        assert proc.process.stdout is not None
        try:
            async with asyncio.timeout(30):
                line = await proc.process.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"READY":
            await stop(proc)
            raise RuntimeError(f"SMTP sink did not start:\n{proc.log_tail()}")
        return cls(proc, smtp_port, http_port)

    async def _get(self, path: str) -> dict[str, Any]:
        async with self._http.get(path) as response:
            response.raise_for_status()
            return dict(await response.json())

    async def stats(self) -> dict[str, Any]:
        return await self._get("/stats")

    async def dump(self) -> dict[str, Any]:
        return await self._get("/dump")

    async def reset(self) -> None:
        async with self._http.post("/reset") as response:
            response.raise_for_status()

    async def close(self) -> None:
        await self._http.close()
        await stop(self.proc)

    async def wait_for(
        self, expected: int, *, stall: float, deadline: float, progress: str = ""
    ) -> dict[str, Any]:
        """Poll until ``expected`` distinct recipients arrived, or nothing new for ``stall`` s.

        The timing comes from the sink's receive timestamps, so the polling interval does
        not affect any figure.
        """
        last_count, last_change = -1, time.monotonic()
        end = time.monotonic() + deadline
        next_print = time.monotonic() + 5
        while True:
            s = await self.stats()
            now = time.monotonic()
            if s["messages"] != last_count:
                last_count, last_change = s["messages"], now
            if s["recipients"] >= expected:
                return s
            if now - last_change > stall or now > end:
                why = f"no progress for {stall:g} s" if now <= end else "deadline"
                print(
                    f"  stopped waiting: {s['recipients']}/{expected} recipients ({why})",
                    flush=True,
                )
                return s
            if progress and now >= next_print:
                print(f"  {progress}: {s['recipients']}/{expected} received", flush=True)
                next_print = now + 5
            await asyncio.sleep(0.05)


def tidings_env(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, str]:
    """What ``tidings web`` and ``tidings worker`` read: ``TIDINGS_*`` variables only."""
    env = base_env()
    sites = [
        {
            "id": SITE_ID,
            "name": SITE_NAME,
            "webhook_secrets": [cfg["webhook_secret"]],
            "api_keys": [cfg["api_key"]],
            "channels": ["email"],
        }
    ]
    env.update(
        {
            "TIDINGS_REDIS_URL": cfg["redis_url"],
            "TIDINGS_REDIS_PREFIX": cfg["prefix"],
            "TIDINGS_SECRET_KEY": cfg["secret_key"],
            "TIDINGS_SITES": json.dumps(sites),
            "TIDINGS_HTTP__HOST": "127.0.0.1",
            "TIDINGS_HTTP__PORT": str(cfg["web_port"]),
            "TIDINGS_EMAIL__BACKEND": "smtp",
            "TIDINGS_EMAIL__HOST": "127.0.0.1",
            "TIDINGS_EMAIL__PORT": str(cfg["smtp_port"]),
            "TIDINGS_EMAIL__SECURITY": "none",
            "TIDINGS_EMAIL__FROM_ADDRESS": FROM_ADDRESS,
            "TIDINGS_EMAIL__FROM_NAME": FROM_NAME,
            "TIDINGS_LOG__LEVEL": "WARNING",
            "TIDINGS_LOG__FORMAT": "json",
            # Every signup uses a fresh address; only the site-wide hourly cap could trip.
            "TIDINGS_CODES__SENDS_PER_DESTINATION": "100",
            "TIDINGS_CODES__SITE_SENDS_PER_HOUR": "1000000000",
        }
    )
    if args.max_async_tasks is not None:
        env["TIDINGS_QUEUE__MAX_ASYNC_TASKS"] = str(args.max_async_tasks)
    if args.pool_size is not None:
        env["TIDINGS_EMAIL__POOL_SIZE"] = str(args.pool_size)
    if args.xread_count is not None:
        env["TIDINGS_QUEUE__XREAD_COUNT"] = str(args.xread_count)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("TIDINGS_"):
            raise SystemExit(f"--env wants TIDINGS_KEY=VALUE, got {item!r}")
        env[key] = value
    return env


async def start_web(folder: Path, env: dict[str, str], port: int) -> Proc:
    proc = await spawn("web", [str(BIN / "tidings"), "web"], folder, env)
    url = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return proc
            await asyncio.sleep(0.1)
    await stop(proc)
    raise RuntimeError(f"tidings web did not become ready:\n{proc.log_tail()}")


async def start_worker(
    folder: Path, env: dict[str, str], redis: Redis, prefix: str, args: argparse.Namespace
) -> Proc:
    argv = [str(BIN / "tidings"), "worker", "--workers", str(args.workers)]
    proc = await spawn("worker", [*argv, *shlex.split(args.worker_args)], folder, env)
    # Each worker process keeps a heartbeat key once its startup hook ran (tasks/recovery.py);
    # the warm-up that follows checks delivery for real either way.
    deadline = time.monotonic() + 60
    beats = 0
    while time.monotonic() < deadline and proc.process.returncode is None:
        beats = len([k async for k in redis.scan_iter(f"{prefix}:consumer:*")])
        if beats >= args.workers:
            return proc
        await asyncio.sleep(0.1)
    if proc.process.returncode is not None:
        raise RuntimeError(f"tidings worker exited:\n{proc.log_tail()}")
    print(f"WARNING: only {beats}/{args.workers} worker heartbeats after 60 s", flush=True)
    return proc


# --------------------------------------------------------------------------- load


class Signups:
    """Fresh signed signups: unique webhook-id, user and address for every request."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.run = secrets.token_hex(4)
        self.count = 0

    def make(self, n: int, label: str) -> list[Signup]:
        out = []
        for _ in range(n):
            self.count += 1
            i = self.count
            email = f"{label}.{self.run}.{i}@example.com"
            event = {
                "type": "signup.created",
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "data": {
                    "user_id": f"user-{self.run}-{i}",
                    "email": email,
                    "channel": "email",
                    "locale": "en-GB",
                    "metadata": {"plan": "pro", "source": "bench"},
                },
            }
            body = json.dumps(event)
            out.append(
                (email, body.encode(), signed_headers(self.secret, body, f"msg_{self.run}_{i}"))
            )
        return out


@dataclass
class Posted:
    """What posting the signups measured."""

    sent_at: dict[str, float]  # address -> time.time() just before its request
    statuses: Counter[str]
    first: float
    last_answer: float

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0)


async def post_signups(
    session: aiohttp.ClientSession, url: str, signups: list[Signup], concurrency: int, rate: float
) -> Posted:
    """``concurrency`` requests in flight (closed loop), or paced at ``rate`` per second."""
    sent_at: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    answers: list[float] = []

    async def post(signup: Signup) -> None:
        email, body, headers = signup
        sent_at[email] = time.time()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[str(response.status)] += 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
        answers.append(time.time())

    if rate > 0:
        limit = asyncio.Semaphore(concurrency * 8)

        async def paced(signup: Signup) -> None:
            async with limit:
                await post(signup)

        tasks = []
        t0 = time.perf_counter()
        for i, signup in enumerate(signups):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(paced(signup)))
        await asyncio.gather(*tasks)
    else:
        pending = iter(signups)

        async def worker() -> None:
            for signup in pending:
                await post(signup)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Posted(sent_at, statuses, min(sent_at.values()), max(answers))


def code_emails(n: int, tag: str, distinct: int = 100) -> list[tuple[str, bytes]]:
    """``n`` code emails as Tidings renders them (same templates, headers and size),
    as the bytes the worker puts on the wire (``RenderedEmail.raw``).

    Rendering costs milliseconds, so ``distinct`` messages (own code, Date, Message-ID) are
    rendered and reused with the To header swapped for each address.
    """
    renderer = EmailRenderer(EmailSettings(from_address=FROM_ADDRESS, from_name=FROM_NAME))
    placeholder = "recipient@example.com"
    bases = []
    for _ in range(min(n, distinct)):
        code = f"{secrets.randbelow(10**6):06d}"
        # Tidings' link: public URL + /v/ + 32 hex + "." + 32 urlsafe characters.
        link = f"http://localhost:8080/v/{secrets.token_hex(16)}.{secrets.token_urlsafe(24)}"
        context = {"site_name": SITE_NAME, "code": code, "minutes": 10, "link_url": link}
        message = renderer.render("code", "en-GB", placeholder, context)
        bases.append(message.raw)
    header = f"\r\nTo: {placeholder}\r\n".encode()
    assert all(header in base for base in bases), "the To header is not where it was expected"
    out = []
    for i in range(n):
        to = f"ceiling.{tag}.{i}@example.com"
        out.append((to, bases[i % len(bases)].replace(header, f"\r\nTo: {to}\r\n".encode(), 1)))
    return out


# --------------------------------------------------------------------------- measuring


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(p / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


async def busy_cores(seconds: float = 1.0) -> float:
    """Cores busy over ``seconds`` while nothing of ours runs: other workloads."""
    before, started = busy_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (busy_seconds() - before) / (time.perf_counter() - started)


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent on anything but idling, since boot."""
    t = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(t, f, 0.0) for f in fields))


class Cpu:
    """CPU seconds per component over a phase, and what everything else on the machine used."""

    def __init__(self, parts: dict[str, Any]) -> None:
        # name -> Proc or psutil.Process
        self.parts = parts
        self.me = psutil.Process()

    def _now(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, part in {**self.parts, "client": self.me}.items():
            if isinstance(part, Proc):
                out[name] = part.cpu_seconds()
            else:
                with contextlib.suppress(psutil.Error):
                    t = part.cpu_times()
                    out[name] = t.user + t.system
        out["_busy"] = busy_seconds()
        out["_wall"] = time.perf_counter()
        return out

    def __enter__(self) -> Cpu:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        delta = {k: end[k] - self.start.get(k, 0.0) for k in end}
        wall = delta.pop("_wall")
        busy = delta.pop("_busy")
        self.seconds = {k: round(v, 3) for k, v in delta.items()}
        self.seconds["other"] = round(max(0.0, busy - sum(delta.values())), 3)
        self.cores = {k: round(v / wall, 2) for k, v in self.seconds.items()}


def tally(
    received: dict[str, list[float]], expected: list[str], sent_at: dict[str, float] | None
) -> dict[str, Any]:
    """Exactly-once check of one phase, and the time the last expected email arrived."""
    want = set(expected)
    got = [received.get(a, []) for a in expected]
    firsts = [min(t) for t in got if t]
    out: dict[str, Any] = {
        "expected": len(expected),
        "received": len(firsts),
        "losses": sum(1 for t in got if not t),
        "duplicates": sum(len(t) - 1 for t in got if len(t) > 1),
        "duplicated_addresses": sum(1 for t in got if len(t) > 1),
        "unexpected": sum(len(t) for a, t in received.items() if a not in want),
        "last_received": max(firsts) if firsts else float("nan"),
    }
    if sent_at is not None and firsts:
        lat = [(min(received[a]) - sent_at[a]) * 1000 for a in expected if received.get(a)]
        out["latency_ms"] = {
            "p50": round(pct(lat, 50), 1),
            "p90": round(pct(lat, 90), 1),
            "p99": round(pct(lat, 99), 1),
            "max": round(max(lat), 1),
            "min": round(min(lat), 1),
        }
        # Per-second arrival rate over the run: shows a ramp, a stall or a steady state.
        start = min(sent_at.values())
        per_second: Counter[int] = Counter(int(t - start) for t in firsts)
        out["per_second"] = [per_second.get(s, 0) for s in range(max(per_second) + 1)]
    return out


async def ceiling(
    sink: Sink,
    emails: list[tuple[str, bytes]],
    connections: int,
    cpu_parts: dict[str, Any],
    settle: float,
) -> dict[str, Any]:
    """Send ``emails`` straight to the sink from this process over ``connections`` reused
    SMTP connections (each sends its share one after another); emails/s = messages / (first
    send to last receive)."""
    await sink.reset()
    clients = [
        aiosmtplib.SMTP(
            hostname="127.0.0.1", port=sink.smtp_port, use_tls=False, start_tls=False, timeout=30
        )
        for _ in range(connections)
    ]
    for client in clients:
        await client.connect()
    errors: Counter[str] = Counter()

    async def send(client: aiosmtplib.SMTP, share: list[tuple[str, bytes]]) -> None:
        for to, data in share:
            try:
                await client.sendmail(FROM_ADDRESS, [to], data)
            except aiosmtplib.SMTPException as exc:
                errors[type(exc).__name__] += 1

    with Cpu(cpu_parts) as cpu:
        t0 = time.time()
        await asyncio.gather(*(send(c, emails[i::connections]) for i, c in enumerate(clients)))
        client_done = time.time()
        await sink.wait_for(len(emails), stall=5, deadline=60)
    for client in clients:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()
    await asyncio.sleep(settle)
    check = tally((await sink.dump())["received"], [to for to, _ in emails], None)
    wall = check["last_received"] - t0
    return {
        "connections": connections,
        "messages": len(emails),
        "wall_s": round(wall, 3),
        "emails_per_s": round(check["received"] / wall, 1),
        "client_done_s": round(client_done - t0, 3),
        "errors": dict(errors),
        "check": check,
        "cpu_s": cpu.seconds,
        "cpu_cores": cpu.cores,
    }


async def redis_snapshot(redis: Redis, prefix: str) -> dict[str, Any]:
    stats = await redis.hgetall(f"{prefix}:stats")
    queue = f"{prefix}:queue"
    pending = 0
    with contextlib.suppress(Exception):
        summary = await redis.xpending(queue, f"{prefix}:workers")
        pending = int(summary.get("pending", 0))
    commands = await redis.info("commandstats")
    return {
        "commands": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()},
        "stats": {str(k): int(v) for k, v in stats.items() if str(v).lstrip("-").isdigit()},
        "stream_length": await redis.xlen(queue),
        "stream_pending": pending,
        "due": await redis.zcard(f"{prefix}:deliveries:due"),
        "dead_letters": await redis.llen(f"{prefix}:deliveries:failed"),
    }


def redis_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(set(before["stats"]) | set(after["stats"]))
    wanted = ("deliveries:", "verifications:created")
    calls = {
        k: after["commands"][k] - before["commands"].get(k, 0)
        for k in after["commands"]
        if k != "info" and after["commands"][k] != before["commands"].get(k, 0)
    }
    return {
        **{k: v for k, v in after.items() if k not in ("stats", "commands")},
        # Commands run by Lua scripts are counted too (as their own command names).
        "command_calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "counters": {
            k: after["stats"].get(k, 0) - before["stats"].get(k, 0)
            for k in keys
            if k.startswith(wanted)
        },
    }


class CommandMonitor:
    """Redis MONITOR during a phase: commands per process role, and those Lua scripts ran.

    MONITOR slows Redis down and this process parses every line, so a monitored run's
    throughput is not comparable; it is for counting round trips.
    """

    def __init__(self, url: str) -> None:
        self._redis = Redis.from_url(url, decode_responses=True)
        self.counts: Counter[tuple[str, str]] = Counter()  # (client port or "lua", command)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()

        async def listen() -> None:
            async with self._redis.monitor() as monitor:
                ready.set()
                while True:
                    info = await monitor.next_command()
                    command = str(info.get("command", "")).split(" ", 1)[0].lower()
                    where = "lua" if info.get("client_type") == "lua" else info["client_port"]
                    self.counts[(str(where), command)] += 1

        self._task = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 5)

    async def stop(self, roles: dict[int, str], emails: int) -> dict[str, dict[str, float]]:
        """Commands per email by role ("web", "worker", "lua", …)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        out: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for (where, command), n in self.counts.items():
            role = "lua (inside scripts)" if where == "lua" else roles.get(int(where), "other")
            out[role][command] += n
        return {
            role: dict(
                sorted(((c, round(n / max(emails, 1), 2)) for c, n in cmds.items()),
                       key=lambda kv: -kv[1])
            )
            for role, cmds in out.items()
        }  # fmt: skip


def redis_client_ports(procs: dict[str, list[psutil.Process]], redis_port: int) -> dict[int, str]:
    """Local port of every connection to Redis -> the role of the process that holds it."""
    roles: dict[int, str] = {}
    for role, members in procs.items():
        for proc in members:
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == redis_port:
                        roles[conn.laddr.port] = role
    return roles


# --------------------------------------------------------------------------- profiling


class Profiler:
    """py-spy on every worker process (sampling, non-blocking), stopped with SIGINT."""

    def __init__(self, folder: Path, rate: int) -> None:
        self.folder, self.rate = folder, rate
        self.runs: list[tuple[int, Path, asyncio.subprocess.Process]] = []
        self.started = 0.0
        self.wall = 0.0

    async def start(self, pids: list[int]) -> None:
        py_spy = BIN / "py-spy"
        for pid in pids:
            out = self.folder / f"worker-{pid}.raw"
            process = await asyncio.create_subprocess_exec(
                str(py_spy), "record", "-p", str(pid), "-r", str(self.rate), "-f", "raw",
                "-o", str(out), "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self.runs.append((pid, out, process))
        await asyncio.sleep(0.5)  # py-spy attaches
        self.started = time.perf_counter()

    async def stop(self) -> None:
        self.wall = time.perf_counter() - self.started
        for _, _, process in self.runs:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        for _, _, process in self.runs:
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    def report(self, top: int = 20) -> dict[str, Any]:
        """Own-time and inclusive-time shares by function, over all worker processes, and
        where the top own-time functions are called from.

        py-spy leaves out idle samples by default, so the shares are of busy samples.
        Inclusive shares skip the frames every sample has (click, taskiq's CLI, the loop).
        """
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        nearest: Counter[str] = Counter()
        areas: Counter[str] = Counter()
        callers: defaultdict[str, Counter[str]] = defaultdict(Counter)
        total = 0
        per_pid: dict[int, int] = {}
        for pid, path, _ in self.runs:
            samples = 0
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count_text = line.rpartition(" ")
                if not count_text.isdigit():
                    continue
                count = int(count_text)
                frames = [
                    _short(f)
                    for f in stack.split(";")
                    if f and not f.startswith(("process ", "thread "))
                ]
                if not frames:
                    continue
                samples += count
                own[frames[-1]] += count
                nearest[_nearest_project_frame(frames)] += count
                for area, patterns in AREAS.items():
                    if any(pat in f for f in frames for pat in patterns):
                        areas[area] += count
                for f in set(frames):
                    if not f.endswith(_BOILERPLATE):
                        inclusive[f] += count
                # The nearest callers that are not asyncio/stdlib plumbing.
                chain = [f for f in frames[:-1] if not f.endswith(_PLUMBING)][-2:]
                callers[frames[-1]][" <- ".join(reversed(chain))] += count
            per_pid[pid] = samples
            total += samples
        busy = {pid: round(s / (self.rate * self.wall), 2) for pid, s in per_pid.items()}

        def share(c: int) -> float:
            return round(100 * c / max(total, 1), 1)

        return {
            "samples": total,
            "rate_hz": self.rate,
            "wall_s": round(self.wall, 2),
            "busy_cores_per_worker": busy,
            "own": [(f, share(c)) for f, c in own.most_common(top)],
            "inclusive": [(f, share(c)) for f, c in inclusive.most_common(top + 10)],
            "areas": {area: share(areas[area]) for area in AREAS},
            "by_nearest_project_function": [(f, share(c)) for f, c in nearest.most_common(top)],
            "callers_of_top_own": {
                f: [(chain, share(c)) for chain, c in callers[f].most_common(3)]
                for f, _ in own.most_common(6)
            },
        }


# Stacks containing any of these frames (substring match), as a share of busy samples.
# Areas overlap (a socket write inside an SMTP send counts in both).
AREAS = {
    "email rendering (EmailRenderer.render)": ("EmailRenderer.render",),
    "SMTP send (SmtpSender.send)": ("SmtpSender.send",),
    "  of which flatten_message": ("flatten_message (aiosmtplib",),
    "Redis client calls (redis-py)": ("(redis/",),
    "taskiq result backend (set_result)": ("set_result (",),
    "stream read (listen / xreadgroup)": ("listen (tasks/broker.py)", "xreadgroup"),
    "ack (XACK+XDEL)": ("_ack (",),
    "logging": ("(logging/__init__.py)",),
    "socket writes (transport.write)": ("_SelectorSocketTransport.write",),
    "taskiq Receiver.callback (everything per task)": ("Receiver.callback",),
    "  of which the task itself (Receiver.run_task)": ("Receiver.run_task",),
}
PROJECT_DIRS = ("tasks/", "verification/", "config/", "webhooks/")


def _nearest_project_frame(frames: list[str]) -> str:
    """The innermost frame in Tidings' own code (library time below it is counted to it);
    without one, the innermost frame outside the stdlib's asyncio/selectors plumbing."""
    for f in reversed(frames):
        if f.rpartition("(")[2].startswith(PROJECT_DIRS):
            return f
    for f in reversed(frames):
        if not f.endswith(_PLUMBING) and "(selectors.py)" not in f:
            return f"[no project frame] {f}"
    return "[event loop]"


# Frames on every stack of a worker process, and loop plumbing, left out of the summaries.
_BOILERPLATE = (
    "(click/core.py)", "(click/decorators.py)", "(multiprocessing/context.py)",
    "(multiprocessing/process.py)", "(multiprocessing/popen_fork.py)",
    "(taskiq/cli/worker/cmd.py)", "(taskiq/cli/worker/process_manager.py)",
    "(taskiq/cli/worker/run.py)", "(taskiq/__main__.py)", "(tidings/cli.py)", "(tidings)",
    "(asyncio/base_events.py)", "(asyncio/events.py)",
)  # fmt: skip
_PLUMBING = (*_BOILERPLATE, "(asyncio/tasks.py)", "(asyncio/selector_events.py)")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` relative to the project or site-packages."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# --------------------------------------------------------------------------- report


def print_report(doc: dict[str, Any]) -> None:
    rows = []
    for c in doc["ceiling"]["rounds"]:
        label = f"sink ceiling, {c['connections']} conn"
        rows.append((label, c))
    par = doc["ceiling"].get("parallel")
    if par:
        rows.append((f"sink, {par['connections']} conn (x-check)", par))
    t = doc["tidings"]
    head = (
        f"{'phase':<28} {'emails':>6} {'wall s':>7} {'emails/s':>9} {'lost':>5} {'dups':>5} "
        f"{'p50 ms':>8} {'p99 ms':>8}   cpu cores (sink | client | web | worker | redis | other)"
    )
    print()
    print(head)
    print("-" * len(head))
    for label, c in rows:
        k = c["cpu_cores"]
        print(
            f"{label:<28} {c['check']['received']:>6} {c['wall_s']:>7.2f} {c['emails_per_s']:>9.0f} "
            f"{c['check']['losses']:>5} {c['check']['duplicates']:>5} {'':>8} {'':>8}   "
            f"{k.get('sink', 0):.2f} | {k.get('client', 0):.2f} | {k.get('web', 0):.2f} | "
            f"{k.get('worker', 0):.2f} | {k.get('redis', 0):.2f} | {k.get('other', 0):.2f}"
        )
    chk, k, lat = t["check"], t["cpu_cores"], t["check"].get("latency_ms", {})
    print(
        f"{'tidings end to end':<28} {chk['received']:>6} {t['wall_s']:>7.2f} "
        f"{t['emails_per_s']:>9.0f} {chk['losses']:>5} {chk['duplicates']:>5} "
        f"{lat.get('p50', float('nan')):>8.0f} {lat.get('p99', float('nan')):>8.0f}   "
        f"{k.get('sink', 0):.2f} | {k.get('client', 0):.2f} | {k.get('web', 0):.2f} | "
        f"{k.get('worker', 0):.2f} | {k.get('redis', 0):.2f} | {k.get('other', 0):.2f}"
    )
    print()
    i = t["intake"]
    mode = (
        f"paced at {i['rate']:g}/s" if i["rate"] else f"closed loop, {i['concurrency']} in flight"
    )
    print(
        f"intake: {i['accepted']}/{i['posted']} answered 202 ({i['statuses']}), "
        f"{i['requests_per_s']:.0f} req/s over {i['wall_s']:.2f} s "
        f"({mode})"
    )
    print(
        f"latency per email (sink receive - request sent): p50 {lat.get('p50')} ms, "
        f"p90 {lat.get('p90')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms"
    )
    rd = t["redis"]
    print(
        f"redis after the run: counters {rd['counters']}; stream {rd['stream_length']} entries, "
        f"{rd['stream_pending']} pending; due set {rd['due']}; dead letters {rd['dead_letters']}"
    )
    per_email = {k: round(v / max(chk["received"], 1), 2) for k, v in rd["command_calls"].items()}
    print(f"redis commands per email (scripts' inner commands included): {per_email}")
    print(
        f"worker log lines during the run: {t['worker_log_lines']} "
        f"({t['worker_log_lines'] / max(chk['received'], 1):.2f} per email); "
        f"CPU ms per email: {t['cpu_ms_per_email']}"
    )
    if t.get("monitor_commands_per_email"):
        print("redis MONITOR, commands per email by who sent them:")
        for role, cmds in t["monitor_commands_per_email"].items():
            print(f"  {role:<22} {sum(cmds.values()):6.2f}  {cmds}")
    per_s = chk.get("per_second", [])
    if per_s:
        print(f"emails received per second since the first request: {per_s}")
    v = doc["verdict"]
    word = "PASS" if v["pass"] else "FAIL"
    print()
    print(
        f"sink ceiling (1 connection, best of {len(doc['ceiling']['rounds'])} rounds): "
        f"{v['ceiling_emails_per_s']:.0f} emails/s"
    )
    print(f"tidings end to end: {v['tidings_emails_per_s']:.0f} emails/s")
    print(
        f"ratio tidings/ceiling: {v['ratio']:.2f} (target >= {RATIO_TARGET}), "
        f"duplicates {v['duplicates']} (target 0), losses {v['losses']} (target 0), "
        f"non-202 answers {v['non_202']}  ->  {word}"
    )
    if t["intake"]["rate"]:
        print(
            "NOTE: signups were paced (--rate), so emails/s is capped by the rate; the "
            "throughput verdict is meant for the closed loop (the default)"
        )
    if t["noisy"]:
        print(
            f"NOTE: noisy run: unrelated processes used {t['cpu_cores']['other']:.2f} cores during "
            "the Tidings phase (see 'other'); every process here shares the same CPUs, so "
            "re-run on a quiet machine for clean figures"
        )
    if v.get("ratio_vs_parallel") is not None:
        print(
            f"  cross-check: ratio vs the sink over {par['connections']} parallel connections "
            f"({par['emails_per_s']:.0f} emails/s): {v['ratio_vs_parallel']:.2f}"
        )


def _log_levels(text: str) -> tuple[Counter[str], list[str]]:
    """Lines per level of a JSON log, and the warning-or-worse (or unparsable) lines."""
    levels: Counter[str] = Counter()
    serious = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            level = str(json.loads(line).get("level", "?")).lower()
        except (ValueError, AttributeError):
            # taskiq's process manager logs "INFO:taskiq.process-manager:..." lines itself.
            head = line.split(":", 1)[0]
            level = head.lower() if head in ("DEBUG", "INFO", "WARNING", "ERROR") else "not json"
        levels[level] += 1
        if level not in ("debug", "info"):
            serious.append(line)
    return levels, serious


def _count_lines(path: Path) -> int:
    with contextlib.suppress(OSError), path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return 0


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    idle_load = await busy_cores()
    waited = 0.0
    while idle_load > QUIET_CORES and waited < args.wait_quiet:
        if not waited:
            print(
                f"other processes busy on {idle_load:.2f} cores; waiting up to "
                f"{args.wait_quiet:g} s for a quieter machine",
                flush=True,
            )
        idle_load = await busy_cores(2.0)
        waited += 2.0
    print(
        f"machine: {os.cpu_count()} CPUs; other processes busy on {idle_load:.2f} cores before start"
    )
    if idle_load > QUIET_CORES:
        print("WARNING: the machine is busy with other work; expect noisy figures", flush=True)
    pool_size = args.pool_size or EmailSettings().pool_size
    parallel = args.parallel_connections
    if parallel is None:
        parallel = args.workers * pool_size
    with tempfile.TemporaryDirectory(prefix="tidings-bench-delivery-") as tmp:
        folder = Path(tmp)
        redis_server = EmbeddedRedis(folder / "redis", appendonly=False)
        await redis_server.start()
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        procs: list[Proc] = []
        sink: Sink | None = None
        profiler: Profiler | None = None
        try:
            redis_proc = next(p for p in psutil.Process().children() if "redis-server" in p.name())
            sink = await Sink.start(folder)
            procs.append(sink.proc)
            secret = new_webhook_secret()
            prefix = f"bench-{secrets.token_hex(3)}"
            web_port = free_port()
            cfg = {
                "redis_url": redis_server.url,
                "prefix": prefix,
                "secret_key": secrets.token_urlsafe(48),
                "webhook_secret": secret,
                "api_key": new_api_key(),
                "web_port": web_port,
                "smtp_port": sink.smtp_port,
            }
            env = tidings_env(cfg, args)
            web = await start_web(folder, env, web_port)
            procs.append(web)
            worker = await start_worker(folder, env, redis, prefix, args)
            procs.append(worker)
            worker_pids = [p.pid for p in worker.tree()[1:]] or [worker.pid]
            print(
                f"redis pid {redis_proc.pid}; sink pid {sink.proc.pid} (smtp :{sink.smtp_port}); "
                f"web pid {web.pid} (:{web_port}); worker pid {worker.pid}, "
                f"worker processes {worker_pids}",
                flush=True,
            )
            parts = {"sink": sink.proc, "web": web, "worker": worker, "redis": redis_proc}
            url = f"http://127.0.0.1:{web_port}/webhooks/{SITE_ID}"
            signups = Signups(secret)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                # Warm-up: every process has imported, connected and opened its SMTP pool.
                if args.warmup:
                    await sink.reset()
                    warm = signups.make(args.warmup, "warm")
                    posted = await post_signups(session, url, warm, args.concurrency, 0)
                    if posted.accepted != len(warm):
                        raise RuntimeError(f"warm-up signups failed: {dict(posted.statuses)}")
                    s = await sink.wait_for(len(warm), stall=20, deadline=120)
                    if s["recipients"] < len(warm):
                        raise RuntimeError(
                            f"warm-up: only {s['recipients']}/{len(warm)} emails arrived; "
                            f"worker log:\n{worker.log_tail()}"
                        )
                    await asyncio.sleep(1)
                    sizes = s["sizes"]
                    print(f"warm-up: {len(warm)} signups delivered (message sizes {sizes} bytes)")

                # The sink's ceiling, before Tidings runs (and once more after it).
                emails = code_emails(args.n, "a")
                rounds = [await ceiling(sink, emails, 1, parts, args.settle)]
                print(
                    f"sink ceiling round 1 (1 connection): {rounds[-1]['emails_per_s']:.0f} emails/s "
                    f"(message sizes {(await sink.stats())['sizes']} bytes)",
                    flush=True,
                )
                par = None
                if parallel and parallel > 1:
                    par = await ceiling(
                        sink, code_emails(args.n, "p"), parallel, parts, args.settle
                    )
                    print(
                        f"sink over {parallel} parallel connections: {par['emails_per_s']:.0f} emails/s",
                        flush=True,
                    )

                # Tidings end to end.
                await sink.reset()
                await asyncio.sleep(0.5)
                redis_before = await redis_snapshot(redis, prefix)
                log_lines_before = _count_lines(worker.log)
                batch = signups.make(args.n, "sig")
                if args.profile:
                    profiler = Profiler(folder, args.profile_rate)
                    await profiler.start(worker_pids)
                    print(f"py-spy recording worker processes {worker_pids}", flush=True)
                monitor = None
                if args.monitor:
                    monitor = CommandMonitor(redis_server.url)
                    await monitor.start()
                    print("redis MONITOR on (throughput of this run is not representative)")
                print(f"tidings: posting {args.n} signups", flush=True)
                with Cpu(parts) as cpu:
                    posted = await post_signups(session, url, batch, args.concurrency, args.rate)
                    print(
                        f"  intake done: {posted.accepted}/{len(batch)} accepted in "
                        f"{posted.last_answer - posted.first:.2f} s",
                        flush=True,
                    )
                    await sink.wait_for(
                        posted.accepted, stall=args.stall, deadline=args.deadline,
                        progress="tidings",
                    )  # fmt: skip
                if profiler is not None:
                    await profiler.stop()
                await asyncio.sleep(args.settle)  # late duplicates
                commands_per_email = None
                if monitor is not None:
                    roles = redis_client_ports(
                        {"web": web.tree(), "worker": worker.tree(), "bench": [psutil.Process()]},
                        redis_server.port,
                    )
                    commands_per_email = await monitor.stop(roles, args.n)
                dump = await sink.dump()
                check = tally(dump["received"], [e for e, _, _ in batch], posted.sent_at)
                redis_after = await redis_snapshot(redis, prefix)
                log_lines = _count_lines(worker.log) - log_lines_before
                wall = check["last_received"] - posted.first
                tid = {
                    "wall_s": round(wall, 3),
                    "emails_per_s": round(check["received"] / wall, 1),
                    "check": check,
                    "intake": {
                        "posted": len(batch),
                        "accepted": posted.accepted,
                        "statuses": dict(posted.statuses),
                        "wall_s": round(posted.last_answer - posted.first, 3),
                        "requests_per_s": round(
                            posted.accepted / (posted.last_answer - posted.first), 1
                        ),
                        "concurrency": args.concurrency,
                        "rate": args.rate,
                    },
                    "cpu_s": cpu.seconds,
                    "cpu_cores": cpu.cores,
                    "cpu_ms_per_email": {
                        k: round(1000 * v / max(check["received"], 1), 3)
                        for k, v in cpu.seconds.items()
                    },
                    "redis": redis_delta(redis_before, redis_after),
                    "worker_log_lines": log_lines,
                    "monitor_commands_per_email": commands_per_email,
                    "noisy": cpu.cores["other"] > QUIET_CORES,
                    "profiled": bool(args.profile),
                }
                print(f"  tidings: {tid['emails_per_s']:.0f} emails/s end to end", flush=True)

                rounds.append(await ceiling(sink, code_emails(args.n, "b"), 1, parts, args.settle))
                print(
                    f"sink ceiling round 2 (1 connection): {rounds[-1]['emails_per_s']:.0f} emails/s",
                    flush=True,
                )
        finally:
            if profiler is not None and not profiler.wall:
                await profiler.stop()
            codes = {}
            for proc in reversed(procs):
                codes[proc.name] = await stop(proc)
            if sink is not None:
                await sink.close()
            await redis.aclose()
            await redis_server.stop()
            worker_log = next((p for p in procs if p.name == "worker"), None)
            web_log = next((p for p in procs if p.name == "web"), None)
            logs = {
                p.name: p.log.read_text(errors="replace").strip()
                for p in (worker_log, web_log)
                if p is not None and p.log.exists()
            }

        best = max(rounds, key=lambda r: r["emails_per_s"])
        ratio = tid["emails_per_s"] / best["emails_per_s"]
        non_202 = tid["intake"]["posted"] - tid["intake"]["accepted"]
        verdict = {
            "ceiling_emails_per_s": best["emails_per_s"],
            "tidings_emails_per_s": tid["emails_per_s"],
            "ratio": round(ratio, 3),
            "ratio_vs_parallel": round(tid["emails_per_s"] / par["emails_per_s"], 3)
            if par
            else None,
            "duplicates": check["duplicates"],
            "losses": check["losses"],
            "non_202": non_202,
            "ratio_pass": ratio >= RATIO_TARGET,
        }
        verdict["pass"] = bool(
            verdict["ratio_pass"]
            and not check["duplicates"]
            and not check["losses"]
            and not non_202
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        doc: dict[str, Any] = {
            "benchmark": "delivery",
            "when": stamp,
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": _cpu_model(),
                "python": platform.python_version(),
                "aiosmtplib": aiosmtplib.__version__,
                "other_load_before_start_cores": round(idle_load, 2),
                "note": "every process (sink, web, workers, redis, load generator) shares these CPUs",
            },
            "config": {
                **vars(args),
                "worker_tunables": {
                    "max_async_tasks": args.max_async_tasks or QueueSettings().max_async_tasks,
                    "pool_size": pool_size,
                    "xread_count": args.xread_count or QueueSettings().xread_count,
                    "env": args.env,
                },
            },
            "targets": {"ratio_min": RATIO_TARGET, "duplicates": 0, "losses": 0},
            "ceiling": {"rounds": rounds, "parallel": par},
            "tidings": tid,
            "verdict": verdict,
            "exit_codes": codes,
        }
        print_report(doc)
        doc["logs"] = {}
        for name, text in logs.items():
            levels, serious = _log_levels(text)
            doc["logs"][name] = {"levels": dict(levels), "first_warnings": serious[:5]}
            if levels:
                print(f"\n{name} log lines by level: {dict(levels)}")
            for line in serious[:5]:
                print(f"  {line[:300]}")
        if profiler is not None:
            prof = profiler.report()
            doc["profile"] = prof
            print(
                f"\npy-spy over the worker processes ({prof['samples']} busy samples at "
                f"{prof['rate_hz']} Hz over {prof['wall_s']} s; non-idle fraction per process "
                f"{prof['busy_cores_per_worker']}, which includes waiting for a CPU); "
                "share of busy samples:"
            )
            print("  own time:")
            for f, share in prof["own"]:
                print(f"    {share:5.1f}%  {f}")
            print("  inclusive (without the frames every sample has):")
            for f, share in prof["inclusive"]:
                print(f"    {share:5.1f}%  {f}")
            print("  areas (a sample counts in every area whose frame is on its stack):")
            for area, share in prof["areas"].items():
                print(f"    {share:5.1f}%  {area}")
            print(
                "  by the innermost Tidings function on the stack (library time below it included):"
            )
            for f, share in prof["by_nearest_project_function"]:
                print(f"    {share:5.1f}%  {f}")
            print("  callers of the top own-time functions:")
            for f, chains in prof["callers_of_top_own"].items():
                print(f"    {f}")
                for chain, share in chains:
                    print(f"      {share:5.1f}%  <- {chain}")
        if profiler is not None:
            for pid, path, _ in profiler.runs:
                if path.exists():
                    raw = RESULTS / f"delivery-{stamp}-worker-{pid}.raw"
                    raw.write_bytes(path.read_bytes())
                    doc["profile"].setdefault("raw_files", []).append(str(raw.relative_to(ROOT)))
        out = RESULTS / f"delivery-{stamp}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nresults written to {out.relative_to(ROOT)}")
        return 0 if verdict["pass"] else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="signups (and ceiling emails)")
    parser.add_argument("--workers", type=int, default=2, help="tidings worker --workers")
    parser.add_argument("--concurrency", type=int, default=32, help="signup requests in flight")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="pace signups at this many per second (0: closed loop)",
    )
    parser.add_argument("--warmup", type=int, default=100, help="signups delivered before timing")
    parser.add_argument(
        "--parallel-connections",
        type=int,
        default=None,
        help="also measure the sink over this many parallel connections (default: workers x "
        "pool size; 0 skips)",
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds to wait for late duplicates"
    )
    parser.add_argument(
        "--stall", type=float, default=20.0, help="give up after this long without an email"
    )
    parser.add_argument(
        "--deadline", type=float, default=300.0, help="give up after this long in all"
    )
    parser.add_argument(
        "--max-async-tasks", type=int, default=None, help="TIDINGS_QUEUE__MAX_ASYNC_TASKS"
    )
    parser.add_argument("--pool-size", type=int, default=None, help="TIDINGS_EMAIL__POOL_SIZE")
    parser.add_argument("--xread-count", type=int, default=None, help="TIDINGS_QUEUE__XREAD_COUNT")
    parser.add_argument(
        "--env", action="append", default=[], metavar="TIDINGS_KEY=VALUE", help="any other setting"
    )
    parser.add_argument("--worker-args", default="", help="extra options for tidings worker")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="wait up to this long for other processes to go quiet before starting",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the worker processes")
    parser.add_argument(
        "--monitor", action="store_true", help="count Redis round trips per email (MONITOR)"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
