"""Intake on a 3-master Redis Cluster: key and command share per master, req/s vs one Redis.

    python bench/cluster_share.py [--requests N] [--concurrency C] [--durable on off]

Starts a real 3-master cluster (one replica each, tests/topologies.py) and a private
single redis-server, runs the real app (``bench.intake_server``, target ``tidings``, as
``bench/intake.py`` does) against each, posts the same closed-loop load of fresh signed
signups, and reads every master's ``DBSIZE`` and ``INFO stats``/``INFO commandstats``
before and after. Prints each master's share of the new keys, of all commands and of the
scripts (``EVALSHA``) run, and req/s on the cluster against the single Redis; writes
bench/results/cluster-share-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.intake import Signups, _post, busy_cores, pct, start_server, stop_server  # noqa: E402
from tests.topologies import Cluster, start_cluster  # noqa: E402
from tidings.devsite import new_api_key, new_webhook_secret  # noqa: E402
from tidings.embedded_redis import EmbeddedRedis  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SITE_ID = "demo"
SHARE_TARGET, SHARE_TOLERANCE = 1 / 3, 0.10


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def master_counters(cluster: Cluster) -> dict[int, dict[str, int]]:
    """Per master: keys, commands processed, and scripts run (blocking)."""
    out = {}
    for master in cluster.masters():
        client = master.client()
        stats = client.info("commandstats")
        out[master.port] = {
            "keys": int(client.dbsize()),
            "commands": int(client.info("stats")["total_commands_processed"]),
            "evalsha": int(stats.get("cmdstat_evalsha", {}).get("calls", 0)),
        }
    return out


def shares(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[str, Any]:
    """Each master's share of the growth of every counter, and whether keys and commands
    are each within 33 % ± 10 %."""
    out: dict[str, Any] = {"per_master": {}}
    totals = {k: sum(after[p][k] - before[p][k] for p in after) for k in ("keys", "commands")}
    totals["evalsha"] = sum(after[p]["evalsha"] - before[p]["evalsha"] for p in after)
    for port in after:
        delta = {k: after[port][k] - before[port][k] for k in totals}
        out["per_master"][port] = {
            **delta,
            **{f"{k}_share": delta[k] / totals[k] if totals[k] else 0.0 for k in totals},
        }
    out["totals"] = totals
    out["within_target"] = all(
        abs(m[f"{k}_share"] - SHARE_TARGET) <= SHARE_TOLERANCE
        for m in out["per_master"].values()
        for k in ("keys", "commands")
    )
    return out


async def load(url: str, signups: Signups, n: int, concurrency: int) -> dict[str, Any]:
    """A closed loop: ``concurrency`` posters, each sending its next signup once answered."""
    requests = signups.make(n)
    pending = iter(requests)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    ok = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def poster() -> None:
            nonlocal ok
            for request in pending:
                started = time.perf_counter()
                # Awaited first: `ok += await …` would read ok before the await.
                good = await _post(session, url, request, errors)
                ok += good
                latencies.append((time.perf_counter() - started) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "sent": n,
        "ok": ok,
        "wall_s": round(wall, 3),
        "rps": round(ok / wall, 1),
        "p50_ms": round(pct(latencies, 50), 2),
        "p99_ms": round(pct(latencies, 99), 2),
        "errors": dict(errors),
    }


async def phase(
    label: str,
    redis_url: str,
    folder: Path,
    base: dict[str, Any],
    args: argparse.Namespace,
    cluster: Cluster | None,
    durable: bool,
) -> dict[str, Any]:
    """One server on one Redis: warm up, count, load, count."""
    sub = folder / label
    sub.mkdir()
    # start_server passes no TIDINGS_* variable on: durability goes in the server's settings.
    cfg = {**base, "redis_url": redis_url, "durable_replicas": None if durable else 0}
    server = await start_server("tidings", sub, cfg, None)
    try:
        signups = Signups(base["webhook_secret"])
        warm = await load(server.url, signups, args.warmup, args.concurrency)
        if warm["ok"] != warm["sent"]:
            # Reported, not fatal: the measured load after it counts its own errors.
            print(f"WARNING {label}: warm-up answered {warm['errors']}", flush=True)
        before = await asyncio.to_thread(master_counters, cluster) if cluster else None
        cpu_before = cpu_seconds(server.process.pid)
        result = await load(server.url, signups, args.requests, args.concurrency)
        result["warmup_errors"] = warm["errors"]
        result["server_cpu_ms_per_req"] = round(
            1000 * (cpu_seconds(server.process.pid) - cpu_before) / max(result["ok"], 1), 3
        )
        if cluster is not None and before is not None:
            after = await asyncio.to_thread(master_counters, cluster)
            result["share"] = shares(before, after)
    finally:
        await stop_server(server)
    result["label"] = label
    print_phase(result)
    return result


def print_phase(r: dict[str, Any]) -> None:
    print(
        f"{r['label']:<22} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 "
        f"{r['p99_ms']:6.2f} ms  errors {sum(r['errors'].values())}  server CPU "
        f"{r['server_cpu_ms_per_req']:.2f} ms/req",
        flush=True,
    )
    share = r.get("share")
    if share:
        for port, m in share["per_master"].items():
            print(
                f"    master :{port}  keys {m['keys']:>7} ({m['keys_share']:6.1%})  commands "
                f"{m['commands']:>7} ({m['commands_share']:6.1%})  scripts {m['evalsha']:>6} "
                f"({m['evalsha_share']:6.1%})"
            )
        verdict = "PASS" if share["within_target"] else "FAIL"
        print(f"    keys and commands each 33 % ± 10 % per master: {verdict}", flush=True)


async def run(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    idle = await busy_cores()
    print(f"machine: {os.cpu_count()} CPUs; other processes busy on {idle:.2f} cores", flush=True)
    base = {
        "site_id": SITE_ID,
        "webhook_secret": new_webhook_secret(),
        "api_key": new_api_key(),
        "secret_key": secrets.token_urlsafe(48),
    }
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tidings-cluster-share-") as tmp:
        folder = Path(tmp)
        single = EmbeddedRedis(folder / "redis", appendonly=False)
        await single.start()
        cluster = await asyncio.to_thread(start_cluster)
        try:
            # Alternating, so a disturbance from outside hits both kinds alike.
            for round_no in range(args.rounds):
                results.append(
                    await phase(
                        f"single r{round_no + 1}", single.url, folder, base, args, None, False
                    )
                )
                for durable in args.durable:
                    label = f"cluster {'durable' if durable == 'on' else 'plain'} r{round_no + 1}"
                    results.append(
                        await phase(
                            label, cluster.url, folder, base, args, cluster, durable == "on"
                        )
                    )
        finally:
            await asyncio.to_thread(cluster.stop)
            await single.stop()
    summary = summarise(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"cluster-share-{stamp}.json"
    document = {
        "benchmark": "cluster-share",
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "other_load_before_start_cores": round(idle, 2),
        },
        "config": vars(args),
        "summary": summary,
        "phases": results,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(ROOT)}")
    return 0 if summary["shares_within_target"] else 1


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    best: dict[str, float] = {}
    for r in results:
        kind = r["label"].rsplit(" ", 1)[0]
        best[kind] = max(best.get(kind, 0.0), r["rps"])
    print("\nbest req/s per target: " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()))
    for kind, rps in best.items():
        if kind != "single":
            print(f"  {kind} / single: {rps / best['single']:.2f}")
    within = all(r["share"]["within_target"] for r in results if "share" in r)
    print(f"key and command share 33 % ± 10 % on every master in every cluster phase: {within}")
    return {"best_rps": best, "shares_within_target": within}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="signups per phase")
    parser.add_argument("--warmup", type=int, default=300, help="signups before counting")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every target")
    parser.add_argument("--durable", nargs="+", choices=("on", "off"), default=["on", "off"])
    args = parser.parse_args()
    if args.requests > 50_000:
        parser.error("at most 50,000 requests per phase")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
