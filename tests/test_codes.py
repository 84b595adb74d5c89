"""Code rules as a site and a person see them: attempts, expiry, resend, limits, cancel, privacy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis

from config.settings import Settings
from tasks.worker import build_worker_broker
from tests.conftest import (
    OTHER_API_KEY,
    OTHER_SECRET,
    SmtpSink,
    auth,
    code_from,
    get_verification,
    post_event,
    signup,
    signup_event,
    wait_for,
)
from verification.codes import CodeHasher, InvalidTag, PayloadSealer, random_hex
from verification.deliveries import DeliveryStore
from verification.keys import Keys
from verification.models import now_ms
from verification.timers import EXPIRY
from webhooks.app import create_app

MakeClient = Callable[[Settings], Awaitable[TestClient]]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the test server, to look at (and age) what Tidings stored."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    """The real app over HTTP for custom settings."""

    async def build(settings: Settings) -> TestClient:
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    return build


async def _check(client: TestClient, vid: str, code: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth()
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    return body


def _wrong(code: str) -> str:
    """Another code of the same length."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def _to(sink: SmtpSink, address: str) -> list[str]:
    return [str(m["To"]) for m in sink.messages if str(m["To"]) == address]


async def _age(redis: Redis, settings: Settings, vid: str) -> None:
    """Make the verification's time run out: its expiry (and expiry index) in the past."""
    keys = Keys(settings.redis_prefix)
    past = int(time.time() * 1000) - 1_000
    assert await redis.exists(keys.verification(vid))
    await redis.hset(keys.verification(vid), "expires_at", str(past))
    await redis.zadd(keys.expiring, {vid: past})


# --- attempts ---------------------------------------------------------------------------------


async def test_five_wrong_codes_end_the_verification(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await signup(client))["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    wrong = _wrong(code)

    for left in (4, 3, 2, 1):
        assert await _check(client, vid, wrong) == {
            "valid": False,
            "status": "pending",
            "attempts_left": left,
        }
    assert await _check(client, vid, wrong) == {
        "valid": False,
        "status": "max_attempts_reached",
        "attempts_left": 0,
    }
    # The right code no longer helps.
    after = await _check(client, vid, code)
    assert after["valid"] is False
    assert after["status"] == "max_attempts_reached"
    resource = await get_verification(client, vid)
    assert resource["status"] == "max_attempts_reached"
    assert resource["attempts_left"] == 0


# --- expiry -----------------------------------------------------------------------------------


async def test_expired_code_is_refused(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings, redis: Redis
) -> None:
    vid = (await signup(client))["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    await _age(redis, settings, vid)

    assert (await get_verification(client, vid))["status"] == "expired"
    result = await _check(client, vid, code)
    assert result["valid"] is False
    assert result["status"] == "expired"
    # Nor can it be revived by asking for a new code.
    body = await _problem(await client.post(f"/v1/verifications/{vid}/resend", headers=auth()), 409)
    assert body["verification_status"] == "expired"


async def test_sweep_expires_without_anyone_checking(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.redis_prefix)
    old = (await signup(client, email="old@example.com"))["id"]
    fresh = (await signup(client, email="fresh@example.com", user_id="u-2"))["id"]
    await smtp.wait_for_messages(2)
    await _age(redis, settings, old)

    store = DeliveryStore(redis, keys, settings.require_secret_key())
    assert await store.sweep_expired() == [old]
    stored = await redis.hgetall(keys.verification(old))
    assert stored["status"] == "expired"
    assert "code_hash" not in stored
    assert (await redis.hgetall(keys.verification(fresh)))["status"] == "pending"
    assert await store.sweep_expired() == []  # once only
    metrics = await (await client.get("/metrics")).text()
    assert 'tidings_verifications_total{status="expired"} 1.0' in metrics


async def test_sweep_expires_from_the_minute_lists_once(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings, redis: Redis
) -> None:
    # A new verification's expiry is an entry in the list of its minute; make that minute
    # one in the past, as if ten minutes had gone by.
    keys = Keys(settings.redis_prefix)
    vid = (await signup(client))["id"]
    fresh = (await signup(client, email="fresh@example.com", user_id="u-2"))["id"]
    await smtp.wait_for_messages(2)
    stored = await redis.hgetall(keys.verification(vid))
    minute = EXPIRY.bucket(int(stored["expires_at"]))
    assert await redis.lrange(keys.timer_bucket(EXPIRY.name, minute), 0, -1) == [
        vid.removeprefix("ver_"),
        fresh.removeprefix("ver_"),
    ]
    past = now_ms() - 120_000
    await redis.rename(
        keys.timer_bucket(EXPIRY.name, minute), keys.timer_bucket(EXPIRY.name, EXPIRY.bucket(past))
    )
    await redis.hset(keys.verification(vid), "expires_at", str(past))

    store = DeliveryStore(redis, keys, settings.require_secret_key())
    assert await store.sweep_expired() == [vid]  # the other one has time left: untouched
    assert (await redis.hgetall(keys.verification(vid)))["status"] == "expired"
    assert (await redis.hgetall(keys.verification(fresh)))["status"] == "pending"
    assert await store.sweep_expired() == []  # once only
    assert (await get_verification(client, vid))["status"] == "expired"


async def test_sweep_task_on_the_worker_expires(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings, redis: Redis
) -> None:
    keys = Keys(settings.redis_prefix)
    vid = (await signup(client))["id"]
    await smtp.wait_for_messages(1)
    await _age(redis, settings, vid)

    broker, tasks = build_worker_broker(settings)
    await broker.startup()
    try:
        await tasks.sweep_expired.kiq()
    finally:
        await broker.shutdown()

    async def expired() -> bool:
        return bool(await redis.hget(keys.verification(vid), "status") == "expired")

    await wait_for(expired, what="the worker's sweep")
    assert (await get_verification(client, vid))["status"] == "expired"


# --- resend -----------------------------------------------------------------------------------


async def test_resend_issues_a_new_code_and_the_old_one_stops_working(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
) -> None:
    settings = make_settings(codes={"resend_cooldown_seconds": 0})
    client = await make_client(settings)
    await start_worker(settings)
    vid = (await signup(client))["id"]
    first = code_from((await smtp.wait_for_messages(1))[0])

    response = await client.post(f"/v1/verifications/{vid}/resend", headers=auth())
    assert response.status == 202
    resent = await response.json()
    assert resent["status"] == "pending"
    assert resent["sends"] == 2
    assert len(resent["deliveries"]) == 2

    messages = await smtp.wait_for_messages(2)
    assert messages[1]["To"] == "alice@example.com"
    second = code_from(messages[1])
    if second == first:  # one chance in a million; the old code would then be the new one
        pytest.skip("the new code happened to equal the old one")

    assert await _check(client, vid, first) == {
        "valid": False,
        "status": "pending",
        "attempts_left": 4,
    }
    assert await _check(client, vid, second) == {
        "valid": True,
        "status": "approved",
        "attempts_left": 4,
    }
    resource = await wait_for(
        lambda: _all_sent(client, vid), what="both deliveries recorded as sent"
    )
    assert resource["sends"] == 2

    # A finished verification cannot be resent.
    body = await _problem(await client.post(f"/v1/verifications/{vid}/resend", headers=auth()), 409)
    assert body["verification_status"] == "approved"


async def _all_sent(client: TestClient, vid: str) -> dict[str, Any] | None:
    resource = await get_verification(client, vid)
    done = all(d["status"] == "sent" for d in resource["deliveries"])
    return resource if done else None


async def test_resend_within_cooldown_is_429(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await signup(client))["id"]
    await smtp.wait_for_messages(1)
    response = await client.post(f"/v1/verifications/{vid}/resend", headers=auth())
    await _problem(response, 429)
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 30
    assert (await get_verification(client, vid))["sends"] == 1
    # Nothing more is sent: a later signup's email is the next one to arrive.
    await signup(client, email="bob@example.com", user_id="u-2")
    messages = await smtp.wait_for_messages(2)
    assert [m["To"] for m in messages] == ["alice@example.com", "bob@example.com"]


# --- sending limits ---------------------------------------------------------------------------


async def test_sends_per_destination_limit(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
) -> None:
    settings = make_settings(codes={"resend_cooldown_seconds": 0, "sends_per_destination": 3})
    client = await make_client(settings)
    await start_worker(settings)

    first = await signup(client, user_id="u-1")
    await smtp.wait_for_messages(1)
    resend = await client.post(f"/v1/verifications/{first['id']}/resend", headers=auth())
    assert resend.status == 202
    await signup(client, user_id="u-2")
    await smtp.wait_for_messages(3)

    # Fourth send to the same address, as a signup (any spelling of it) or as a resend.
    for attempt in (
        post_event(client, signup_event(user_id="u-3")),
        post_event(client, signup_event(user_id="u-4", email="ALICE@example.com")),
        client.post(f"/v1/verifications/{first['id']}/resend", headers=auth()),
    ):
        response = await attempt
        await _problem(response, 429)
        assert 1 <= int(response.headers["Retry-After"]) <= 600

    # Another address still works, and its email is the only one that arrives.
    await signup(client, user_id="u-5", email="carol@example.com")
    messages = await smtp.wait_for_messages(4)
    assert len(_to(smtp, "alice@example.com")) == 3
    assert messages[3]["To"] == "carol@example.com"
    assert len(messages) == 4


async def test_a_send_late_in_the_previous_window_bucket_still_counts(
    make_settings: Callable[..., Settings], make_client: MakeClient, redis: Redis
) -> None:
    # Sends are kept in buckets one window long; a send made a minute ago may sit in the
    # bucket before the current one, and must count all the same.
    settings = make_settings(codes={"sends_per_destination": 1})
    client = await make_client(settings)
    window = 600_000
    now = now_ms()
    previous = Keys(settings.redis_prefix).destination_windows(window, now // window - 1)
    field = CodeHasher(settings.require_secret_key()).index("alice@example.com")[:24]
    await redis.hset(previous, field, str(now - 60_000))

    response = await post_event(client, signup_event(user_id="u-1"))
    await _problem(response, 429)
    assert 530 <= int(response.headers["Retry-After"]) <= 540

    await redis.hset(previous, field, str(now - window - 1))  # left the window: no longer counts
    assert (await post_event(client, signup_event(user_id="u-2"))).status == 202


async def test_site_hourly_cap_and_429_is_not_remembered_for_the_webhook_id(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
    redis: Redis,
) -> None:
    # The cap counts per clock hour; don't start a second before the hour turns.
    if 3600 - time.time() % 3600 < 5:
        hour = int(time.time() // 3600)
        await wait_for(lambda: int(time.time() // 3600) > hour, what="the next clock hour")
    settings = make_settings(codes={"site_sends_per_hour": 2})
    client = await make_client(settings)
    await start_worker(settings)
    await signup(client, user_id="u-1", email="a1@example.com")
    await signup(client, user_id="u-2", email="a2@example.com")

    event = signup_event(user_id="u-3", email="a3@example.com")
    limited = await post_event(client, event, msg_id="msg_capped")
    body = await _problem(limited, 429)
    assert "hour" in body["detail"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600

    # The cap is per site: another site still sends.
    other = await post_event(
        client, signup_event(email="o@example.com"), site_id="other", secret=OTHER_SECRET
    )
    assert other.status == 202

    # The limit clears (as when the hour turns); the site retries the same webhook-id.
    async for key in redis.scan_iter(f"{settings.redis_prefix}:rl:*"):
        await redis.delete(key)
    retried = await post_event(client, event, msg_id="msg_capped")
    assert retried.status == 202, await retried.text()
    created = await retried.json()
    assert created["status"] == "pending"
    # And from now on that webhook-id answers with this verification.
    replay = await post_event(client, event, msg_id="msg_capped")
    assert replay.status == 202
    assert (await replay.json())["id"] == created["id"]

    await smtp.wait_for_messages(4)
    assert sorted(str(m["To"]) for m in smtp.messages) == [
        "a1@example.com",
        "a2@example.com",
        "a3@example.com",
        "o@example.com",
    ]
    assert (
        await client.get(f"/v1/verifications/{created['id']}", headers=auth(OTHER_API_KEY))
    ).status == 404


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_ends_the_verification(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await signup(client))["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])

    response = await client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
    assert response.status == 200
    assert (await response.json())["status"] == "canceled"
    assert await _check(client, vid, code) == {
        "valid": False,
        "status": "canceled",
        "attempts_left": 5,
    }
    body = await _problem(await client.post(f"/v1/verifications/{vid}/cancel", headers=auth()), 409)
    assert body["verification_status"] == "canceled"
    assert (await get_verification(client, vid))["status"] == "canceled"


async def test_queued_delivery_of_a_canceled_verification_is_not_sent(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    vid = (await signup(client))["id"]
    response = await client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
    assert response.status == 200
    assert (await response.json())["deliveries"][0]["status"] == "queued"

    await start_worker(settings)
    delivery = await wait_for(
        lambda: _first_delivery_finished(client, vid), what="the queued delivery to be settled"
    )
    assert delivery["status"] == "failed"
    assert "canceled" in delivery["error"]
    assert (await get_verification(client, vid))["status"] == "canceled"

    # The worker is live and sending: a later signup arrives, and it is the only email.
    await signup(client, email="bob@example.com", user_id="u-2")
    messages = await smtp.wait_for_messages(1)
    assert [m["To"] for m in messages] == ["bob@example.com"]


async def _first_delivery_finished(client: TestClient, vid: str) -> dict[str, Any] | None:
    delivery: dict[str, Any] = (await get_verification(client, vid))["deliveries"][0]
    return delivery if delivery["status"] != "queued" else None


# --- what answers reveal ----------------------------------------------------------------------


async def test_unknown_id_is_404_like_another_sites_id(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    theirs = (
        await (
            await post_event(
                client, signup_event(email="o@example.com"), site_id="other", secret=OTHER_SECRET
            )
        ).json()
    )["id"]
    unknown = "ver_" + "0" * 32
    answers: dict[str, list[dict[str, Any]]] = {}
    for vid in (unknown, theirs, "nonsense"):
        answers[vid] = [
            await _problem(await client.get(f"/v1/verifications/{vid}", headers=auth()), 404),
            await _problem(
                await client.post(
                    f"/v1/verifications/{vid}/check", json={"code": "123456"}, headers=auth()
                ),
                404,
            ),
            await _problem(
                await client.post(f"/v1/verifications/{vid}/resend", headers=auth()), 404
            ),
            await _problem(
                await client.post(f"/v1/verifications/{vid}/cancel", headers=auth()), 404
            ),
        ]
    # Not existing and belonging to someone else read the same.
    assert answers[unknown] == answers[theirs] == answers["nonsense"]
    # The other site's verification was not touched by any of it.
    mine = await client.get(f"/v1/verifications/{theirs}", headers=auth(OTHER_API_KEY))
    resource = await mine.json()
    assert resource["status"] == "pending"
    assert resource["attempts_left"] == 5
    assert resource["sends"] == 1


async def test_malformed_code_is_422_and_spends_no_attempt(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await signup(client))["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    for bad in ("abcdef", "12", "12345678901", "", " 123456"):
        response = await client.post(
            f"/v1/verifications/{vid}/check", json={"code": bad}, headers=auth()
        )
        body = await _problem(response, 422)
        assert body["errors"][0]["field"] == "code"
    await _problem(
        await client.post(f"/v1/verifications/{vid}/check", json={}, headers=auth()), 422
    )
    assert (await get_verification(client, vid))["attempts_left"] == 5
    assert await _check(client, vid, code) == {
        "valid": True,
        "status": "approved",
        "attempts_left": 5,
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer tk_not-a-real-key-0000000000000000"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Bearer {OTHER_SECRET}"},  # a webhook secret is not an API key
    ],
)
async def test_missing_or_wrong_bearer_is_401(
    client: TestClient, smtp: SmtpSink, worker: None, headers: dict[str, str]
) -> None:
    vid = (await signup(client))["id"]
    calls = [
        client.get(f"/v1/verifications/{vid}", headers=headers),
        client.post(f"/v1/verifications/{vid}/check", json={"code": "123456"}, headers=headers),
        client.post(f"/v1/verifications/{vid}/resend", headers=headers),
        client.post(f"/v1/verifications/{vid}/cancel", headers=headers),
    ]
    for call in calls:
        response = await call
        await _problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    resource = await get_verification(client, vid)
    assert resource["status"] == "pending"
    assert resource["attempts_left"] == 5


# --- codes at rest ----------------------------------------------------------------------------


def _text(value: bytes | float | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


async def _dump(redis_url: str, prefix: str) -> str:
    """Every key and value under ``prefix`` (binary ones too), as one string."""
    parts: list[str] = []
    async with Redis.from_url(redis_url) as raw:
        async for key in raw.scan_iter(f"{prefix}:*"):
            parts.append(_text(key))
            kind = _text(await raw.type(key))
            if kind == "hash":
                parts += [f"{_text(k)}={_text(v)}" for k, v in (await raw.hgetall(key)).items()]
            elif kind == "string":
                parts.append(_text(await raw.get(key)))
            elif kind == "list":
                parts += [_text(v) for v in await raw.lrange(key, 0, -1)]
            elif kind == "set":
                parts += [_text(v) for v in await raw.smembers(key)]
            elif kind == "zset":
                members = await raw.zrange(key, 0, -1, withscores=True)
                parts += [f"{_text(m)}={s}" for m, s in members]
            elif kind == "stream":
                for entry_id, fields in await raw.xrange(key):
                    parts.append(_text(entry_id))
                    parts += [f"{_text(k)}={_text(v)}" for k, v in fields.items()]
            else:
                raise AssertionError(f"unexpected key type {kind} for {key!r}")
    return "\n".join(parts)


async def test_codes_are_stored_only_hashed(
    client: TestClient,
    smtp: SmtpSink,
    settings: Settings,
    start_worker: Callable[[Settings], Awaitable[None]],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    prefix = settings.redis_prefix
    vid = (await signup(client))["id"]
    # While queued: the verification, its delivery and the task on the stream.
    queued = await _dump(redis_url, prefix)
    assert f"{prefix}:queue" in queued and f"{prefix}:v:{vid}" in queued

    await start_worker(settings)
    code = code_from((await smtp.wait_for_messages(1))[0])
    assert len(code) == 6
    await wait_for(lambda: _all_sent(client, vid), what="delivery recorded as sent")
    sent = await _dump(redis_url, prefix)

    alone = re.compile(rf"(?<!\d){code}(?!\d)")
    assert not alone.search(queued), "the code is readable in Redis while queued"
    assert not alone.search(sent), "the code is readable in Redis after sending"
    # Every log record of the service (the SMTP sink's own debug log is the mailbox's business).
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert ours
    assert not any(alone.search(f"{r.getMessage()} {vars(r)}") for r in ours), "the code was logged"
    # It still works: it is kept, just not readably.
    assert (await _check(client, vid, code))["valid"] is True


# --- sealed codes ------------------------------------------------------------------------------


def test_a_sealed_code_opens_only_for_its_own_delivery() -> None:
    sealer = PayloadSealer(b"k" * 32)
    sealed = sealer.seal("123456", "dlv_aa_00000001")
    assert "123456" not in sealed
    assert sealer.open(sealed, "dlv_aa_00000001") == "123456"
    with pytest.raises(InvalidTag):
        sealer.open(sealed, "dlv_aa_00000002")
    with pytest.raises(InvalidTag):
        PayloadSealer(b"x" * 32).open(sealed, "dlv_aa_00000001")


def test_codes_sealed_by_earlier_releases_still_open() -> None:
    # v1: AES-GCM under the same master key, random nonce stored before the ciphertext.
    master = b"k" * 32
    aead = AESGCM(hmac.new(master, b"tidings/payload", hashlib.sha256).digest())
    nonce = b"n" * 12
    v1 = "v1." + base64.urlsafe_b64encode(nonce + aead.encrypt(nonce, b"654321", None)).decode()
    assert PayloadSealer(master).open(v1, "dlv_any_00000001") == "654321"


def test_ids_drawn_after_a_fork_differ_from_the_parents() -> None:
    # Web servers are forked from one parent: a buffer of randomness copied into each
    # child would hand out the same ids twice.
    random_hex(8)  # the parent's buffer is full
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, random_hex(8).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    parent = random_hex(8)
    assert len(child) == len(parent) == 16
    assert child != parent
