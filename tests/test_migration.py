"""Upgrading: data written by the previous release (layout 1) keeps working.

The data is written by the previous release's own code, taken from git history and run in
a child process against the test's Redis; then this release adopts it (one shard) or
migrates it (several shards) and the pending work goes on.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from tests.conftest import (
    TESTS_DIR,
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_event,
    signup_event,
)
from tests.processes import process_env
from verification.connections import open_redis
from verification.keys import LAYOUT_VERSION, Layout
from verification.migration import LayoutMismatch, ensure_layout, migrate
from verification.reports import read_snapshot
from webhooks.app import create_app

#: The last commit with layout 1 (before shards).
PREVIOUS_RELEASE = "ad7039f"
REPO = TESTS_DIR.parent

WRITE_OLD_DATA = """
import asyncio, json, sys
from datetime import UTC, datetime, timedelta

from bot.subscribers import Subscribers
from config.settings import load_settings
from tasks.broker import build_broker
from tasks.worker import TaskiqDeliveryQueue, register_tasks
from verification.connections import open_redis
from verification.keys import Keys
from verification.service import Signup, VerificationService
from config.sites import Channel


async def main() -> None:
    settings = load_settings()
    redis = open_redis(settings.require_redis_url())
    broker = build_broker(settings)
    tasks = register_tasks(broker, settings)
    await broker.startup()
    keys = Keys(settings.redis_prefix)
    service = VerificationService(redis, settings, TaskiqDeliveryQueue(broker, tasks), keys=keys)
    site = settings.sites[0]
    first = await service.create(
        site, "msg_old_1", Signup(user_id="old-1", channel=Channel.EMAIL, email="old1@example.com",
                                  remind_after=1))
    second = await service.create(
        site, "msg_old_2", Signup(user_id="old-2", channel=Channel.EMAIL, email="old2@example.com"))
    await Subscribers(redis, keys).subscribe(4242, 4242)
    print(json.dumps({"ids": [first.resource["id"], second.resource["id"]]}))
    await broker.shutdown()
    await redis.aclose()


asyncio.run(main())
"""


def _previous_release(folder: Path) -> Path:
    """The previous release's source tree, from this repository's history."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _write_old_data(settings: Settings, folder: Path) -> list[str]:
    """Run the previous release against the test's Redis; the ids of what it accepted."""
    source = _previous_release(folder / "previous")
    env = process_env(settings)
    env["PYTHONPATH"] = str(source)
    done = subprocess.run(
        [sys.executable, "-c", WRITE_OLD_DATA],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])["ids"]
    return ids


async def _pending_work_goes_on(
    aiohttp_client: Any,
    settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    ids: list[str],
) -> None:
    """What the old release accepted is delivered, checkable and reminded by this one."""
    client = await aiohttp_client(create_app(settings))
    await start_worker(settings)
    for vid in ids:
        assert (await get_verification(client, vid))["status"] == "pending"
    # Both codes go out (their stream entries were written by the old release), and the
    # remind_after of the first is sent by the scheduler.
    messages = await smtp.wait_for_messages(3, timeout=30)
    to_second = [m for m in messages if str(m["To"]) == "old2@example.com"]
    assert len(to_second) == 1
    check = await client.post(
        f"/v1/verifications/{ids[1]}/check",
        json={"code": code_from(to_second[0])},
        headers=auth(),
    )
    assert (await check.json())["status"] == "approved"
    assert sum(str(m["To"]) == "old1@example.com" for m in messages) == 2
    # The old release's webhook-id record (the whole first answer) still replays, and its
    # user index (a set) still finds the user's verification to cancel.
    replay = await post_event(
        client, signup_event(user_id="old-2", email="old2@example.com"), msg_id="msg_old_2"
    )
    assert replay.status == 202
    assert (await replay.json())["id"] == ids[1]
    cancel = {"type": "signup.canceled", "timestamp": "2026-11-23T10:05:00Z",
              "data": {"user_id": "old-1"}}  # fmt: skip
    canceled = await post_event(client, cancel)
    assert (await canceled.json())["canceled"] == [ids[0]]
    # The bot's subscriber, as /stats and `tidings stats` count it.
    redis = open_redis(settings)
    try:
        assert (await read_snapshot(redis, Layout.for_settings(settings))).subscribers == 1
    finally:
        await redis.aclose()


async def test_one_shard_adopts_the_previous_layout_in_place(
    aiohttp_client: Any,
    settings: Settings,
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    scheduler: None,
    tmp_path: Path,
) -> None:
    ids = await asyncio.to_thread(_write_old_data, settings, tmp_path)
    redis = open_redis(settings)
    layout = Layout.for_settings(settings)
    try:
        await ensure_layout(redis, layout)  # same keys: adopted, nothing moves
        assert await redis.hgetall(layout.version_key) == {
            "version": str(LAYOUT_VERSION),
            "shards": "1",
        }
    finally:
        await redis.aclose()
    await _pending_work_goes_on(aiohttp_client, settings, smtp, start_worker, ids)


async def test_several_shards_refuse_the_previous_layout_until_it_is_migrated(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    smtp: SmtpSink,
    start_worker: Callable[[Settings], Awaitable[None]],
    tmp_path: Path,
) -> None:
    old = make_settings()
    ids = await asyncio.to_thread(_write_old_data, old, tmp_path)
    sharded = make_settings(redis={"shards": 4})
    layout = Layout.for_settings(sharded)
    redis = open_redis(sharded)
    try:
        with pytest.raises(LayoutMismatch, match="tidings migrate"):
            await ensure_layout(redis, layout)
        moved = await migrate(redis, layout)
        assert moved > 5
        await ensure_layout(redis, layout)
        # Nothing is left under the old prefix but the layout record.
        left = [k async for k in redis.scan_iter(match=f"{old.redis_prefix}:*")]
        assert left == [layout.version_key]
    finally:
        await redis.aclose()
    # A scheduler of the sharded layout fires the migrated remind_after.
    from tasks.broker import build_broker
    from tasks.scheduling import schedule_source
    from tasks.worker import register_tasks

    broker = build_broker(sharded)
    register_tasks(broker, sharded)
    await broker.startup()
    source = schedule_source(sharded, broker, dispatch=True)
    await source.startup()
    try:
        await _pending_work_goes_on(aiohttp_client, sharded, smtp, start_worker, ids)
    finally:
        await source.shutdown()
        await broker.shutdown()
    # And a shard count that differs from the stored one is refused, naming the key.
    other = open_redis(sharded)
    try:
        with pytest.raises(LayoutMismatch, match="TIDINGS_REDIS__SHARDS"):
            await ensure_layout(other, Layout(sharded.redis_prefix, 8))
    finally:
        await other.aclose()


async def test_the_previous_layout_version_is_upgraded_in_place_and_a_newer_refused(
    settings: Settings,
) -> None:
    redis = open_redis(settings)
    layout = Layout.for_settings(settings)
    try:
        # Written by the release before: same keys, records this release reads.
        await redis.hset(layout.version_key, mapping={"version": LAYOUT_VERSION - 1, "shards": 1})
        await ensure_layout(redis, layout)
        assert await redis.hgetall(layout.version_key) == {
            "version": str(LAYOUT_VERSION),
            "shards": "1",
        }
        # Data of a release newer than this one: refused, with what to do.
        await redis.hset(layout.version_key, "version", LAYOUT_VERSION + 1)
        with pytest.raises(LayoutMismatch, match="upgrade Tidings"):
            await ensure_layout(redis, layout)
    finally:
        await redis.delete(layout.version_key)
        await redis.aclose()
