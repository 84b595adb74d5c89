"""The lean path to Redis: concurrent calls share one write, each gets its own replies."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from config.settings import Settings
from verification.connections import open_redis, pipelined


@pytest.fixture
async def client(settings: Settings) -> Redis:
    redis = open_redis(settings)
    yield redis
    await redis.aclose()


async def test_concurrent_calls_each_get_their_own_replies(client: Redis) -> None:
    key = "tidings-test:lean:counter"
    await client.delete(key)

    async def call(n: int) -> list[object]:
        return await pipelined(client, [("ECHO", f"call-{n}"), ("INCR", key)])

    results = await asyncio.gather(*(call(n) for n in range(200)))
    assert [echo for echo, _ in results] == [f"call-{n}" for n in range(200)]
    # Every INCR ran once, in some order.
    assert sorted(int(count) for _, count in results) == list(range(1, 201))  # type: ignore[call-overload]
    await client.delete(key)


async def test_an_error_reply_goes_to_its_caller_only(client: Redis) -> None:
    async def good() -> list[object]:
        return await pipelined(client, [("ECHO", "fine")])

    async def bad() -> list[object]:
        return await pipelined(client, [("ECHO", "first"), ("NOSUCHCOMMAND",)])

    results = await asyncio.gather(good(), bad(), good(), return_exceptions=True)
    assert results[0] == ["fine"]
    assert isinstance(results[1], ResponseError)
    assert results[2] == ["fine"]
    assert await pipelined(client, [("ECHO", "after")]) == ["after"]  # still in step


async def test_a_caller_cancelled_while_it_waits_leaves_the_others_their_replies(
    client: Redis,
) -> None:
    async def call(n: int) -> list[object]:
        return await pipelined(client, [("ECHO", f"call-{n}")])

    tasks = [asyncio.ensure_future(call(n)) for n in range(20)]
    await asyncio.sleep(0)  # every call has joined this turn's exchange
    tasks[0].cancel()  # the leader
    tasks[7].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert isinstance(done[7], asyncio.CancelledError)
    assert [done[n] for n in range(20) if n not in (0, 7)] == [
        [f"call-{n}"] for n in range(20) if n not in (0, 7)
    ]
    assert await pipelined(client, [("ECHO", "after")]) == ["after"]
