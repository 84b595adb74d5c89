"""Failover benchmark: a steady stream of signups through a Redis failover, nothing lost.

    python bench/failover.py [--rate 50] [--duration 60] [--scenarios ...] [--durable on off]

Per scenario and durable setting it starts a fresh real topology (tests/topologies.py),
``tidings web`` and ``tidings worker`` as real processes delivering to the SMTP sink
(``bench.smtp_sink``), posts signed signups at a fixed rate (a site retries a 503 or a
dropped connection with the same webhook-id, re-signed, after a short backoff), injects
the fault, then checks every 202'd verification with ``GET /v1/verifications/{id}`` once
the topology has settled and every 202'd address in the sink. Prints the answers, the
accepted-but-lost count, duplicates, 5xx and the recovery time; writes
bench/results/failover-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.delivery import BIN, Proc, Sink, base_env, busy_cores, spawn, start_web, stop  # noqa: E402
from tests.topologies import (  # noqa: E402
    Cluster,
    SentinelGroup,
    start_cluster,
    start_sentinel_group,
)
from tidings.devsite import new_api_key, new_webhook_secret  # noqa: E402
from tidings.embedded_redis import free_port  # noqa: E402
from tidings.signup_client import signed_headers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SITE_ID = "bench"
#: name -> (topology, sentinel replicas, fault); the fault runs in a thread (blocking helpers).
SCENARIOS = {
    "sentinel": ("sentinel", 2, "SENTINEL FAILOVER (1 master, 2 replicas, 3 sentinels)"),
    "sentinel-1": ("sentinel", 1, "SENTINEL FAILOVER (1 master, 1 replica, 3 sentinels)"),
    "cluster-failover": ("cluster", 0, "CLUSTER FAILOVER of one of 3 masters"),
    "cluster-kill": ("cluster", 0, "SIGKILL of one of 3 masters (replica promoted)"),
}
#: Scenarios whose durable-on run must meet the targets; sentinel-1 is measured for the record
#: (its new master has no replica until the old one rejoins, so durable writes must wait).
JUDGED = ("sentinel", "cluster-failover", "cluster-kill")
RECOVERY_TARGET_S = 10.0
# Pauses between a site's attempts at one webhook (Standard Webhooks senders retry too).
BACKOFF_S = (0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)

Topology = SentinelGroup | Cluster


# --------------------------------------------------------------------------- topology


def start_topology(kind: str, replicas: int) -> Topology:
    if kind == "sentinel":
        return start_sentinel_group(replicas=replicas)
    return start_cluster()


def inject(name: str, topology: Topology, restart_after: float) -> dict[str, Any]:
    """The fault itself (blocking); returns what it did, once the new master is in charge.

    A killed node is started again ``restart_after`` s after the kill, as a supervisor
    (``restart: always``) would: it rejoins as its successor's replica, and until then that
    shard's master has no replica to acknowledge durable writes.
    """
    if isinstance(topology, SentinelGroup):
        old, new = topology.failover()
        return {"old_master": old, "new_master": new}
    master = topology.masters()[0]
    if name == "cluster-kill":
        replica = topology.replica_of(master)
        master.kill()
        killed = time.monotonic()
        # The cluster promotes the replica after cluster-node-timeout (2 s here).
        promoted = _until(lambda: replica.client().info("replication")["role"] == "master")
        time.sleep(max(0.0, killed + restart_after - time.monotonic()))
        master.start()
        restarted = time.monotonic()
        _until(lambda: master.client().info("replication").get("master_link_status") == "up")
        return {
            "killed": master.port,
            "promoted": replica.port,
            "promoted_after_s": round(promoted - killed, 2),
            "restarted_after_s": round(restarted - killed, 2),
            "rejoined_after_s": round(time.monotonic() - killed, 2),
        }
    successor = topology.failover(master)
    return {"old_master": master.port, "new_master": successor.port}


def _until(predicate: Callable[[], bool], timeout: float = 60.0) -> float:
    """Poll a blocking predicate; returns when it held (monotonic), errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g} s")


def settle(topology: Topology) -> None:
    """Wait until the topology is whole again (an old master resynced as a replica)."""
    if isinstance(topology, SentinelGroup):
        topology.wait_settled(90)
    else:
        topology.wait_healthy(90)


# --------------------------------------------------------------------------- load


@dataclass
class Attempt:
    started: float  # seconds since the load started
    ended: float
    status: str  # "202", "503", … or the exception's name


@dataclass
class Signup:
    index: int
    email: str
    attempts: list[Attempt] = field(default_factory=list)
    verification_id: str | None = None

    @property
    def final(self) -> str:
        return self.attempts[-1].status if self.attempts else "not sent"


class Site:
    """A site posting signed signups and retrying like a Standard Webhooks sender."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, secret: str, retries: int
    ) -> None:
        self.session, self.base, self.secret, self.retries = session, base, secret, retries
        self.run = secrets.token_hex(4)

    def event(self, i: int) -> tuple[str, str]:
        email = f"fo.{self.run}.{i}@example.com"
        event = {
            "type": "signup.created",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": {"user_id": f"user-{self.run}-{i}", "email": email, "channel": "email"},
        }
        return email, json.dumps(event)

    async def signup(self, i: int, t0: float) -> Signup:
        email, body = self.event(i)
        signup = Signup(i, email)
        msg_id = f"msg_{self.run}_{i}"
        for attempt in range(self.retries + 1):
            # Re-signed per attempt (fresh timestamp), same webhook-id, same body.
            headers = signed_headers(self.secret, body, msg_id)
            started = time.monotonic()
            status = ""
            try:
                async with self.session.post(
                    f"{self.base}/webhooks/{SITE_ID}", data=body, headers=headers
                ) as response:
                    status = str(response.status)
                    if response.status == 202:
                        signup.verification_id = (await response.json())["id"]
                    else:
                        await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status = type(exc).__name__
            signup.attempts.append(Attempt(started - t0, time.monotonic() - t0, status))
            if status == "202" or status.startswith("4"):
                break
            if attempt < self.retries:
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        return signup


async def watch_readyz(
    session: aiohttp.ClientSession, base: str, t0: float, stop_at: Callable[[], bool]
) -> list[tuple[float, int]]:
    """``/readyz`` every 100 ms: (time, status) at each change."""
    changes: list[tuple[float, int]] = []
    last = None
    while not stop_at():
        try:
            async with session.get(f"{base}/readyz") as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            status = 0
        if status != last:
            changes.append((round(time.monotonic() - t0, 3), status))
            last = status
        await asyncio.sleep(0.1)
    return changes


async def lookup(
    session: aiohttp.ClientSession, base: str, api_key: str, ids: list[str]
) -> dict[str, tuple[int, list[str]]]:
    """``GET /v1/verifications/{id}`` for each id (retrying a 503).

    Returns id -> (HTTP status, the statuses of its deliveries).
    """
    out: dict[str, tuple[int, list[str]]] = {}
    pending = iter(ids)
    headers = {"Authorization": f"Bearer {api_key}"}

    async def one() -> None:
        for vid in pending:
            status, deliveries = 0, []
            for _ in range(20):
                try:
                    async with session.get(
                        f"{base}/v1/verifications/{vid}", headers=headers
                    ) as response:
                        status = response.status
                        body = await response.json() if status == 200 else None
                        deliveries = [d["status"] for d in (body or {}).get("deliveries", [])]
                except (aiohttp.ClientError, OSError, TimeoutError):
                    status = 0
                if status in (200, 404):
                    break
                await asyncio.sleep(0.5)
            out[vid] = (status, deliveries)

    await asyncio.gather(*(one() for _ in range(16)))
    return out


async def wait_for_emails(
    sink: Sink, addresses: set[str], *, stall: float, deadline: float
) -> dict[str, Any]:
    """The sink's dump once every address got an email, or nothing new came for ``stall`` s."""
    end = time.monotonic() + deadline
    last, changed = -1, time.monotonic()
    while True:
        dump = await sink.dump()
        missing = len(addresses - dump["received"].keys())
        now = time.monotonic()
        if dump["messages"] != last:
            last, changed = dump["messages"], now
        if not missing or now - changed > stall or now > end:
            if missing:
                print(f"  stopped waiting: {missing} accepted address(es) without an email")
            return dump
        await asyncio.sleep(0.5)


def recovery(signups: list[Signup], fault_at: float, slow_s: float) -> dict[str, Any]:
    """Seconds from the fault until every attempt is answered 202 within ``slow_s``.

    An attempt is bad when it was not a 202 or took longer than ``slow_s``; recovery ends
    with the last bad attempt that ended after the fault (0 when there was none).
    """
    bad = [
        a
        for s in signups
        for a in s.attempts
        if a.ended >= fault_at and (a.status != "202" or a.ended - a.started > slow_s)
    ]
    if not bad:
        return {"recovery_s": 0.0, "first_bad_s": None, "bad_attempts": 0}
    return {
        "recovery_s": round(max(a.ended for a in bad) - fault_at, 2),
        "first_bad_s": round(min(a.ended for a in bad) - fault_at, 2),
        "bad_attempts": len(bad),
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, round(p / 100 * len(ordered) + 0.4999))) - 1]


# --------------------------------------------------------------------------- one run


def tidings_env(cfg: dict[str, Any], durable: bool, requeue_after: float) -> dict[str, str]:
    env = base_env()
    sites = [
        {
            "id": SITE_ID,
            "name": "Bench Shop",
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
            "TIDINGS_EMAIL__FROM_ADDRESS": "codes@tidings.bench",
            "TIDINGS_LOG__LEVEL": "WARNING",
            "TIDINGS_LOG__FORMAT": "json",
            "TIDINGS_CODES__SENDS_PER_DESTINATION": "100",
            "TIDINGS_CODES__SITE_SENDS_PER_HOUR": "1000000000",
        }
    )
    env["TIDINGS_QUEUE__REQUEUE_AFTER_SECONDS"] = str(requeue_after)
    if not durable:
        env["TIDINGS_REDIS__DURABLE_REPLICAS"] = "0"
    return env


async def run_one(
    name: str, durable: bool, args: argparse.Namespace, sink: Sink, root: Path
) -> dict[str, Any]:
    kind, replicas, what = SCENARIOS[name]
    label = f"{name}-{'durable' if durable else 'plain'}"
    folder = root / label
    folder.mkdir()
    print(f"\n== {label}: {what}, durable acceptance {'on' if durable else 'off'}", flush=True)
    topology = await asyncio.to_thread(start_topology, kind, replicas)
    procs: list[Proc] = []
    try:
        cfg: dict[str, Any] = {
            "redis_url": topology.url,
            "prefix": f"fo{secrets.token_hex(3)}",
            "secret_key": secrets.token_urlsafe(48),
            "webhook_secret": new_webhook_secret(),
            "api_key": new_api_key(),
            "web_port": free_port(),
            "smtp_port": sink.smtp_port,
        }
        env = tidings_env(cfg, durable, args.requeue_after)
        base = f"http://127.0.0.1:{cfg['web_port']}"
        procs.append(await start_web(folder, env, cfg["web_port"]))
        worker_argv = [str(BIN / "tidings"), "worker", "--workers", str(args.workers)]
        procs.append(await spawn("worker", worker_argv, folder, env))
        timeout = aiohttp.ClientTimeout(total=args.request_timeout)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            site = Site(session, base, cfg["webhook_secret"], args.retries)
            # Warm-up: one signup all the way to the sink, so the worker is surely reading.
            await sink.reset()
            warm = await site.signup(-1, time.monotonic())
            got = await sink.wait_for(1, stall=60, deadline=60)
            if warm.final != "202" or got["recipients"] < 1:
                raise RuntimeError(
                    f"{label}: warm-up failed ({warm.final}, {got['recipients']} email)\n"
                    + "\n".join(p.log_tail() for p in procs)
                )
            await sink.reset()
            before = await busy_cores(0.5)
            total = round(args.rate * args.duration)
            fault_at = args.fault_at if args.fault_at is not None else args.duration / 3
            t0 = time.monotonic()
            done = False
            readyz = asyncio.create_task(watch_readyz(session, base, t0, lambda: done))

            async def fault() -> dict[str, Any]:
                await asyncio.sleep(max(0.0, t0 + fault_at - time.monotonic()))
                started = time.monotonic() - t0
                print(f"  fault at {started:.1f} s", flush=True)
                facts = await asyncio.to_thread(inject, name, topology, args.restart_after)
                facts["injected_s"] = round(started, 3)
                facts["over_s"] = round(time.monotonic() - t0, 3)
                print(f"  fault over at {facts['over_s']:.1f} s: {facts}", flush=True)
                return facts

            fault_task = asyncio.create_task(fault())
            tasks = []
            for i in range(total):
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(site.signup(i, t0)))
            signups = list(await asyncio.gather(*tasks))
            load_s = time.monotonic() - t0
            facts = await fault_task
            done = True
            ready_changes = await readyz
            print(f"  load done ({total} signups over {load_s:.1f} s); settling", flush=True)
            await asyncio.to_thread(settle, topology)
            accepted = {s.email: s.verification_id for s in signups if s.verification_id}
            # Past a requeue: a delivery whose task gave up in the outage is sent again.
            dump = await wait_for_emails(
                sink, set(accepted), stall=args.requeue_after + 15, deadline=args.requeue_after + 60
            )
            found = await lookup(session, base, cfg["api_key"], list(accepted.values()))
        cpu_busy = max(0.0, before)
    finally:
        for proc in reversed(procs):
            await stop(proc)
            with contextlib.suppress(OSError):
                shutil.copy(proc.log, args.logs / f"{label}-{proc.name}.log")
        await asyncio.to_thread(topology.stop)

    emailed: dict[str, list[float]] = dump["received"]
    statuses = Counter(a.status for s in signups for a in s.attempts)
    finals = Counter(s.final for s in signups)
    not_found = sorted(vid for vid, (status, _) in found.items() if status == 404)
    unknown = sorted(vid for vid, (status, _) in found.items() if status not in (200, 404))
    no_email = sorted(email for email in accepted if email not in emailed)
    # What the API says about the deliveries of those never emailed (queued: still owed).
    unsent = Counter("/".join(found[accepted[email]][1]) or "none" for email in no_email)
    lost = sorted(
        {vid for vid in not_found} | {vid for email, vid in accepted.items() if email in no_email}
    )
    fault_s = facts["injected_s"]
    latencies = [a.ended - a.started for s in signups for a in s.attempts]
    result = {
        "scenario": name,
        "what": what,
        "durable": durable,
        "label": label,
        "signups": len(signups),
        "rate": args.rate,
        "load_s": round(load_s, 2),
        "fault": facts,
        "answers": dict(sorted(statuses.items())),
        "final_answers": dict(sorted(finals.items())),
        "accepted": len(accepted),
        "accepted_lost": len(lost),
        "accepted_not_found": len(not_found),
        "accepted_not_emailed": len(no_email),
        "not_emailed_delivery_statuses": dict(unsent),
        "lookup_unknown": len(unknown),
        "emailed_without_202": sum(
            1 for s in signups if not s.verification_id and s.email in emailed
        ),
        "duplicates": sum(1 for times in emailed.values() if len(times) > 1),
        "emails": dump["messages"],
        "server_errors_not_503": sum(
            n for status, n in statuses.items() if status.startswith("5") and status != "503"
        ),
        "http_503": statuses.get("503", 0),
        "connection_errors": sum(n for status, n in statuses.items() if not status.isdigit()),
        "retried_signups": sum(1 for s in signups if len(s.attempts) > 1),
        **recovery(signups, fault_s, args.slow),
        "latency_ms": {
            "p50": round(1000 * pct(latencies, 50), 1),
            "p99": round(1000 * pct(latencies, 99), 1),
            "max": round(1000 * max(latencies), 1),
        },
        "readyz_changes": ready_changes,
        "other_load_cores_before": round(cpu_busy, 2),
        "lost_ids_sample": lost[:10],
        # When the lost ones were answered 202, from the fault (s): inside the failover?
        "lost_accepted_at_s": sorted(
            round(s.attempts[-1].ended - fault_s, 2) for s in signups if s.verification_id in lost
        ),
        "log_lines": {p.name: _count_lines(p.log) for p in procs},
    }
    result["pass"] = (
        result["accepted_lost"] == 0
        and result["server_errors_not_503"] == 0
        and result["recovery_s"] <= RECOVERY_TARGET_S
    )
    print_line(result)
    return result


def _count_lines(path: Path) -> int:
    with contextlib.suppress(OSError):
        return len(path.read_text(errors="replace").splitlines())
    return 0


def print_line(r: dict[str, Any]) -> None:
    answers = ", ".join(f"{k}: {v}" for k, v in r["answers"].items())
    finals = ", ".join(f"{k}: {v}" for k, v in r["final_answers"].items())
    print(
        f"  answers (every attempt) {answers}; final {finals}\n"
        f"  accepted {r['accepted']}  accepted-but-lost {r['accepted_lost']} "
        f"(not found {r['accepted_not_found']}, never emailed {r['accepted_not_emailed']} "
        f"{r['not_emailed_delivery_statuses'] or ''})  "
        f"duplicates {r['duplicates']}  5xx other than 503: {r['server_errors_not_503']}  "
        f"503s {r['http_503']}  connection errors {r['connection_errors']}\n"
        f"  recovery {r['recovery_s']:.2f} s after the fault (first bad answer "
        f"{r['first_bad_s']} s, {r['bad_attempts']} bad attempts); latency p50 "
        f"{r['latency_ms']['p50']} ms p99 {r['latency_ms']['p99']} ms max "
        f"{r['latency_ms']['max']} ms; /readyz {r['readyz_changes']}",
        flush=True,
    )


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<18} {'durable':<7} {'sent':>5} {'202':>5} {'lost':>5} {'no mail':>7} "
        f"{'dups':>4} {'5xx!503':>7} {'503s':>5} {'final 503':>9} {'recovery s':>10} "
        f"{'p99 ms':>7} {'verdict':>7}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        judged = r["durable"] and r["scenario"] in JUDGED
        verdict = ("PASS" if r["pass"] else "FAIL") if judged else "-"
        print(
            f"{r['scenario']:<18} {'on' if r['durable'] else 'off':<7} {r['signups']:>5} "
            f"{r['accepted']:>5} {r['accepted_lost']:>5} {r['accepted_not_emailed']:>7} "
            f"{r['duplicates']:>4} {r['server_errors_not_503']:>7} {r['http_503']:>5} "
            f"{r['final_answers'].get('503', 0):>9} {r['recovery_s']:>10.2f} "
            f"{r['latency_ms']['p99']:>7.0f} {verdict:>7}"
        )
    print(
        "targets with durable acceptance on (sentinel with 2 replicas, cluster): 0 lost, "
        f"0 5xx other than 503, recovery <= {RECOVERY_TARGET_S:g} s"
    )


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    idle = await busy_cores()
    print(f"machine: {os.cpu_count()} CPUs; other processes busy on {idle:.2f} cores", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tidings-failover-") as tmp:
        root = Path(tmp)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        args.logs = RESULTS / f"failover-{stamp}-logs"
        args.logs.mkdir()
        sink = await Sink.start(root)
        try:
            for name in args.scenarios:
                for durable in args.durable:
                    results.append(await run_one(name, durable == "on", args, sink, root))
        finally:
            await sink.close()
    print_table(results)
    out = RESULTS / f"failover-{stamp}.json"
    document = {
        "benchmark": "failover",
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "other_load_before_start_cores": round(idle, 2),
        },
        "config": {**vars(args), "logs": str(args.logs), "backoff_s": BACKOFF_S[: args.retries]},
        "results": results,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(ROOT)}")
    judged = [r for r in results if r["durable"] and r["scenario"] in JUDGED]
    return 0 if all(r["pass"] for r in judged) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="signups per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--fault-at", type=float, default=None, help="s (default duration/3)")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--durable", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--retries", type=int, default=6, help="a site's retries of a 503")
    parser.add_argument("--workers", type=int, default=1, help="tidings worker --workers")
    parser.add_argument("--slow", type=float, default=1.0, help="s: a slower 202 counts as bad")
    parser.add_argument("--request-timeout", type=float, default=15.0)
    parser.add_argument(
        "--restart-after", type=float, default=5.0, help="s from a SIGKILL to the node's restart"
    )
    parser.add_argument(
        "--requeue-after",
        type=float,
        default=20.0,
        help="TIDINGS_QUEUE__REQUEUE_AFTER_SECONDS (default 120 in production)",
    )
    args = parser.parse_args()
    if args.duration * args.rate > 20_000 or args.retries > len(BACKOFF_S):
        parser.error(f"at most 20,000 signups per run and {len(BACKOFF_S)} retries")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
