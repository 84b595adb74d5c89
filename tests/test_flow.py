"""The whole signup → email → check flow over HTTP, with real Redis and a real SMTP server."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    html_of,
    post_event,
    signup_event,
    wait_for,
)


async def test_signup_email_check_approves_once(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    response = await post_event(
        client, signup_event(email="Alice@Example.com", metadata={"plan": "pro"})
    )
    assert response.status == 202
    created = await response.json()
    assert created["status"] == "pending"
    assert created["destination"] == "A***@example.com"
    assert created["attempts_left"] == 5
    assert created["metadata"] == {"plan": "pro"}
    assert created["deliveries"][0]["status"] == "queued"

    [message] = await smtp.wait_for_messages(1)
    assert message["To"] == "Alice@example.com"
    assert message["Subject"] == "Your Acme Shop verification code"
    assert message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    assert "List-Unsubscribe" not in message
    code = code_from(message)
    assert len(code) == 6
    assert code in html_of(message)

    sent = await wait_for(lambda: _sent(client, created["id"]), what="delivery recorded as sent")
    assert sent["provider_id"] == message["Message-ID"]

    check = await client.post(
        f"/v1/verifications/{created['id']}/check", json={"code": code}, headers=auth()
    )
    assert check.status == 200
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 5}

    again = await client.post(
        f"/v1/verifications/{created['id']}/check", json={"code": code}, headers=auth()
    )
    assert (await again.json())["valid"] is False
    assert (await get_verification(client, created["id"]))["status"] == "approved"


async def _sent(client: TestClient, vid: str) -> dict[str, Any] | None:
    delivery = (await get_verification(client, vid))["deliveries"][0]
    return delivery if delivery["status"] == "sent" else None


async def test_chinese_email_for_zh_locale(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    response = await post_event(client, signup_event(locale="zh-CN"))
    assert response.status == 202
    assert (await response.json())["locale"] == "zh"
    [message] = await smtp.wait_for_messages(1)
    assert message["Subject"] == "您的Acme Shop验证码"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "验证码" in text and "分钟后失效" in text
    assert 'lang="zh-CN"' in html_of(message)
    code = code_from(message)
    vid = (await response.json())["id"]
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"


async def test_fifty_concurrent_checks_exactly_one_wins(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    vid = (await (await post_event(client, signup_event())).json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])

    async def check() -> bool:
        r = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
        assert r.status == 200
        return bool((await r.json())["valid"])

    results = await asyncio.gather(*(check() for _ in range(50)))
    assert results.count(True) == 1
    assert (await get_verification(client, vid))["status"] == "approved"


async def test_another_site_cannot_see_or_check(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    from tests.conftest import OTHER_API_KEY

    vid = (await (await post_event(client, signup_event())).json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    other = auth(OTHER_API_KEY)
    assert (await client.get(f"/v1/verifications/{vid}", headers=other)).status == 404
    r = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=other)
    assert r.status == 404
    assert (await client.post(f"/v1/verifications/{vid}/cancel", headers=other)).status == 404
    # The owner's code still works: the other site's attempts changed nothing.
    r = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await r.json()) == {"valid": True, "status": "approved", "attempts_left": 5}


async def test_queued_message_is_what_taskiq_would_send(settings: Any) -> None:
    # The service queues a compact entry itself (inside its Lua script); the workers'
    # broker must rebuild exactly the message taskiq's own kiq() produces for the task.
    from config.logging import request_id_var
    from tasks.broker import build_broker
    from tasks.worker import TaskiqDeliveryQueue, register_tasks

    broker = build_broker(settings)
    tasks = register_tasks(broker, settings)
    assert broker.compact is not None
    token = request_id_var.set("req-1")
    try:
        entry = TaskiqDeliveryQueue(broker, tasks).message("dlv_1")
    finally:
        request_id_var.reset(token)
    assert entry == b"dlv_1 req-1"
    ours = broker.formatter.loads(broker.compact.message(b"stream", b"1796400000000-0", entry))
    theirs = tasks.deliver.kicker()._prepare_message("dlv_1")
    # Labels are what taskiq's pre_send middlewares add (tasks.telemetry): when and by
    # which request it was queued.
    assert ours.model_dump(exclude={"task_id", "labels"}) == theirs.model_dump(
        exclude={"task_id", "labels"}
    )
    assert ours.labels == {"enqueued_ms": "1796400000000", "request_id": "req-1"}
    assert len(ours.task_id) == 32
    again = broker.formatter.loads(broker.compact.message(b"stream", b"1796400000000-0", entry))
    assert again.task_id == ours.task_id  # a re-read entry is the same task
