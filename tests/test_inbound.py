"""``POST /webhooks/{site}``: signatures, replays, limits, validation and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

from config.settings import Settings
from tests.conftest import (
    API_KEY,
    OTHER_API_KEY,
    OTHER_SECRET,
    SECRET,
    SmtpSink,
    auth,
    code_from,
    post_event,
    signup_event,
    site,
)
from tidings.devsite import new_webhook_secret
from webhooks.app import create_app

PROBLEM = "application/problem+json"


# ---------------------------------------------------------------- helpers


def signed(
    secret: str, body: str | bytes, *, msg_id: str = "msg_test", timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` at ``timestamp`` (now by default)."""
    text = body.decode() if isinstance(body, bytes) else body
    ts = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


async def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Assert ``response`` is the RFC 9457 problem ``slug``; return the document."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM
    body: dict[str, Any] = json.loads(text)
    assert body["type"] == f"/docs#problem-{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [error["field"] for error in body.get("errors", [])]


async def _stop(task: asyncio.Task[Any], timeout: float = 10.0) -> None:
    """Cancel ``task`` and wait until it has really ended.

    On Python 3.11 a cancellation that arrives while redis-py connects is swallowed
    (``asyncio.wait_for`` returns the result instead), so taskiq's receiver or the
    worker's pump can keep running after one ``cancel()``. Re-deliver the cancellation
    to every task that was asked to stop until ``task`` is done.
    """
    deadline = time.monotonic() + timeout
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        if task.done():
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{task!r} did not stop")
        me = asyncio.current_task()
        for other in asyncio.all_tasks():
            if other is not me and not other.done() and other.cancelling():
                other.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Redis]:
    """A Redis client on the test's Redis, to look at what was (not) stored."""
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    yield redis
    await redis.aclose()


async def stored_verifications(store: Redis, prefix: str) -> list[str]:
    """Ids of verifications stored under ``prefix``."""
    pattern = re.compile(rf"^{re.escape(prefix)}:v:(ver_[0-9a-f]+)$")
    return sorted(
        [m.group(1) async for key in store.scan_iter(f"{prefix}:v:*") if (m := pattern.match(key))]
    )


async def stored_records(store: Redis, prefix: str) -> list[str]:
    """Keys of verifications, deliveries, user indexes and remembered webhook answers."""
    wanted = re.compile(rf"^{re.escape(prefix)}:(v:ver_|d:|user:|wh:|rl:)")
    return [key async for key in store.scan_iter(f"{prefix}:*") if wanted.match(key)]


async def assert_nothing_happened(
    client: TestClient, smtp: SmtpSink, store: Redis, prefix: str
) -> None:
    """Nothing was stored; a valid signup sent now is the only email that arrives."""
    assert await stored_records(store, prefix) == []
    after = await post_event(
        client, signup_event(user_id="u-after", email="after@example.com"), msg_id="msg_after"
    )
    assert after.status == 202
    await smtp.wait_for_messages(1)
    # Anything the bad request had queued would have been queued before this signup.
    assert [m["To"] for m in smtp.messages] == ["after@example.com"]
    assert await stored_verifications(store, prefix) == [(await after.json())["id"]]


async def get_verification(client: TestClient, vid: str, api_key: str = API_KEY) -> dict[str, Any]:
    response = await client.get(f"/v1/verifications/{vid}", headers=auth(api_key))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


# ---------------------------------------------------------------- replays


def _same_verification(replayed: dict[str, Any], first: dict[str, Any]) -> bool:
    """A replay shows the verification the first answer created, as it is now (its
    delivery may have been sent since), and no second delivery."""
    return (
        replayed["id"] == first["id"]
        and replayed["sends"] == 1
        and [d["id"] for d in replayed["deliveries"]] == [d["id"] for d in first["deliveries"]]
        and {k: replayed[k] for k in ("site", "user_id", "channel", "destination", "expires_at")}
        == {k: first[k] for k in ("site", "user_id", "channel", "destination", "expires_at")}
    )


async def test_replayed_webhook_id_returns_the_first_verification_and_sends_once(
    client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    event = signup_event()
    first = await post_event(client, event, msg_id="msg_replay")
    assert first.status == 202
    answer = await first.json()
    # A redelivery is signed again with a new timestamp, as Standard Webhooks senders do.
    again = await post_event(client, event, msg_id="msg_replay")
    assert again.status == 202
    assert _same_verification(await again.json(), answer)
    # Concurrent redeliveries too.
    many = await asyncio.gather(
        *(post_event(client, event, msg_id="msg_replay") for _ in range(10))
    )
    assert {r.status for r in many} == {202}
    assert all([_same_verification(await r.json(), answer) for r in many])

    await smtp.wait_for_messages(1)
    later = await post_event(client, signup_event(user_id="u-2", email="bob@example.com"))
    assert later.status == 202
    await smtp.wait_for_messages(2)
    assert sorted(m["To"] for m in smtp.messages) == ["alice@example.com", "bob@example.com"]
    assert await stored_verifications(store, settings.redis_prefix) == sorted(
        [answer["id"], (await later.json())["id"]]
    )
    assert (await get_verification(client, answer["id"]))["sends"] == 1


async def test_webhook_ids_are_scoped_per_site(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    shop = await post_event(client, signup_event(), msg_id="msg_shared")
    other = await post_event(
        client, signup_event(), msg_id="msg_shared", site_id="other", secret=OTHER_SECRET
    )
    assert (shop.status, other.status) == (202, 202)
    shop_id, other_id = (await shop.json())["id"], (await other.json())["id"]
    assert shop_id != other_id
    assert (await other.json())["site"] == "other"
    await smtp.wait_for_messages(2)


async def test_replayed_cancel_returns_first_answer_and_does_nothing_else(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    first_vid = (await (await post_event(client, signup_event())).json())["id"]
    cancel_event = {"type": "signup.canceled", "timestamp": "2026-11-23T10:05:00Z",
                    "data": {"user_id": "u-1"}}  # fmt: skip
    first = await post_event(client, cancel_event, msg_id="msg_cancel")
    assert first.status == 200
    answer = await first.json()
    assert answer == {"type": "signup.canceled", "canceled": [first_vid]}

    # The same user signs up again; a redelivered cancel must not touch the new signup.
    second_vid = (await (await post_event(client, signup_event())).json())["id"]
    again = await post_event(client, cancel_event, msg_id="msg_cancel")
    assert again.status == 200
    assert await again.json() == answer
    assert (await get_verification(client, second_vid))["status"] == "pending"
    assert (await get_verification(client, first_vid))["status"] == "canceled"


# ---------------------------------------------------------------- signatures


def _now() -> int:
    return int(time.time())


BODY = json.dumps(signup_event())


def _bad_headers() -> dict[str, dict[str, str]]:
    good = signed(SECRET, BODY)
    sig = good["webhook-signature"]
    return {
        "stale timestamp": signed(SECRET, BODY, timestamp=_now() - 360),
        "future timestamp": signed(SECRET, BODY, timestamp=_now() + 360),
        "bad signature": {**good, "webhook-signature": "v1," + sig[3:][::-1]},
        "signature for another body": signed(SECRET, BODY.replace("alice", "mallory")),
        "other site's secret": signed(OTHER_SECRET, BODY),
        "signature without comma": {**good, "webhook-signature": sig.replace(",", "")},
        "signature with bad base64": {**good, "webhook-signature": "v1,@@@not*base64!!"},
        "signature v1, only": {**good, "webhook-signature": "v1,"},
        "signature with two commas": {**good, "webhook-signature": sig + ",extra"},
        "unknown signature version": {**good, "webhook-signature": "v2," + sig[3:]},
        "missing webhook-id": {k: v for k, v in good.items() if k != "webhook-id"},
        "missing webhook-timestamp": {k: v for k, v in good.items() if k != "webhook-timestamp"},
        "missing webhook-signature": {k: v for k, v in good.items() if k != "webhook-signature"},
        "non-numeric timestamp": {**good, "webhook-timestamp": "yesterday"},
        "float timestamp": {**good, "webhook-timestamp": f"{_now()}.5"},
        "huge timestamp": {**good, "webhook-timestamp": "9" * 40},
        "negative timestamp": {**good, "webhook-timestamp": "-1"},
    }


@pytest.mark.parametrize("case", list(_bad_headers()))
async def test_unauthentic_webhooks_are_401_and_do_nothing(
    case: str, client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    headers = _bad_headers()[case]
    response = await client.post("/webhooks/shop", data=BODY, headers=headers)
    await problem(response, 401, "invalid-signature")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_signature_list_with_one_good_entry_is_accepted(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    headers = signed(SECRET, BODY, msg_id="msg_list")
    wrong = signed(OTHER_SECRET, BODY, msg_id="msg_list")["webhook-signature"]
    headers["webhook-signature"] = f"{wrong} {headers['webhook-signature']}"
    response = await client.post("/webhooks/shop", data=BODY, headers=headers)
    assert response.status == 202
    await smtp.wait_for_messages(1)


async def test_unknown_site_gets_the_same_answer_as_a_bad_signature(
    client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    unknown = await client.post("/webhooks/nosuch", data=BODY, headers=signed(SECRET, BODY))
    unknown_body = await problem(unknown, 401, "invalid-signature")
    bad = await client.post("/webhooks/shop", data=BODY, headers=signed(new_webhook_secret(), BODY))
    assert unknown_body == await problem(bad, 401, "invalid-signature")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_secret_rotation_accepts_either_secret(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
) -> None:
    new_secret = new_webhook_secret()
    rotating = site(webhook_secrets=[SECRET, new_secret])
    settings = make_settings(sites=[rotating])
    client = await aiohttp_client(create_app(settings))
    await start_worker(settings)

    old = await post_event(client, signup_event(user_id="u-old", email="old@example.com"))
    new = await post_event(
        client, signup_event(user_id="u-new", email="new@example.com"), secret=new_secret
    )
    assert (old.status, new.status) == (202, 202)
    await problem(
        await post_event(client, signup_event(), secret=OTHER_SECRET), 401, "invalid-signature"
    )
    await smtp.wait_for_messages(2)
    assert sorted(m["To"] for m in smtp.messages) == ["new@example.com", "old@example.com"]


# ---------------------------------------------------------------- size limits


def _big_event(size: int) -> str:
    event = signup_event(metadata={"pad": ""})
    padding = size - len(json.dumps(event))
    return json.dumps(signup_event(metadata={"pad": "x" * padding}))


async def test_body_over_limit_with_content_length_is_413(
    client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    body = _big_event(settings.http.max_body_bytes + 1)
    assert len(body) == settings.http.max_body_bytes + 1
    response = await client.post("/webhooks/shop", data=body, headers=signed(SECRET, body))
    await problem(response, 413, "too-large")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_body_over_limit_chunked_is_413(
    client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    body = _big_event(settings.http.max_body_bytes * 2).encode()
    headers = signed(SECRET, body)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await client.post("/webhooks/shop", data=chunks(), headers=headers)
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    await problem(response, 413, "too-large")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_body_at_limit_is_accepted(
    client: TestClient, smtp: SmtpSink, worker: None, settings: Settings
) -> None:
    body = _big_event(settings.http.max_body_bytes)
    response = await client.post("/webhooks/shop", data=body, headers=signed(SECRET, body))
    # The metadata is too big for the schema, but the size limit itself let it through.
    await problem(response, 422, "validation")


# ---------------------------------------------------------------- validation


def _data(**changes: Any) -> dict[str, Any]:
    event = signup_event()
    data = {k: v for k, v in event["data"].items() if k not in changes or changes[k] is not ...}
    data.update({k: v for k, v in changes.items() if v is not ...})
    return {**event, "data": data}


INVALID: dict[str, tuple[Any, int, str, str | None]] = {
    # name: (body, status, slug, field)
    "invalid json": ('{"type": "signup.created", ', 400, "invalid-json", None),
    "empty body": ("", 400, "invalid-json", None),
    "no user_id": (_data(user_id=...), 422, "validation", "data.user_id"),
    "empty user_id": (_data(user_id=""), 422, "validation", "data.user_id"),
    "numeric user_id": (_data(user_id=42), 422, "validation", "data.user_id"),
    "no channel": (_data(channel=...), 422, "validation", "data.channel"),
    "unknown channel": (_data(channel="pigeon"), 422, "validation", "data.channel"),
    "bad email": (_data(email="not-an-email"), 422, "validation", "data.email"),
    "email channel without email": (_data(email=...), 422, "validation", "data.email"),
    "email channel with null email": (_data(email=None), 422, "validation", "data.email"),
    "remind_after too small": (_data(remind_after=5), 422, "validation", "data.remind_after"),
    "metadata not an object": (_data(metadata=[1]), 422, "validation", "data.metadata"),
    "metadata too big": (_data(metadata={"x": "y" * 5000}), 422, "validation", "data.metadata"),
    "sms not enabled": (_data(channel="sms"), 422, "channel-unavailable", "data.channel"),
    "unknown event type": (
        {**signup_event(), "type": "signup.exploded"}, 422, "unknown-event", "type"),
    "no type": ({"timestamp": "2026-11-23T10:00:00Z", "data": {}}, 422, "validation", "type"),
    "bad timestamp": ({**signup_event(), "timestamp": "soon"}, 422, "validation", "timestamp"),
    "data is a string": ({**signup_event(), "data": "hello"}, 422, "validation", "data"),
    "data is a list": ({**signup_event(), "data": [1, 2]}, 422, "validation", "data"),
    "data missing": ({"type": "signup.created", "timestamp": "2026-11-23T10:00:00Z"},
                     422, "validation", "data"),
    "cancel without user_id": (
        {"type": "user.deleted", "timestamp": "2026-11-23T10:00:00Z", "data": {}},
        422, "validation", "data.user_id"),
    "body is a list": ([signup_event()], 422, "validation", "body"),
    "body is a number": ("42", 422, "validation", "body"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_events_are_problems_and_do_nothing(
    case: str, client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    body, status, slug, field = INVALID[case]
    text = body if isinstance(body, str) else json.dumps(body)
    response = await client.post("/webhooks/shop", data=text, headers=signed(SECRET, text))
    document = await problem(response, status, slug)
    if field is not None:
        assert field in fields(document)
    if slug == "validation":
        first = document["errors"][0]
        assert document["detail"] == f"{first['field']}: {first['message']}"
    for error in document.get("errors", []):
        assert error["field"], "every error names a field"
        assert error["message"]
    assert not document["detail"].startswith(":")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_validation_errors_do_not_echo_input(client: TestClient) -> None:
    text = json.dumps(_data(email="<script>secret-value@@</script>"))
    response = await client.post("/webhooks/shop", data=text, headers=signed(SECRET, text))
    document = await problem(response, 422, "validation")
    assert "secret-value" not in json.dumps(document)


async def test_enabled_but_undeliverable_channel_is_422(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    store: Redis,
) -> None:
    settings = make_settings(sites=[site(channels=["email", "sms"])])
    client = await aiohttp_client(create_app(settings))
    response = await post_event(client, _data(channel="sms", phone="+8613800138000"))
    document = await problem(response, 422, "channel-unavailable")
    assert fields(document) == ["data.channel"]
    assert await stored_records(store, settings.redis_prefix) == []


async def test_overlong_webhook_id_is_rejected(
    client: TestClient, store: Redis, settings: Settings
) -> None:
    response = await client.post(
        "/webhooks/shop", data=BODY, headers=signed(SECRET, BODY, msg_id="m" * 300)
    )
    await problem(response, 422, "validation")
    assert await stored_records(store, settings.redis_prefix) == []


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("event_type", ["signup.canceled", "user.deleted"])
async def test_cancel_events_cancel_only_that_users_pending_verifications(
    event_type: str, client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    async def create(user: str, email: str, site_id: str = "shop", secret: str = SECRET) -> str:
        r = await post_event(
            client, signup_event(user_id=user, email=email), site_id=site_id, secret=secret
        )
        assert r.status == 202
        vid: str = (await r.json())["id"]
        return vid

    mine = await create("u-1", "alice@example.com")
    mine_too = await create("u-1", "alice2@example.com")
    someone_else = await create("u-2", "bob@example.com")
    other_site = await create("u-1", "carol@example.com", "other", OTHER_SECRET)
    messages = await smtp.wait_for_messages(4)
    codes = {m["To"]: code_from(m) for m in messages}

    event = {"type": event_type, "timestamp": "2026-11-23T10:05:00Z", "data": {"user_id": "u-1"}}
    response = await post_event(client, event)
    assert response.status == 200
    answer = await response.json()
    assert answer["type"] == event_type
    assert sorted(answer["canceled"]) == sorted([mine, mine_too])

    for vid, email in ((mine, "alice@example.com"), (mine_too, "alice2@example.com")):
        assert (await get_verification(client, vid))["status"] == "canceled"
        check = await client.post(
            f"/v1/verifications/{vid}/check", json={"code": codes[email]}, headers=auth()
        )
        assert check.status == 200
        result = await check.json()
        assert (result["valid"], result["status"]) == (False, "canceled")

    assert (await get_verification(client, someone_else))["status"] == "pending"
    assert (await get_verification(client, other_site, OTHER_API_KEY))["status"] == "pending"
    check = await client.post(
        f"/v1/verifications/{other_site}/check",
        json={"code": codes["carol@example.com"]},
        headers=auth(OTHER_API_KEY),
    )
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 5}


async def test_cancel_for_unknown_user_cancels_nothing(client: TestClient) -> None:
    event = {
        "type": "user.deleted",
        "timestamp": "2026-11-23T10:05:00Z",
        "data": {"user_id": "nobody"},
    }
    response = await post_event(client, event)
    assert response.status == 200
    assert await response.json() == {"type": "user.deleted", "canceled": []}


async def test_cancel_skips_verifications_already_approved(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await (await post_event(client, signup_event())).json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"
    event = {
        "type": "user.deleted",
        "timestamp": "2026-11-23T10:05:00Z",
        "data": {"user_id": "u-1"},
    }
    response = await post_event(client, event)
    assert await response.json() == {"type": "user.deleted", "canceled": []}
    assert (await get_verification(client, vid))["status"] == "approved"


# ---------------------------------------------------------------- secrets


async def test_secrets_never_in_responses_or_logs(
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [SECRET, SECRET.removeprefix("whsec_"), API_KEY, OTHER_SECRET, OTHER_API_KEY]
    assert settings.secret_key is not None
    secrets.append(settings.secret_key.get_secret_value())
    bodies: list[str] = []

    bad = await client.post("/webhooks/shop", data=BODY, headers=signed(OTHER_SECRET, BODY))
    bodies.append(await bad.text())
    assert bad.status == 401
    good = await post_event(client, signup_event())
    bodies.append(await good.text())
    assert good.status == 202
    vid = (await good.json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    for response in (
        await client.get(f"/v1/verifications/{vid}", headers=auth()),
        await client.get(f"/v1/verifications/{vid}", headers=auth(API_KEY[:-2] + "xx")),
        await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth()),
    ):
        bodies.append(await response.text())
    assert any(r.name == "tidings.access" for r in caplog.records), "requests were logged"

    logged = [r.getMessage() + " " + repr(vars(r)) for r in caplog.records]
    for secret in secrets:
        for body in bodies:
            assert secret not in body
        for line in logged:
            assert secret not in line


# ---------------------------------------------------------------- svix senders


def svix_signed(secret: str, body: str, msg_id: str = "msg_svix") -> dict[str, str]:
    """The headers a Svix-based sender puts on a request, signed with the ``svix`` library."""
    now = datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": SvixWebhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }


async def test_svix_header_family_is_accepted(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    headers = svix_signed(SECRET, BODY)
    SvixWebhook(SECRET).verify(BODY, headers)  # what the svix library itself accepts
    response = await client.post("/webhooks/shop", data=BODY, headers=headers)
    assert response.status == 202, await response.text()
    # The svix-id is the message id: a redelivery returns the same verification.
    again = await client.post("/webhooks/shop", data=BODY, headers=svix_signed(SECRET, BODY))
    assert _same_verification(await again.json(), await response.json())
    [message] = await smtp.wait_for_messages(1)
    assert message["To"] == "alice@example.com"


@pytest.mark.parametrize(
    "case", ["other secret", "stale", "no svix-id", "signature for another body"]
)
async def test_unauthentic_svix_requests_are_401_and_do_nothing(
    case: str, client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings
) -> None:
    headers = svix_signed(OTHER_SECRET if case == "other secret" else SECRET, BODY)
    if case == "stale":
        stale = datetime.fromtimestamp(_now() - 360, UTC)
        headers["svix-timestamp"] = str(int(stale.timestamp()))
        headers["svix-signature"] = SvixWebhook(SECRET).sign("msg_svix", stale, BODY)
    elif case == "no svix-id":
        del headers["svix-id"]
    elif case == "signature for another body":
        headers = svix_signed(SECRET, BODY.replace("alice", "mallory"))
    response = await client.post("/webhooks/shop", data=BODY, headers=headers)
    await problem(response, 401, "invalid-signature")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_a_cancel_reusing_a_signups_webhook_id_replays_it_and_cancels_nothing(
    client: TestClient, worker: None
) -> None:
    signup = await post_event(client, signup_event(), msg_id="msg_reused")
    assert signup.status == 202
    created = await signup.json()
    cancel = {"type": "signup.canceled", "timestamp": "2026-11-23T10:05:00Z",
              "data": {"user_id": "u-1"}}  # fmt: skip
    # The same webhook-id is the same message (Standard Webhooks): its first answer again.
    again = await post_event(client, cancel, msg_id="msg_reused")
    assert again.status == 200, await again.text()
    assert (await again.json())["id"] == created["id"]
    assert (await get_verification(client, created["id"]))["status"] == "pending"
