"""Intake benchmark: POST /webhooks/{site} on Tidings vs a bare-aiohttp floor.

    python bench/intake.py [--requests N] [--concurrency C] [--rate R] [--duration S] ...

Starts a private redis-server, runs each target in its own process, drives both from
this process with aiohttp, prints a table with the Tidings/floor ratio and PASS/FAIL
against the targets, and writes the figures to bench/results/intake-<timestamp>.json.
See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tidings.devsite import new_api_key, new_webhook_secret  # noqa: E402
from tidings.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from tidings.signup_client import signed_headers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SITE_ID = "demo"
TARGETS = ("floor", "tidings")
RATIO_TARGET = 0.7
P99_TARGET_MS = 20.0

Request = tuple[bytes, dict[str, str]]


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """One target running in its own process."""

    name: str
    port: int
    prefix: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/{SITE_ID}"

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


async def start_server(
    name: str, folder: Path, base: dict[str, Any], profile: Path | None
) -> Server:
    port = free_port()
    prefix = f"bench-{name}-{secrets.token_hex(3)}"
    cfg = {**base, "target": name, "port": port, "prefix": prefix}
    if profile is not None:
        cfg["profile"] = str(profile)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["BENCH_INTAKE_CONFIG"] = json.dumps(cfg)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = folder / f"{name}.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.intake_server",
            cwd=folder,  # no stray .env is read
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
    except TimeoutError:
        line = b""
    if line.strip() != b"READY":
        process.kill()
        await process.wait()
        raise RuntimeError(f"{name} server did not start:\n{log.read_text()[-2000:]}")
    return Server(name, port, prefix, process, log)


async def stop_server(server: Server) -> dict[str, Any]:
    """Stop the server; returns what it reported on the way out (GC pauses)."""
    process = server.process
    if process.returncode is not None:
        return {}
    process.terminate()
    assert process.stdout is not None
    try:
        async with asyncio.timeout(15):
            output = await process.stdout.read()
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return {}
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("STATS "):
            return dict(json.loads(line.removeprefix("STATS ")))
    return {}


def pin(enabled: bool, load_side: list[psutil.Process], server_pids: list[int]) -> dict[str, Any]:
    """Give the servers a CPU of their own; the load generator and Redis share the rest.

    Only one server is under load at a time, so both may share the one CPU.
    """
    if not enabled or not hasattr(psutil.Process, "cpu_affinity"):  # e.g. macOS
        return {}
    cpus = sorted(psutil.Process().cpu_affinity() or [])
    if len(cpus) < 2:
        return {}
    server_cpus, other = cpus[-1:], cpus[:-1]
    for proc in [psutil.Process(), *load_side]:
        proc.cpu_affinity(other)
    for pid in server_pids:
        psutil.Process(pid).cpu_affinity(server_cpus)
    return {"servers": server_cpus, "load_generator_and_redis": other}


# --------------------------------------------------------------------------- load


class Signups:
    """Fresh signed signups: unique webhook-id and unique address for every request."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.run = secrets.token_hex(4)
        self.count = 0

    def make(self, n: int) -> list[Request]:
        # Signed just before use (the timestamp tolerance is 5 min), outside any timing.
        out = []
        for _ in range(n):
            self.count += 1
            i = self.count
            event = {
                "type": "signup.created",
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                "data": {
                    "user_id": f"user-{self.run}-{i}",
                    "email": f"bench.{self.run}.{i}@example.com",
                    "channel": "email",
                    "locale": "en-GB",
                    "metadata": {"plan": "pro", "source": "bench"},
                },
            }
            body = json.dumps(event)
            headers = signed_headers(self.secret, body, f"msg_{self.run}_{i}")
            out.append((body.encode(), headers))
        return out


@dataclass
class Phase:
    """What one load phase measured."""

    target: str
    mode: str
    sent: int
    ok: int
    wall_s: float
    rps: float
    lat_ms: list[float] = field(repr=False)
    errors: dict[str, int]
    server_cpu_s: float
    redis_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)


async def _post(
    session: aiohttp.ClientSession, url: str, req: Request, errors: Counter[str]
) -> bool:
    body, headers = req
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status == 202:
                return True
            errors[f"http {response.status}"] += 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        errors[type(exc).__name__] += 1
    return False


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent on anything but idling, since boot."""
    t = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(t, f, 0.0) for f in fields))


class Cpu:
    """CPU seconds used during a phase by the server, redis-server, this process, and
    everything else on the machine (other workloads that compete for the same cores)."""

    def __init__(self, server: Server, redis_proc: psutil.Process) -> None:
        self.server, self.redis, self.me = server, redis_proc, psutil.Process()

    def _now(self) -> tuple[float, float, float, float]:
        r, m = self.redis.cpu_times(), self.me.cpu_times()
        return self.server.cpu_seconds(), r.user + r.system, m.user + m.system, busy_seconds()

    def __enter__(self) -> Cpu:
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.server_s, self.redis_s, self.client_s, busy = (
            b - a for a, b in zip(self.start, end, strict=True)
        )
        self.other_s = max(0.0, busy - self.server_s - self.redis_s - self.client_s)


async def closed_loop(
    session: aiohttp.ClientSession,
    server: Server,
    redis_proc: psutil.Process,
    reqs: list[Request],
    concurrency: int,
) -> Phase:
    """C workers, each sending its next request as soon as the previous one is answered."""
    pending = iter(reqs)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for req in pending:
            started = time.perf_counter()
            good = await _post(session, server.url, req, errors)
            lat.append((time.perf_counter() - started) * 1000)
            ok += good

    with Cpu(server, redis_proc) as cpu:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return Phase(
        server.name, "closed", len(reqs), ok, wall, ok / wall, lat, dict(errors),
        cpu.server_s, cpu.redis_s, cpu.client_s, cpu.other_s,
    )  # fmt: skip


async def open_loop(
    session: aiohttp.ClientSession,
    server: Server,
    redis_proc: psutil.Process,
    reqs: list[Request],
    rate: float,
) -> Phase:
    """Requests start on a fixed schedule, whether or not earlier ones have been answered.

    Latency is measured from the *scheduled* send time, so a stall on either side (server,
    Redis, or this load generator falling behind) counts against it; no coordinated omission.
    """
    interval = 1.0 / rate
    lat = [0.0] * len(reqs)
    service = [0.0] * len(reqs)
    lag = [0.0] * len(reqs)
    done = [0.0] * len(reqs)
    good = [False] * len(reqs)
    errors: Counter[str] = Counter()

    async def fire(i: int, scheduled: float, req: Request) -> None:
        started = time.perf_counter()
        good[i] = await _post(session, server.url, req, errors)
        done[i] = time.perf_counter()
        lat[i] = (done[i] - scheduled) * 1000
        service[i] = (done[i] - started) * 1000
        lag[i] = (started - scheduled) * 1000

    tasks = []
    with Cpu(server, redis_proc) as cpu:
        t0 = time.perf_counter() + 0.01
        for i, req in enumerate(reqs):
            scheduled = t0 + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(i, scheduled, req)))
        await asyncio.gather(*tasks)
        wall = max(done) - t0
    ok = sum(good)
    return Phase(
        server.name, "open", len(reqs), ok, wall, ok / wall, lat, dict(errors),
        cpu.server_s, cpu.redis_s, cpu.client_s, cpu.other_s,
        extra={
            "target_rate": rate,
            "service_p50_ms": pct(service, 50),
            "service_p99_ms": pct(service, 99),
            "send_lag_p99_ms": pct(lag, 99),
            "send_lag_max_ms": max(lag),
        },
    )  # fmt: skip


# --------------------------------------------------------------------------- report


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(p / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def summary(phases: list[Phase]) -> dict[str, Any]:
    """The rounds of one target in one mode, folded together.

    Each round gets its own req/s and percentiles. ``rps_best`` is the fastest round:
    interference from outside (other tenants of the host, a descheduled load generator)
    only ever slows a round down, so it is the least disturbed estimate of capacity.
    ``p50_ms``/``p90_ms``/``p99_ms`` are the median over rounds of each round's
    percentile, so one disturbed round does not decide a tail figure; ``max_ms`` is the
    worst over all rounds. CPU per request pools every round.
    """
    ok = sum(p.ok for p in phases)
    errors: Counter[str] = Counter()
    for p in phases:
        errors.update(p.errors)
    per_round = {q: [pct(p.lat_ms, q) for p in phases] for q in (50, 90, 99)}
    out: dict[str, Any] = {
        "rounds": len(phases),
        "sent": sum(p.sent for p in phases),
        "ok": ok,
        "rps_best": max(p.rps for p in phases),
        "rps_median": statistics.median(p.rps for p in phases),
        "rps_rounds": [round(p.rps, 1) for p in phases],
        "p50_ms": statistics.median(per_round[50]),
        "p90_ms": statistics.median(per_round[90]),
        "p99_ms": statistics.median(per_round[99]),
        "p99_ms_rounds": [round(x, 2) for x in per_round[99]],
        "max_ms": max(max(p.lat_ms) for p in phases),
        "errors": dict(errors),
        "server_cpu_ms_per_req": 1000 * sum(p.server_cpu_s for p in phases) / max(ok, 1),
        "redis_cpu_ms_per_req": 1000 * sum(p.redis_cpu_s for p in phases) / max(ok, 1),
        "client_cpu_ms_per_req": 1000 * sum(p.client_cpu_s for p in phases) / max(ok, 1),
        "server_cpu_util": sum(p.server_cpu_s for p in phases) / sum(p.wall_s for p in phases),
        # Cores busy with anything but the server, redis-server and the load generator.
        "other_load_cores": sum(p.other_cpu_s for p in phases) / sum(p.wall_s for p in phases),
    }
    for key in phases[0].extra:
        values = [p.extra[key] for p in phases]
        out[key] = max(values) if key.endswith("_max_ms") else statistics.median(values)
    return out


def print_table(results: dict[str, dict[str, dict[str, Any]]], rate: float) -> None:
    head = (
        f"{'target':<8} {'mode':<19} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6}  {'cpu ms/req srv|redis|client':>27} {'srv cpu':>7} "
        f"{'other':>5}"
    )
    print()
    print(head)
    print("-" * len(head))
    labels = {"closed": "closed-loop, best", "open": f"open @ {rate:g}/s, median"}
    for mode in ("closed", "open"):
        for target in TARGETS:
            s = results[target][mode]
            rps = s["rps_best"] if mode == "closed" else s["rps_median"]
            cpu = (
                f"{s['server_cpu_ms_per_req']:.2f} | {s['redis_cpu_ms_per_req']:.2f} | "
                f"{s['client_cpu_ms_per_req']:.2f}"
            )
            print(
                f"{target:<8} {labels[mode]:<19} {rps:>7.0f} {s['p50_ms']:>7.2f} "
                f"{s['p90_ms']:>7.2f} {s['p99_ms']:>7.2f} {s['max_ms']:>7.1f} "
                f"{sum(s['errors'].values()):>6}  {cpu:>27} {s['server_cpu_util']:>6.0%} "
                f"{s['other_load_cores']:>5.2f}"
            )
    print()
    print("req/s: closed-loop = best round, open-loop = median round (achieved rate).")
    print("p50/p90/p99: median over rounds of each round's percentile; max over all rounds.")
    print("open-loop latency is measured from each request's SCHEDULED send time.")
    print("srv cpu: server CPU / wall time; other: cores used by unrelated processes meanwhile.")
    for mode in ("closed", "open"):
        for t in TARGETS:
            s = results[t][mode]
            print(f"  {mode:<6} {t:<7} req/s per round {s['rps_rounds']}, p99 {s['p99_ms_rounds']}")
    for t in TARGETS:
        o = results[t]["open"]
        print(
            f"  open   {t:<7} service time (from actual send) p50 {o['service_p50_ms']:.2f} / "
            f"p99 {o['service_p99_ms']:.2f} ms; send lag p99 {o['send_lag_p99_ms']:.2f} / "
            f"max {o['send_lag_max_ms']:.2f} ms"
        )


def verdicts(results: dict[str, dict[str, dict[str, Any]]], rate: float) -> dict[str, Any]:
    floor, tid = results["floor"], results["tidings"]
    ratio = tid["closed"]["rps_best"] / floor["closed"]["rps_best"]
    # Round r ran both targets back to back, so each pair saw similar machine conditions.
    pairs = zip(floor["closed"]["rps_rounds"], tid["closed"]["rps_rounds"], strict=True)
    ratios = [t / f for f, t in pairs]
    cpu_ratio = floor["closed"]["server_cpu_ms_per_req"] / tid["closed"]["server_cpu_ms_per_req"]
    o = tid["open"]
    rate_ok = o["rps_median"] >= 0.98 * rate and not o["errors"]
    estimates = (ratio, statistics.median(ratios), cpu_ratio)
    busy = max(results[t][m]["other_load_cores"] for t in TARGETS for m in ("closed", "open"))
    # The three estimates of the same ratio disagree, or other work shared the cores.
    noisy = max(estimates) - min(estimates) > 0.1 or busy > 0.2
    # A noisy run must not pass by luck: then every estimate has to clear the target.
    judged = min(estimates) if noisy else ratio
    return {
        "noisy": noisy,
        "other_load_max_cores": busy,
        "throughput_ratio": ratio,
        "ratio_judged": judged,
        "throughput_ratio_paired_median": statistics.median(ratios),
        "throughput_ratio_rounds": [round(r, 3) for r in ratios],
        "cpu_per_request_ratio": cpu_ratio,
        "ratio_pass": judged >= RATIO_TARGET,
        "p99_at_rate_ms": o["p99_ms"],
        "p99_pass": o["p99_ms"] < P99_TARGET_MS and rate_ok,
        "rate_sustained": rate_ok,
    }


def print_verdicts(v: dict[str, Any], rate: float) -> None:
    def word(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print()
    print(
        f"throughput ratio tidings/floor (best closed-loop round each): "
        f"{v['throughput_ratio']:.2f}  (target >= {RATIO_TARGET})  {word(v['ratio_pass'])}"
    )
    rounds = ", ".join(f"{r:.2f}" for r in v["throughput_ratio_rounds"])
    print(
        f"  cross-checks: median of per-round ratios {v['throughput_ratio_paired_median']:.2f} "
        f"({rounds}); server CPU per request floor/tidings {v['cpu_per_request_ratio']:.2f}"
    )
    sustained = "" if v["rate_sustained"] else " (rate NOT sustained or errors)"
    print(
        f"tidings p99 at {rate:g} req/s (open-loop): {v['p99_at_rate_ms']:.2f} ms "
        f"(target < {P99_TARGET_MS:g} ms)  {word(v['p99_pass'])}{sustained}"
    )
    if v["noisy"]:
        print(
            f"NOTE: noisy run (other processes used up to {v['other_load_max_cores']:.2f} cores, "
            "or the three estimates differ by more than 0.1): the ratio verdict uses the lowest "
            f"estimate, {v['ratio_judged']:.2f}. The server-CPU-per-request ratio is the least "
            "affected figure; re-run on a quiet machine for clean throughput numbers."
        )


async def redis_check(url: str, servers: dict[str, Server]) -> dict[str, Any]:
    """What each target left in Redis: as many verifications, and what each cost in Redis.

    The floor does the least Redis work a signup needs (bench/intake_server.py), so the
    keys and bytes per signup show what Tidings' limits, indexes and task message add.
    """
    client = Redis.from_url(url, decode_responses=True)
    out: dict[str, Any] = {}
    try:
        for name, s in servers.items():
            created = await client.hget(f"{s.prefix}:stats", "verifications:created")
            entries = await client.xrange(f"{s.prefix}:queue", count=1)
            out[name] = {
                "verifications_created": int(created or 0),
                "stream_length": await client.xlen(f"{s.prefix}:queue"),
                "stream_entry_bytes": sum(len(v) for v in entries[0][1].values()) if entries else 0,
                "keys": sum([1 async for _ in client.scan_iter(f"{s.prefix}:*", count=5000)]),
            }
        info = await client.info("memory")
        out["redis_used_memory_mb"] = round(info["used_memory"] / 1e6, 1)
        counts = {out[name]["verifications_created"] for name in servers}
        out["same_work"] = len(counts) == 1
    finally:
        await client.aclose()
    return out


def print_profile(path: Path, top: int = 25) -> None:
    print(f"\ncProfile of the tidings server (all phases), top {top} by cumulative time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)


# --------------------------------------------------------------------------- main


async def busy_cores(seconds: float = 1.0) -> float:
    """Cores busy over ``seconds`` while nothing of ours is running: other workloads."""
    before, started = busy_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (busy_seconds() - before) / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    idle_load = await busy_cores()
    print(
        f"machine: {os.cpu_count()} CPUs; other processes busy on {idle_load:.2f} cores before start"
    )
    if idle_load > 0.2:
        print("WARNING: the machine is busy with other work; expect noisy figures", flush=True)
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        folder = Path(tmp)
        redis = EmbeddedRedis(folder / "redis", appendonly=False)
        await redis.start()
        servers: dict[str, Server] = {}
        pinning: dict[str, Any] = {}
        try:
            redis_proc = next(p for p in psutil.Process().children() if "redis-server" in p.name())
            secret = new_webhook_secret()
            base = {
                "redis_url": redis.url,
                "site_id": SITE_ID,
                "webhook_secret": secret,
                "api_key": new_api_key(),
                "secret_key": secrets.token_urlsafe(48),
            }
            profile = folder / "tidings.prof" if args.profile else None
            for name in TARGETS:
                servers[name] = await start_server(
                    name, folder, base, profile if name == "tidings" else None
                )
            for s in servers.values():
                print(f"{s.name} server: pid {s.process.pid}, {s.url}", flush=True)
            pinning = pin(args.pin, [redis_proc], [s.process.pid for s in servers.values()])
            if pinning:
                print(f"CPU pinning: {pinning}", flush=True)
            signups = Signups(secret)
            phases: dict[str, dict[str, list[Phase]]] = {
                t: {"closed": [], "open": []} for t in TARGETS
            }
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                print(f"warm-up: {args.warmup} requests per target", flush=True)
                for name in TARGETS:
                    warm = await closed_loop(
                        session, servers[name], redis_proc,
                        signups.make(args.warmup), args.concurrency,
                    )  # fmt: skip
                    if warm.ok != warm.sent:
                        raise RuntimeError(f"{name} warm-up failed: {warm.errors}")
                for r in range(args.rounds):
                    order = TARGETS if r % 2 == 0 else TARGETS[::-1]
                    for name in order:
                        p = await closed_loop(
                            session, servers[name], redis_proc,
                            signups.make(args.requests), args.concurrency,
                        )  # fmt: skip
                        phases[name]["closed"].append(p)
                        print(
                            f"closed-loop round {r + 1}/{args.rounds} {name:<7}: "
                            f"{p.rps:7.0f} req/s  p99 {pct(p.lat_ms, 99):6.2f} ms  "
                            f"errors {sum(p.errors.values())}  "
                            f"other load {p.other_cpu_s / p.wall_s:.2f} cores",
                            flush=True,
                        )
                        await asyncio.sleep(0.5)
                n_open = round(args.rate * args.duration)
                for r in range(args.open_rounds):
                    order = TARGETS if r % 2 == 0 else TARGETS[::-1]
                    for name in order:
                        p = await open_loop(
                            session, servers[name], redis_proc, signups.make(n_open), args.rate
                        )
                        phases[name]["open"].append(p)
                        print(
                            f"open-loop round {r + 1}/{args.open_rounds} {name:<7}: "
                            f"{p.rps:7.0f} req/s  p99 {pct(p.lat_ms, 99):6.2f} ms  "
                            f"errors {sum(p.errors.values())}  "
                            f"other load {p.other_cpu_s / p.wall_s:.2f} cores",
                            flush=True,
                        )
                        await asyncio.sleep(0.5)
            results = {t: {m: summary(ph) for m, ph in phases[t].items()} for t in TARGETS}
            check = await redis_check(redis.url, servers)
        finally:
            server_stats = {name: await stop_server(s) for name, s in servers.items()}
            await redis.stop()
        print_table(results, args.rate)
        v = verdicts(results, args.rate)
        print_verdicts(v, args.rate)
        print(f"\nredis work check: {json.dumps(check)}")
        if not check["same_work"]:
            print("WARNING: the targets did not create as many verifications; compare the above")
        for name, st in server_stats.items():
            gcs = ", ".join(
                f"{gen} {n['count']}x max {n['max_ms']:.1f} ms"
                for gen, n in st.get("gc", {}).items()
            )
            print(f"{name} server GC pauses over the whole run: {gcs or 'none reported'}")
        for s in servers.values():
            text = s.log.read_text(errors="replace").strip()
            if text:
                lines = text.splitlines()
                print(f"\n{s.name} server wrote {len(lines)} log line(s); first 5:")
                print("\n".join(lines[:5]))
        if profile is not None and profile.exists():
            print_profile(profile)

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS / f"intake-{stamp}.json"
        document = {
            "benchmark": "intake",
            "when": stamp,
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": _cpu_model(),
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "pinning": pinning,
                "other_load_before_start_cores": round(idle_load, 2),
                "note": "servers, redis-server and the load generator share these CPUs",
            },
            "config": vars(args),
            "targets": {"ratio_min": RATIO_TARGET, "p99_ms_max": P99_TARGET_MS, "rate": args.rate},
            "results": results,
            "verdicts": v,
            "redis_check": check,
            "server_stats": server_stats,
            "phases": [
                {k: val for k, val in asdict(p).items() if k != "lat_ms"}
                for t in TARGETS
                for m in ("closed", "open")
                for p in phases[t][m]
            ],
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults written to {out.relative_to(ROOT)}")
        return 0 if v["ratio_pass"] and v["p99_pass"] else 1


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="per closed-loop round")
    parser.add_argument("--rounds", type=int, default=6, help="closed-loop rounds per target")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop in-flight")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per open round")
    parser.add_argument("--open-rounds", type=int, default=3, help="open-loop rounds per target")
    parser.add_argument("--warmup", type=int, default=500, help="requests per target")
    parser.add_argument("--profile", action="store_true", help="cProfile the tidings server")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the servers to one CPU and the load generator + Redis to the others",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
