"""Broadcast throughput and pacing: 20,000 subscribers against the Telegram emulator.

For each configured rate, a real ``tidings worker`` process (the workers' ``Bot`` pointed
at ``tests/emulators/telegram.py`` in this process) sends one broadcast; the emulator
timestamps every accepted message. Reported per rate: achieved messages/s, the rate over
every 10 s window (start at each send) against the configured rate, and for the unlimited
setting the time to reach every subscriber. Paced rates run for ``--paced-seconds`` and
are then canceled (20,000 messages at 25/s would take 13 minutes); the unlimited run
sends to everyone. Exit status 0 only if every paced window is within ±3 % and the
unlimited run reached everyone exactly once.

    /tmp/venv/bin/python bench/broadcast.py                    # 25/s, 100/s, unlimited
    /tmp/venv/bin/python bench/broadcast.py --rates 25 --paced-seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from bot.broadcasts import BroadcastStore  # noqa: E402
from tests.emulators.telegram import TelegramEmulator  # noqa: E402
from tidings.embedded_redis import EmbeddedRedis  # noqa: E402
from verification.keys import Keys  # noqa: E402

BIN = Path(sys.executable).parent
WINDOW = 10.0
TOLERANCE = 0.03


def window_rates(times: list[float], window: float = WINDOW) -> list[float]:
    """Messages per second in every ``window`` that starts at a send and fits in the run."""
    rates = []
    end = 0
    last = times[-1] if times else 0.0
    for start_index, start in enumerate(times):
        if start + window > last:
            break
        while end < len(times) and times[end] < start + window:
            end += 1
        rates.append((end - start_index) / window)
    return rates


async def start_worker(env: dict[str, str], folder: Path) -> asyncio.subprocess.Process:
    """``tidings worker --workers 1`` configured only by ``env``."""
    return await asyncio.create_subprocess_exec(
        str(BIN / "tidings"),
        "worker",
        "--workers",
        "1",
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


async def stop_worker(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run_rate(
    rate: float,
    args: argparse.Namespace,
    redis_url: str,
    emulator: TelegramEmulator,
    folder: Path,
) -> dict[str, Any]:
    prefix = f"bench{secrets.token_hex(3)}"
    keys = Keys(prefix)
    redis = Redis.from_url(redis_url, decode_responses=True)
    chats = [1_000_000 + i for i in range(args.subscribers)]
    for start in range(0, len(chats), 5000):
        await redis.zadd(keys.subscribers, {str(c): 1 for c in chats[start : start + 5000]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        {
            "TIDINGS_REDIS_URL": redis_url,
            "TIDINGS_REDIS_PREFIX": prefix,
            "TIDINGS_SECRET_KEY": secrets.token_urlsafe(48),
            "TIDINGS_TELEGRAM__TOKEN": emulator.token,
            "TIDINGS_TELEGRAM__API_BASE": emulator.url,
            "TIDINGS_TELEGRAM__WEBHOOK_SECRET": "bench-secret",
            "TIDINGS_TELEGRAM__BROADCAST_RATE": str(rate),
            "TIDINGS_LOG__LEVEL": "WARNING",
        }
    )
    emulator.reset()
    worker = await start_worker(env, folder)
    store = BroadcastStore(redis, keys)
    try:
        # The worker is up once its heartbeat key exists.
        async def up() -> bool:
            return bool(await redis.keys(f"{prefix}:consumer:*"))

        await wait_until(up, 60, "the worker's heartbeat")
        bid = await store.draft(created_by=0, text="Hello from the broadcast benchmark")
        state, total = await store.start(bid)
        assert state == "queued", state
        paced = rate > 0
        limit = args.paced_seconds if paced else args.deadline

        async def finished() -> bool:
            b = await store.get(bid)
            if b is None or b.state in ("done", "canceled"):
                return True
            sent = emulator.sent
            return bool(paced and sent and sent[-1].at - sent[0].at >= limit)

        await wait_until(finished, limit + 120, f"the broadcast at {rate}/s")
        if paced:
            await store.cancel(bid)

            async def settled() -> bool:
                b = await store.get(bid)
                return b is not None and b.finished_at is not None

            await wait_until(settled, 60, "the canceled broadcast to settle")
        b = await store.get(bid)
        assert b is not None
    finally:
        await stop_worker(worker)
        await redis.aclose()
    times = sorted(m.at for m in emulator.sent)
    per_chat = Counter(m.chat_id for m in emulator.sent)
    duplicates = sum(n - 1 for n in per_chat.values() if n > 1)
    elapsed = times[-1] - times[0] if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / elapsed if elapsed else 0.0
    windows = window_rates(times)
    result: dict[str, Any] = {
        "configured_rate": rate or "unlimited",
        "sent": len(times),
        "subscribers": total,
        "duplicates": duplicates,
        "report": b.counts,
        "state": b.state,
        "seconds_first_to_last": round(elapsed, 3),
        "achieved_rate": round(achieved, 2),
    }
    if paced and windows:
        low, high = min(windows), max(windows)
        result.update(
            windows=len(windows),
            window_rate_min=round(low, 2),
            window_rate_max=round(high, 2),
            worst_deviation=round(max(abs(low - rate), abs(high - rate)) / rate, 4),
        )
        result["pass"] = result["worst_deviation"] <= TOLERANCE and duplicates == 0
    else:
        result["pass"] = len(per_chat) == total and duplicates == 0
    return result


async def main(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        folder = Path(tmp)
        server = EmbeddedRedis(folder / "redis", appendonly=False)
        await server.start()
        try:
            async with TelegramEmulator(require_https_webhook=False) as emulator:
                for rate in args.rates:
                    print(
                        f"broadcast at {rate or 'unlimited'}/s to {args.subscribers}…", flush=True
                    )
                    result = await run_rate(rate, args, server.url, emulator, folder)
                    print(json.dumps(result), flush=True)
                    results.append(result)
        finally:
            await server.stop()
    print()
    for r in results:
        line = (
            f"{r['configured_rate']!s:>9}/s  sent {r['sent']:>6}  achieved {r['achieved_rate']:>8}/s"
            f"  dups {r['duplicates']}"
        )
        if "worst_deviation" in r:
            line += (
                f"  10 s windows {r['window_rate_min']} to {r['window_rate_max']}/s"
                f" (worst {r['worst_deviation'] * 100:.2f} %, target ≤ 3 %)"
            )
        else:
            line += f"  all {r['subscribers']} in {r['seconds_first_to_last']} s"
        print(line + ("  PASS" if r["pass"] else "  FAIL"))
    out = ROOT / "bench" / "results" / f"broadcast-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"results written to {out.relative_to(ROOT)}")
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[25.0, 100.0, 0.0], help="0 = unlimited"
    )
    parser.add_argument("--paced-seconds", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=600.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
