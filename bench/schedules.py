"""Schedule store benchmark: how late do one-off reminders fire, with 1 and 2 schedulers?

    /tmp/venv/bin/python bench/schedules.py [--reminders 10000] [--spread 10] [--pending 100000]

Starts a private redis-server and, per round, real ``tidings scheduler`` processes (1, then
2) from the venv's ``bin``, configured only by a clean environment. Each round stores
``--pending`` one-off schedules due a day or more ahead (pipelined straight into the
store's keys, in the shape ``RedisScheduleSource.add_schedule`` writes), then adds
``--reminders`` one-offs with ``add_schedule`` due evenly over ``--spread`` seconds. No
worker runs: a sent schedule is an entry in the taskiq stream, whose id's millisecond part
is when it was sent. Lateness = send time - due time, per reminder (first send).
Duplicates = sends beyond the first; misses = reminders never sent within the deadline.

Targets: p99 lateness <= 1 s, 0 duplicates, 0 misses (and none sent early, none of the
far-future schedules touched). The exit status is 0 only if every round meets them.
Results go to bench/results/schedules-<UTC time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis
from taskiq import ScheduledTask

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from tasks.broker import build_broker  # noqa: E402
from tasks.scheduling import schedule_source  # noqa: E402
from tidings.embedded_redis import EmbeddedRedis  # noqa: E402
from verification.keys import Keys  # noqa: E402
from verification.models import now_ms  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
TASK = "tidings.remind"  # what a Telegram reminder's schedule sends
P99_TARGET_MS = 1_000
#: A send this much before the due time counts as early (due times and stream ids are ms).
EARLY_MS = 5
STARTED = "Startup completed."


def pct(values: list[int], p: float) -> int:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def one_off(schedule_id: str, due_ms: int) -> ScheduledTask:
    return ScheduledTask(
        task_name=TASK,
        labels={},
        args=[schedule_id],
        kwargs={},
        schedule_id=schedule_id,
        time=datetime.fromtimestamp(due_ms / 1000, UTC),
    )


@dataclass
class Scheduler:
    process: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def cpu_seconds(self) -> float:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(self.process.pid).cpu_times()
            return float(t.user + t.system)
        return 0.0


async def start_scheduler(env: dict[str, str], folder: Path, name: str) -> Scheduler:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "tidings"),
            "scheduler",
            cwd=folder,  # no stray .env is read
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return Scheduler(process, log)


async def stop_scheduler(scheduler: Scheduler) -> int | None:
    process = scheduler.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return process.returncode


async def wait_started(schedulers: list[Scheduler], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(STARTED in s.text() for s in schedulers):
        for s in schedulers:
            if s.process.returncode is not None:
                raise RuntimeError(f"scheduler exited with {s.process.returncode}:\n{s.text()}")
        if time.monotonic() > deadline:
            raise TimeoutError("schedulers did not start")
        await asyncio.sleep(0.05)


class Stream:
    """The taskiq stream, read incrementally: (schedule id, send ms) of every entry."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._queue = keys.queue
        self._last = "-"
        self.sent: list[tuple[str, int]] = []

    async def read(self) -> None:
        while batch := await self._redis.xrange(self._queue, self._last, "+", count=5000):
            for entry_id, fields in batch:
                labels = json.loads(fields["data"])["labels"]
                self.sent.append((labels.get("schedule_id", ""), int(entry_id.split("-")[0])))
            self._last = "(" + batch[-1][0]


async def preload(redis: Redis, keys: Keys, count: int, tag: str) -> float:
    """``count`` one-offs due from a day ahead on, written as add_schedule writes them."""
    started = time.perf_counter()
    first = now_ms() + 86_400_000
    for start in range(0, count, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 5000, count)):
                schedule = one_off(f"{tag}far{i:06d}", first + i * 997)
                pipe.hset(keys.schedules, schedule.schedule_id, schedule.model_dump_json())
                pipe.zadd(keys.schedules_due, {schedule.schedule_id: first + i * 997})
            await pipe.execute()
    return time.perf_counter() - started


COUNTED = ("scan", "keys", "evalsha", "eval", "xadd", "zrange", "zrangebyscore", "hmget")


async def command_calls(redis: Redis) -> dict[str, int]:
    """Calls Redis served so far, per command of interest (``INFO commandstats``)."""
    stats = await redis.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in COUNTED}


async def run_round(
    n_schedulers: int, args: argparse.Namespace, redis_url: str, folder: Path
) -> dict[str, Any]:
    prefix = f"bsched{secrets.token_hex(3)}"
    keys = Keys(prefix)
    tag = "r-"
    secret = secrets.token_urlsafe(48)
    settings = load_settings(redis_url=redis_url, redis_prefix=prefix, secret_key=secret)
    redis = Redis.from_url(redis_url, decode_responses=True)
    broker = build_broker(settings)
    source = schedule_source(settings, broker, dispatch=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(
        {
            "TIDINGS_REDIS_URL": redis_url,
            "TIDINGS_REDIS_PREFIX": prefix,
            "TIDINGS_SECRET_KEY": secret,
            "TIDINGS_LOG__FORMAT": "json",
        }
    )
    schedulers: list[Scheduler] = []
    try:
        preload_s = await preload(redis, keys, args.pending, tag)
        for i in range(n_schedulers):
            schedulers.append(await start_scheduler(env, folder, f"scheduler-{n_schedulers}-{i}"))
        await wait_started(schedulers)
        stream = Stream(redis, keys)

        # The reminders: due evenly over --spread seconds from --lead seconds on.
        first_due = now_ms() + int(args.lead * 1000)
        step = args.spread * 1000 / args.reminders
        due = {f"{tag}{i:06d}": first_due + int(i * step) for i in range(args.reminders)}
        add_started = time.perf_counter()
        queue = list(due.items())

        async def adder() -> None:
            while queue:
                schedule_id, due_ms = queue.pop(0)
                await source.add_schedule(one_off(schedule_id, due_ms))

        await asyncio.gather(*(adder() for _ in range(16)))
        add_s = time.perf_counter() - add_started
        if now_ms() >= first_due:
            raise RuntimeError(f"adding took {add_s:.1f} s, past the first due time: raise --lead")

        calls_before = await command_calls(redis)
        cpu_before = [s.cpu_seconds() for s in schedulers]
        killer: asyncio.Task[None] | None = None
        if args.kill_after is not None and n_schedulers >= 2:

            async def kill_one() -> None:
                # SIGKILL the first scheduler mid-burst: whatever it claimed and had not
                # sent yet is late by the claim lease until the other one takes it over.
                await asyncio.sleep(max(0, first_due + args.kill_after * 1000 - now_ms()) / 1000)
                os.killpg(schedulers[0].process.pid, signal.SIGKILL)

            killer = asyncio.create_task(kill_one())
        await asyncio.sleep(max(0, first_due - now_ms()) / 1000)
        wall_started = time.perf_counter()
        last_due = max(due.values())
        deadline = last_due + args.deadline * 1000
        while now_ms() < deadline:
            await stream.read()
            if set(due) <= {sid for sid, _ in stream.sent}:
                break
            await asyncio.sleep(0.1)
        if killer is not None:
            await killer
        # Late duplicates would come within a poll or a tick; watch a little longer.
        await asyncio.sleep(args.settle)
        await stream.read()
        wall = time.perf_counter() - wall_started
        cpu = [round(s.cpu_seconds() - b, 2) for s, b in zip(schedulers, cpu_before, strict=True)]
        calls_after = await command_calls(redis)
        calls = {c: calls_after[c] - calls_before[c] for c in COUNTED}
        store = {
            "due": await redis.zcard(keys.schedules_due),
            "claimed": await redis.zcard(keys.schedules_claimed),
            "stored": await redis.hlen(keys.schedules),
        }
    finally:
        codes = [await stop_scheduler(s) for s in schedulers]
        await source.shutdown()
        await broker.shutdown()
        await redis.aclose()

    first_sent: dict[str, int] = {}
    per_id: Counter[str] = Counter()
    far_sent = 0
    for schedule_id, at_ms in stream.sent:
        if schedule_id in due:
            per_id[schedule_id] += 1
            first_sent.setdefault(schedule_id, at_ms)
        elif schedule_id.startswith(f"{tag}far"):
            far_sent += 1
    late = [first_sent[i] - due[i] for i in first_sent]
    duplicates = sum(n - 1 for n in per_id.values())
    missed = len(due) - len(first_sent)
    early = sum(1 for ms in late if ms < -EARLY_MS)
    warnings = [
        line
        for s in schedulers
        for line in s.text().splitlines()
        if '"level": "warning"' in line or '"level": "error"' in line
    ]
    result: dict[str, Any] = {
        "schedulers": n_schedulers,
        "reminders": len(due),
        "pending_far_future": args.pending,
        "sent": len(first_sent),
        "duplicates": duplicates,
        "missed": missed,
        "early": early,
        "far_future_sent": far_sent,
        "lateness_ms": {
            "min": min(late),
            "p50": pct(late, 50),
            "p90": pct(late, 90),
            "p99": pct(late, 99),
            "p99.9": pct(late, 99.9),
            "max": max(late),
        }
        if late
        else None,
        "setup_seconds": {"preload": round(preload_s, 2), "add_reminders": round(add_s, 2)},
        "scheduler_cpu_seconds": cpu,
        "observed_seconds": round(wall, 2),
        "scan_or_keys_calls": calls["scan"] + calls["keys"],
        # Every client's calls while the reminders fell due (this benchmark's own polling of
        # the stream is XRANGE, not counted): scripts = claims + "done"s.
        "redis_calls_per_reminder": {
            c: round(n / len(due), 2) for c, n in calls.items() if c not in ("scan", "keys")
        },
        "store_after": store,
        "scheduler_exit_codes": codes,
        "scheduler_warnings": warnings[:20],
    }
    result["pass"] = bool(
        late
        and result["lateness_ms"]["p99"] <= P99_TARGET_MS
        and duplicates == 0
        and missed == 0
        and early == 0
        and far_sent == 0
        and store == {"due": args.pending, "claimed": 0, "stored": args.pending}
    )
    return result


async def main(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        folder = Path(tmp)
        server = EmbeddedRedis(folder / "redis", appendonly=False)
        await server.start()
        try:
            for n in args.schedulers:
                print(
                    f"{n} scheduler(s): {args.reminders} reminders over {args.spread:g} s, "
                    f"{args.pending} pending far ahead…",
                    flush=True,
                )
                result = await run_round(n, args, server.url, folder)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            await server.stop()
    print()
    for r in results:
        lat = r["lateness_ms"] or {}
        print(
            f"{r['schedulers']} scheduler(s)  sent {r['sent']}/{r['reminders']}  "
            f"dups {r['duplicates']}  missed {r['missed']}  early {r['early']}  "
            f"lateness p50 {lat.get('p50')} ms  p99 {lat.get('p99')} ms  max {lat.get('max')} ms"
            f"  (target p99 <= {P99_TARGET_MS} ms)  scheduler CPU {r['scheduler_cpu_seconds']} s"
            + ("  PASS" if r["pass"] else "  FAIL")
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"schedules-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    out.write_text(
        json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=1)
    )
    print(f"results written to {out.relative_to(ROOT)}")
    return 0 if results and all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument(
        "--kill-after",
        type=float,
        default=None,
        help="SIGKILL one of two schedulers this many seconds after the first due time",
    )
    parser.add_argument("--spread", type=float, default=10.0, help="seconds the due times span")
    parser.add_argument("--pending", type=int, default=100_000, help="far-future schedules")
    parser.add_argument("--schedulers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lead", type=float, default=5.0, help="seconds to the first due time")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to watch for late sends")
    parser.add_argument(
        "--deadline", type=float, default=60.0, help="seconds after the last due time to wait"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
