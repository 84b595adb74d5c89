"""SMS end to end: signed webhook → worker → Ronglian (emulated) or the console → check."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.conftest import (
    OTHER_API_KEY,
    OTHER_SECRET,
    SECRET,
    SmtpSink,
    auth,
    get_verification,
    post_event,
    signup_event,
    site,
    wait_for,
)
from tests.emulators.ronglian import RonglianEmulator
from verification.keys import Keys
from webhooks import keys as app_keys
from webhooks.app import create_app

RAW = "138 0013 8000"
NATIONAL = "13800138000"
E164 = "+8613800138000"
OTHER_RAW = "139 0013 9000"
OTHER_NATIONAL = "13900139000"
TEMPLATE = "2093345"  # an approved template id with two datas: code, minutes

OpenApp = Callable[..., Awaitable[tuple[TestClient, Settings]]]

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


@pytest.fixture
async def ronglian() -> AsyncIterator[RonglianEmulator]:
    async with RonglianEmulator(templates={TEMPLATE: 2}) as emulator:
        yield emulator


@pytest.fixture
def open_app(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
) -> OpenApp:
    """The real app (and a worker) for settings built from ``overrides``."""

    async def open_(*, worker: bool = True, **overrides: Any) -> tuple[TestClient, Settings]:
        overrides.setdefault("queue", {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2})
        settings = make_settings(**overrides)
        if worker:
            await start_worker(settings)
        client: TestClient = await aiohttp_client(create_app(settings))
        return client, settings

    return open_


def ronglian_app(
    open_app: OpenApp, ronglian: RonglianEmulator, **ronglian_overrides: Any
) -> Awaitable[tuple[TestClient, Settings]]:
    return open_app(
        sms={"provider": "ronglian", "ronglian": ronglian.settings(**ronglian_overrides)},
        sites=[site(channels=["email", "sms", "link"], domain="shop.example")],
    )


async def sms_signup(
    client: TestClient,
    phone: str = RAW,
    *,
    site_id: str = "shop",
    secret: str = SECRET,
    **data: Any,
) -> ClientResponse:
    """A signed ``signup.created`` for the sms channel (no email)."""
    event = signup_event(channel="sms", phone=phone, email=None, **data)
    response: ClientResponse = await post_event(client, event, site_id=site_id, secret=secret)
    return response


async def accepted(response: ClientResponse) -> dict[str, Any]:
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def delivery_in(client: TestClient, vid: str, *statuses: str) -> dict[str, Any]:
    """Wait until the first delivery of ``vid`` is in one of ``statuses``; return it."""

    async def settled() -> dict[str, Any] | None:
        delivery: dict[str, Any] = (await get_verification(client, vid))["deliveries"][0]
        return delivery if delivery["status"] in statuses else None

    result: dict[str, Any] = await wait_for(settled, what=f"delivery {' or '.join(statuses)}")
    return result


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log line with its structured fields, as the JSON formatter writes it.

    aiohttp's own access log is left out: Tidings turns it off in every process.
    """
    parts = []
    for record in caplog.records:
        if record.name == "aiohttp.access":
            continue
        parts.append(record.getMessage())
        parts.extend(str(v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
    return "\n".join(parts)


def assert_private(text: str, code: str, where: str) -> None:
    """Neither the number (in any usual form) nor the code appears in ``text``."""
    for form in (NATIONAL, RAW, "86" + NATIONAL, "0013 8000", "00138000"):
        assert form not in text, f"the phone number appears in {where}"
    assert not re.search(rf"(?<!\d){code}(?!\d)", text), f"the code appears in {where}"


# -- Ronglian -----------------------------------------------------------------------------


async def test_sms_signup_sent_by_ronglian_and_checked(
    open_app: OpenApp, ronglian: RonglianEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = await ronglian_app(open_app, ronglian)
    answers: list[str] = []

    response = await sms_signup(client)
    answers.append(await response.text())
    created = await accepted(response)
    vid = created["id"]
    assert created["channel"] == "sms"
    assert created["status"] == "pending"
    assert created["deliveries"][0]["status"] == "queued"

    [sms] = await ronglian.wait_for_messages(1)
    assert sms.to == NATIONAL  # mainland numbers go to Ronglian in national form
    assert sms.app_id == ronglian.app_id
    assert sms.template_id == TEMPLATE
    code, minutes = sms.datas
    assert re.fullmatch(r"\d{6}", code)
    assert minutes == "10"

    delivery = await delivery_in(client, vid, "sent")
    assert delivery["channel"] == "sms"
    assert delivery["provider_id"] == sms.sid
    assert delivery["attempts"] == 1
    assert delivery["error"] is None

    wrong = "000000" if code != "000000" else "111111"
    miss = await client.post(f"/v1/verifications/{vid}/check", json={"code": wrong}, headers=auth())
    answers.append(await miss.text())
    assert await miss.json() == {"valid": False, "status": "pending", "attempts_left": 4}

    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    answers.append(await check.text())
    assert check.status == 200
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 4}

    seen = await client.get(f"/v1/verifications/{vid}", headers=auth())
    answers.append(await seen.text())
    resource = await seen.json()
    assert resource["status"] == "approved"
    assert resource["destination"].startswith("+86")
    assert "*" in resource["destination"]
    assert resource["deliveries"][0]["provider_id"] == sms.sid

    assert ronglian.received == 1
    for answer in answers:
        assert_private(answer, code, "an API answer")
    assert_private(logged(caplog), code, "the logs")


@pytest.mark.parametrize("fault", ["500", "503", "160038"])
async def test_retryable_ronglian_failure_is_retried_once_and_sent(
    open_app: OpenApp, ronglian: RonglianEmulator, fault: str
) -> None:
    client, _ = await ronglian_app(open_app, ronglian)
    ronglian.fail_next(fault)
    vid = (await accepted(await sms_signup(client)))["id"]

    [sms] = await ronglian.wait_for_messages(1)
    delivery = await delivery_in(client, vid, "sent", "failed")
    assert delivery["status"] == "sent"
    assert delivery["attempts"] == 2
    assert delivery["provider_id"] == sms.sid
    assert ronglian.received == 2
    assert len(ronglian.messages) == 1

    code = sms.datas[0]
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"


async def test_final_ronglian_error_fails_delivery_and_verification(
    open_app: OpenApp, ronglian: RonglianEmulator
) -> None:
    client, _ = await ronglian_app(open_app, ronglian)
    ronglian.fail_next("160042")
    vid = (await accepted(await sms_signup(client)))["id"]

    delivery = await delivery_in(client, vid, "failed", "sent")
    assert delivery["status"] == "failed"
    assert "160042" in delivery["error"]
    assert NATIONAL not in delivery["error"]
    assert delivery["attempts"] == 1
    assert ronglian.received == 1
    assert ronglian.messages == []
    resource = await get_verification(client, vid)
    assert resource["status"] == "failed"


async def test_a_200_that_is_not_json_may_have_been_sent_and_is_not_retried(
    open_app: OpenApp, ronglian: RonglianEmulator
) -> None:
    client, _ = await ronglian_app(open_app, ronglian)
    ronglian.fail_next("garbled")
    vid = (await accepted(await sms_signup(client)))["id"]

    delivery = await delivery_in(client, vid, "failed", "sent")
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 1
    assert "may have been sent" in delivery["error"]
    assert NATIONAL not in delivery["error"]
    # The request reached Ronglian: the text may be on the phone, its code still works.
    assert (await get_verification(client, vid))["status"] == "pending"

    # No second SMS for it: the next request Ronglian sees is another person's.
    other = (await accepted(await sms_signup(client, OTHER_RAW, user_id="u-2")))["id"]
    await delivery_in(client, other, "sent")
    assert [request.json()["to"] for request in ronglian.requests] == [NATIONAL, OTHER_NATIONAL]
    code = ronglian.requests[0].json()["datas"][0]
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"


async def test_timeout_after_sending_is_not_retried_and_keeps_the_code_usable(
    open_app: OpenApp, ronglian: RonglianEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client, settings = await ronglian_app(open_app, ronglian, timeout_seconds=0.5)
    ronglian.fail_next("timeout")
    vid = (await accepted(await sms_signup(client)))["id"]

    delivery = await delivery_in(client, vid, "failed", "sent")
    assert delivery["status"] == "failed"
    assert delivery["error"]
    assert NATIONAL not in delivery["error"]
    # The text may well have reached the phone: the person can still use it.
    assert (await get_verification(client, vid))["status"] == "pending"
    assert ronglian.received == 1
    assert ronglian.messages == []

    # Nothing is scheduled to try again...
    due = await client.app[app_keys.REDIS].zscore(Keys(settings.redis_prefix).due, delivery["id"])
    assert due is None
    # ...and while the worker sends another person's text (many retry periods), no second
    # request for the first one reaches Ronglian.
    other = (await accepted(await sms_signup(client, OTHER_RAW, user_id="u-2")))["id"]
    [sms] = await ronglian.wait_for_messages(1)
    assert sms.to == OTHER_NATIONAL
    await delivery_in(client, other, "sent")
    sent_to = [request.json()["to"] for request in ronglian.requests]
    assert sent_to == [NATIONAL, OTHER_NATIONAL]

    # The code in the text that timed out still approves.
    code = ronglian.requests[0].json()["datas"][0]
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert await check.json() == {"valid": True, "status": "approved", "attempts_left": 5}
    assert_private(logged(caplog), code, "the logs")


# -- console provider -------------------------------------------------------------------


async def outbox_sms(client: TestClient, count: int = 1) -> list[dict[str, Any]]:
    """The SMS entries of ``/dev/outbox`` (newest first), once there are ``count``."""

    async def entries() -> list[dict[str, Any]] | None:
        response = await client.get("/dev/outbox", params={"format": "json"})
        assert response.status == 200
        found = [e for e in await response.json() if e["kind"] == "sms"]
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = await wait_for(entries, what=f"{count} SMS in the outbox")
    return result


@pytest.mark.parametrize(
    ("site_extra", "last_line"),
    [
        ({"domain": "shop.example"}, "@shop.example #{code}"),
        ({"return_url": "https://www.acme.test/welcome?from=sms"}, "@www.acme.test #{code}"),
        ({}, None),
    ],
)
async def test_console_sms_lands_in_the_outbox_with_the_autofill_line(
    open_app: OpenApp, site_extra: dict[str, Any], last_line: str | None
) -> None:
    client, _ = await open_app(
        dev=True,
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["email", "sms"], **site_extra)],
    )
    vid = (await accepted(await sms_signup(client)))["id"]
    [entry] = await outbox_sms(client)
    assert entry["to"] == E164
    text = entry["text"]
    match = re.search(
        r"Acme Shop: your verification code is (\d{6})\. It expires in 10 minutes", text
    )
    assert match, text
    code = match.group(1)
    lines = text.splitlines()
    if last_line is None:
        assert not any(line.startswith("@") for line in lines)
    else:
        assert lines[-1] == last_line.format(code=code)

    await delivery_in(client, vid, "sent")
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"


@pytest.mark.parametrize(
    ("data", "site_extra"),
    [({"locale": "zh-CN"}, {}), ({}, {"default_locale": "zh"})],
)
async def test_console_sms_in_chinese(
    open_app: OpenApp, data: dict[str, Any], site_extra: dict[str, Any]
) -> None:
    client, _ = await open_app(
        dev=True,
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["sms"], domain="shop.example", **site_extra)],
    )
    created = await accepted(await sms_signup(client, **data))
    assert created["locale"] == "zh"
    [entry] = await outbox_sms(client)
    text = entry["text"]
    match = re.search(r"【Acme Shop】您的验证码是(\d{6})，10分钟内有效", text)
    assert match, text
    code = match.group(1)
    assert "your verification code" not in text
    assert text.splitlines()[-1] == f"@shop.example #{code}"
    check = await client.post(
        f"/v1/verifications/{created['id']}/check", json={"code": code}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"


# -- what the webhook refuses ---------------------------------------------------------------


async def test_prefix_limit_answers_429_and_spares_other_ranges(open_app: OpenApp) -> None:
    client, _ = await open_app(
        worker=False,
        sms={
            "provider": "console",
            "allow_console_in_production": True,
            "sends_per_prefix_per_hour": 2,
        },
        sites=[
            site(channels=["email", "sms"]),
            site("other", OTHER_SECRET, OTHER_API_KEY, channels=["sms"], name="Other"),
        ],
    )
    await accepted(await sms_signup(client, "138 0013 8000", user_id="u-1"))
    await accepted(await sms_signup(client, "+86 138 0013 8001", user_id="u-2"))

    third = await sms_signup(client, "138 0013 8002", user_id="u-3")
    assert third.status == 429
    assert third.content_type == "application/problem+json"
    retry_after = int(third.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    text = await third.text()
    assert "13800138002" not in text and "0013 8002" not in text
    assert (await third.json())["status"] == 429

    # The limit is per number range, across sites.
    from_other = await sms_signup(
        client, "138 0013 8003", site_id="other", secret=OTHER_SECRET, user_id="x-1"
    )
    assert from_other.status == 429
    assert "Retry-After" in from_other.headers

    # Another range, and other channels, are not affected.
    await accepted(await sms_signup(client, OTHER_RAW, user_id="u-4"))
    by_email = await post_event(client, signup_event(user_id="u-5"))
    assert by_email.status == 202


async def test_prefix_limit_zero_is_off(open_app: OpenApp) -> None:
    client, _ = await open_app(
        worker=False,
        sms={
            "provider": "console",
            "allow_console_in_production": True,
            "sends_per_prefix_per_hour": 0,
        },
        sites=[site(channels=["sms"])],
    )
    for n in range(4):
        await accepted(await sms_signup(client, f"138 0013 800{n}", user_id=f"u-{n}"))


async def test_sms_channel_unavailable_without_a_provider(open_app: OpenApp) -> None:
    client, _ = await open_app(
        worker=False, sms={"provider": "none"}, sites=[site(channels=["email", "sms"])]
    )
    response = await sms_signup(client)
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["type"].endswith("channel-unavailable")
    assert [e["field"] for e in problem["errors"]] == ["data.channel"]
    assert NATIONAL not in await response.text()


async def test_sms_channel_unavailable_when_the_site_does_not_allow_it(
    open_app: OpenApp,
) -> None:
    client, _ = await open_app(
        worker=False,
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["email"])],
    )
    response = await sms_signup(client)
    assert response.status == 422
    assert (await response.json())["type"].endswith("channel-unavailable")


async def test_sms_channel_needs_a_phone(open_app: OpenApp) -> None:
    client, _ = await open_app(
        worker=False,
        sms={"provider": "console", "allow_console_in_production": True},
        sites=[site(channels=["email", "sms"])],
    )
    response = await post_event(client, signup_event(channel="sms"))  # an email, no phone
    assert response.status == 422
    problem = await response.json()
    assert problem["type"].endswith("validation")
    assert problem["detail"].startswith("data.phone")
    assert [e["field"] for e in problem["errors"]] == ["data.phone"]


async def test_sms_payload_reaching_ronglian_is_json_with_the_template(
    open_app: OpenApp, ronglian: RonglianEmulator
) -> None:
    # The same signup twice (the site retried its webhook): one text, one verification.
    client, _ = await ronglian_app(open_app, ronglian)
    event = signup_event(channel="sms", phone=RAW, email=None)
    first = await post_event(client, event, msg_id="msg_sms_1")
    again = await post_event(client, event, msg_id="msg_sms_1")
    assert first.status == again.status == 202
    assert (await first.json())["id"] == (await again.json())["id"]
    [sms] = await ronglian.wait_for_messages(1)
    await delivery_in(client, (await first.json())["id"], "sent")
    assert ronglian.received == 1
    body = json.loads(ronglian.requests[0].body)
    assert body["templateId"] == TEMPLATE
    assert body["datas"] == sms.datas


async def test_an_email_signup_resent_by_sms_and_back_by_email_reaches_both(
    open_app: OpenApp, ronglian: RonglianEmulator, smtp: SmtpSink
) -> None:
    client, _ = await open_app(
        sms={"provider": "ronglian", "ronglian": ronglian.settings()},
        sites=[site(channels=["email", "sms"], domain="shop.example")],
        codes={"resend_cooldown_seconds": 0},
    )
    created = await accepted(await post_event(client, signup_event(phone=RAW)))
    vid = created["id"]
    await smtp.wait_for_messages(1)

    by_sms = await client.post(
        f"/v1/verifications/{vid}/resend", json={"channel": "sms"}, headers=auth()
    )
    assert by_sms.status == 202, await by_sms.text()
    [sms] = await ronglian.wait_for_messages(1)
    assert sms.to == NATIONAL

    # The address was implied by the first destination; it must survive the switch.
    by_email = await client.post(
        f"/v1/verifications/{vid}/resend", json={"channel": "email"}, headers=auth()
    )
    assert by_email.status == 202, await by_email.text()
    messages = await smtp.wait_for_messages(2)
    assert [m["To"] for m in messages] == ["alice@example.com", "alice@example.com"]
    resource = await get_verification(client, vid)
    assert [d["channel"] for d in resource["deliveries"]] == ["email", "sms", "email"]
    assert resource["destination"].endswith("@example.com")
