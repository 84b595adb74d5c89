"""The Ronglian SMS client against a local emulator that checks what Ronglian checks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from config.settings import RonglianTemplate
from tasks.errors import DeliveryError
from tasks.sms.base import SmsMessage
from tasks.sms.ronglian import RonglianSender
from tests.emulators.ronglian import RonglianEmulator
from tidings.embedded_redis import free_port

CODE = "739251"
PHONE = "+8613800138000"
NATIONAL = "13800138000"


def sms(to: str = PHONE, **params: str) -> SmsMessage:
    values = {"code": CODE, "minutes": "10", "site_name": "Acme", **params}
    return SmsMessage(to=to, purpose="verification", params=values, text=f"Your code is {CODE}")


@pytest.fixture
async def ronglian() -> AsyncIterator[RonglianEmulator]:
    async with RonglianEmulator() as emulator:
        yield emulator


async def send_failing(sender: RonglianSender, message: SmsMessage) -> DeliveryError:
    try:
        with pytest.raises(DeliveryError) as caught:
            await sender.send(message)
    finally:
        await sender.close()
    return caught.value


@contextlib.contextmanager
def port_that_never_accepts() -> Iterator[int]:
    """A local port whose accept queue is full: new connections hang until they time out."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        for _ in range(3):  # fill the queue; later SYNs are dropped, not refused
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port


def stamp(at: datetime) -> str:
    # Beijing is UTC+8 all year; computed here without the client's time zone code.
    return (at.astimezone(UTC) + timedelta(hours=8)).strftime("%Y%m%d%H%M%S")


async def post_by_hand(
    emulator: RonglianEmulator,
    timestamp: str,
    *,
    token: str | None = None,
    authorization: str | None = None,
    content_type: str = "application/json;charset=utf-8",
    body: dict[str, object] | None = None,
) -> dict[str, object]:
    """One request built here, independently of the client; returns the JSON answer."""
    sid = emulator.account_sid
    plain = f"{sid}{token or emulator.auth_token}{timestamp}".encode()
    sig = hashlib.md5(plain, usedforsecurity=False).hexdigest().upper()
    if authorization is None:
        authorization = base64.b64encode(f"{sid}:{timestamp}".encode()).decode()
    payload = body or {
        "to": NATIONAL,
        "appId": emulator.app_id,
        "templateId": "1",
        "datas": [CODE, "10"],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{emulator.url}/2013-12-26/Accounts/{sid}/SMS/TemplateSMS?sig={sig}",
            data=json.dumps(payload),
            headers={
                "Accept": "application/json",
                "Content-Type": content_type,
                "Authorization": authorization,
            },
        ) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    assert isinstance(answer, dict)
    return answer


# -- success ------------------------------------------------------------------------------


async def test_sends_the_template_with_code_and_minutes(ronglian: RonglianEmulator) -> None:
    sender = RonglianSender(ronglian.settings())
    try:
        sid = await sender.send(sms())
    finally:
        await sender.close()

    [message] = ronglian.messages
    assert sid == message.sid
    assert len(sid) == 32
    [request] = ronglian.requests
    assert request.json() == {
        "to": NATIONAL,
        "appId": ronglian.app_id,
        "templateId": "1",
        "datas": [CODE, "10"],
    }
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json;charset=utf-8"
    assert not request.headers["Authorization"].startswith("Basic")
    assert request.status_code == "000000"


async def test_numbers_outside_china_get_00_and_the_country_code(
    ronglian: RonglianEmulator,
) -> None:
    sender = RonglianSender(ronglian.settings())
    try:
        await sender.send(sms("+447911123456"))
        await sender.send(sms("+390612345678"))  # Italian leading zero kept
    finally:
        await sender.close()

    assert [m.to for m in ronglian.messages] == ["00447911123456", "00390612345678"]


async def test_timestamp_is_beijing_time(ronglian: RonglianEmulator) -> None:
    # 16:30 UTC is already the next day in Beijing.
    at = datetime.now(UTC).replace(hour=16, minute=30, second=0, microsecond=0)
    if at > datetime.now(UTC):
        at -= timedelta(days=1)
    sender = RonglianSender(ronglian.settings(), clock=lambda: at)
    try:
        await sender.send(sms())
    finally:
        await sender.close()

    assert ronglian.requests[0].timestamp == stamp(at)
    assert ronglian.requests[0].timestamp.endswith("003000")


async def test_template_without_variables_sends_no_datas(ronglian: RonglianEmulator) -> None:
    ronglian.add_template("2", params=0)
    settings = ronglian.settings(templates={"verification": RonglianTemplate(id="2", datas=[])})
    sender = RonglianSender(settings)
    try:
        await sender.send(sms())
    finally:
        await sender.close()

    assert "datas" not in ronglian.requests[0].json()
    assert ronglian.messages[0].template_id == "2"


async def test_datas_follow_the_configured_template(ronglian: RonglianEmulator) -> None:
    ronglian.add_template("7", params=3)
    settings = ronglian.settings(
        templates={
            "verification": RonglianTemplate(id="7", datas=["{site_name}", "{code}", "{minutes}"])
        }
    )
    sender = RonglianSender(settings)
    try:
        await sender.send(sms(site_name="極速商店"))
    finally:
        await sender.close()

    assert ronglian.messages[0].datas == ["極速商店", CODE, "10"]


# -- refused before anything is sent --------------------------------------------------------


async def test_missing_placeholder_is_final_and_named(ronglian: RonglianEmulator) -> None:
    settings = ronglian.settings(
        templates={"verification": RonglianTemplate(id="1", datas=["{code}", "{domain}"])}
    )
    error = await send_failing(RonglianSender(settings), sms())

    assert not error.retryable
    assert "{domain}" in error.reason
    assert CODE not in error.reason
    assert ronglian.received == 0


async def test_purpose_without_template_is_final(ronglian: RonglianEmulator) -> None:
    message = SmsMessage(to=PHONE, purpose="newsletter", params={"code": CODE}, text="")
    error = await send_failing(RonglianSender(ronglian.settings()), message)

    assert not error.retryable
    assert "newsletter" in error.reason
    assert ronglian.received == 0


async def test_a_reminder_uses_the_verification_template_unless_it_has_its_own(
    ronglian: RonglianEmulator,
) -> None:
    params = {"code": CODE, "minutes": "10"}
    message = SmsMessage(to=PHONE, purpose="reminder", params=params, text="")
    sender = RonglianSender(ronglian.settings())
    try:
        await sender.send(message)
    finally:
        await sender.close()
    [sent] = ronglian.messages
    assert (sent.template_id, sent.datas) == ("1", [CODE, "10"])


async def test_unparseable_number_is_final(ronglian: RonglianEmulator) -> None:
    error = await send_failing(RonglianSender(ronglian.settings()), sms("13800138000"))

    assert not error.retryable
    assert "13800138000" not in error.reason
    assert ronglian.received == 0


# -- Ronglian says no -------------------------------------------------------------------------


async def test_wrong_token_fails_the_sig_check(ronglian: RonglianEmulator) -> None:
    sender = RonglianSender(ronglian.settings(auth_token=SecretStr("0" * 32)))
    error = await send_failing(sender, sms())

    assert not error.retryable
    assert error.reason.startswith("Ronglian 111109:")
    assert ronglian.messages == []
    assert ronglian.received == 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"account_sid": "f" * 32}, "111141"),
        ({"app_id": "e" * 32}, "111181"),
        ({"templates": {"verification": RonglianTemplate(id="404")}}, "112311"),
        ({"templates": {"verification": RonglianTemplate(id="9")}}, "160043"),
        ({"templates": {"verification": RonglianTemplate(id="1", datas=["{code}"])}}, "160032"),
    ],
)
async def test_account_app_and_template_problems_are_final(
    ronglian: RonglianEmulator, change: dict[str, object], code: str
) -> None:
    ronglian.add_template("9", app_id="another-app")
    error = await send_failing(RonglianSender(ronglian.settings(**change)), sms())

    assert not error.retryable
    assert error.reason.startswith(f"Ronglian {code}:")
    assert ronglian.messages == []


async def test_number_ronglian_cannot_take_is_final(ronglian: RonglianEmulator) -> None:
    # A Beijing landline: a valid E.164 number, but not a mobile the emulator accepts.
    error = await send_failing(RonglianSender(ronglian.settings()), sms("+861012345678"))

    assert not error.retryable
    assert error.reason == "Ronglian 160042: 号码格式有误"


@pytest.mark.parametrize(
    ("fault", "retryable"),
    [
        ("500", True),
        ("503", True),
        ("160000", True),
        ("160038", True),
        ("160050", True),
        ("160042", False),
        ("160039", False),
        ("160040", False),
        ("160041", False),
        ("160014", False),
        ("112310", False),
        ("123456", False),  # a code nobody documented: final
    ],
)
async def test_answers_are_classified(
    ronglian: RonglianEmulator, fault: str, retryable: bool
) -> None:
    ronglian.fail_next(fault)
    error = await send_failing(RonglianSender(ronglian.settings()), sms())

    assert error.retryable is retryable
    assert ronglian.received == 1
    assert ronglian.messages == []
    if len(fault) == 6:
        assert error.reason.startswith(f"Ronglian {fault}: ")
    else:
        assert f"HTTP {fault}" in error.reason
    assert len(error.reason) <= 200


@pytest.mark.parametrize(("status", "retryable"), [(200, False), (502, True), (403, False)])
async def test_answers_that_are_not_ronglian_json(
    ronglian: RonglianEmulator, status: int, retryable: bool
) -> None:
    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=status, text="<html>gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/{tail:.*}", proxy_page)
    async with TestServer(app, host="127.0.0.1") as server:
        settings = ronglian.settings(base_url=str(server.make_url("")).rstrip("/"))
        error = await send_failing(RonglianSender(settings), sms())

    assert error.retryable is retryable
    assert error.reason.startswith(f"Ronglian HTTP {status}: ")


async def test_next_send_after_a_fault_goes_through(ronglian: RonglianEmulator) -> None:
    ronglian.fail_next("160038")
    sender = RonglianSender(ronglian.settings())
    try:
        with pytest.raises(DeliveryError):
            await sender.send(sms())
        sid = await sender.send(sms())
    finally:
        await sender.close()

    assert [m.sid for m in ronglian.messages] == [sid]
    assert ronglian.received == 2


# -- no answer ----------------------------------------------------------------------------------


async def test_read_timeout_is_final_and_not_retried(ronglian: RonglianEmulator) -> None:
    ronglian.fail_next("timeout")
    sender = RonglianSender(ronglian.settings(timeout_seconds=0.5))
    started = time.monotonic()
    error = await send_failing(sender, sms())

    assert time.monotonic() - started < 3
    assert not error.retryable
    assert "may have been sent" in error.reason
    assert ronglian.received == 1
    assert ronglian.requests[0].fault == "timeout"


async def test_dropped_connection_after_sending_is_final(ronglian: RonglianEmulator) -> None:
    ronglian.fail_next("drop")
    error = await send_failing(RonglianSender(ronglian.settings()), sms())

    assert not error.retryable
    assert "may have been sent" in error.reason
    assert ronglian.received == 1


async def test_connection_refused_is_retryable(ronglian: RonglianEmulator) -> None:
    settings = ronglian.settings(base_url=f"http://127.0.0.1:{free_port()}")
    error = await send_failing(RonglianSender(settings), sms())

    assert error.retryable
    assert "could not connect" in error.reason
    assert ronglian.received == 0


async def test_connect_timeout_is_retryable_and_hides_the_url(
    ronglian: RonglianEmulator,
) -> None:
    with port_that_never_accepts() as port:
        settings = ronglian.settings(
            base_url=f"http://127.0.0.1:{port}", connect_timeout_seconds=0.2
        )
        sender = RonglianSender(settings)
        started = time.monotonic()
        error = await send_failing(sender, sms())

    assert time.monotonic() - started < 3
    assert error.retryable
    assert error.reason == "could not connect to Ronglian (ConnectionTimeoutError)"
    # aiohttp's own message for this error contains the URL, sig included.
    assert "sig=" not in "".join(traceback.format_exception(error))


async def test_invalid_base_url_is_final(ronglian: RonglianEmulator) -> None:
    error = await send_failing(RonglianSender(ronglian.settings(base_url="ftp://x")), sms())

    assert not error.retryable
    assert "base_url" in error.reason
    assert ronglian.received == 0


async def test_sender_can_be_reused_after_close(ronglian: RonglianEmulator) -> None:
    sender = RonglianSender(ronglian.settings())
    await sender.start()
    await sender.send(sms())
    await sender.close()
    try:
        await sender.send(sms())
    finally:
        await sender.close()

    assert len(ronglian.messages) == 2


# -- the emulator is as strict as Ronglian --------------------------------------------------------


async def test_emulator_rejects_a_stale_timestamp(ronglian: RonglianEmulator) -> None:
    now = datetime.now(UTC)
    fresh = await post_by_hand(ronglian, stamp(now))
    stale = await post_by_hand(ronglian, stamp(now - timedelta(hours=25)))

    assert fresh["statusCode"] == "000000"
    assert stale["statusCode"] == "111110"
    assert len(ronglian.messages) == 1


async def test_sender_with_a_stale_clock_is_refused(ronglian: RonglianEmulator) -> None:
    old = datetime.now(UTC) - timedelta(hours=25)
    error = await send_failing(RonglianSender(ronglian.settings(), clock=lambda: old), sms())

    assert not error.retryable
    assert error.reason.startswith("Ronglian 111110:")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"token": "not-the-token"}, "111109"),
        ({"authorization": ""}, "111104"),
        ({"authorization": "Basic xyz"}, "111105"),
        ({"authorization": base64.b64encode(b"no-colon").decode()}, "111106"),
        ({"authorization": base64.b64encode(b"other:20240101000000").decode()}, "111107"),
        ({"content_type": "text/plain"}, "160031"),
        ({"body": {"appId": "x", "templateId": "1", "to": NATIONAL}}, "111181"),
        ({"body": {"templateId": "1", "to": NATIONAL}}, "111181"),
        ({"body": {"appId": "APP", "to": NATIONAL}}, "112307"),
        ({"body": {"appId": "APP", "templateId": "1"}}, "112300"),
        ({"body": {"appId": "APP", "templateId": "1", "to": NATIONAL}}, "112308"),
        ({"body": {"appId": "APP", "templateId": "1", "to": "+8613800138000"}}, "160042"),
    ],
)
async def test_emulator_checks_requests(
    ronglian: RonglianEmulator, change: dict[str, object], code: str
) -> None:
    body = change.get("body")
    if isinstance(body, dict):
        body = {k: ronglian.app_id if v == "APP" else v for k, v in body.items()}
        if "datas" not in body and code != "112308":
            body["datas"] = [CODE, "10"]
        change = {**change, "body": body}
    answer = await post_by_hand(ronglian, stamp(datetime.now(UTC)), **change)  # type: ignore[arg-type]

    assert answer["statusCode"] == code
    assert ronglian.messages == []


async def test_emulator_rejects_unknown_faults(ronglian: RonglianEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        ronglian.fail_next("slow")


# -- secrets stay secret -----------------------------------------------------------------------


async def test_no_secret_in_reasons_tracebacks_or_logs(
    ronglian: RonglianEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = f"http://127.0.0.1:{free_port()}"
    errors: list[DeliveryError] = []
    sender = RonglianSender(ronglian.settings(timeout_seconds=0.5))
    try:
        await sender.send(sms())
        for fault in ("timeout", "drop", "500", "160042", "160038"):
            ronglian.fail_next(fault)
            with pytest.raises(DeliveryError) as caught:
                await sender.send(sms())
            errors.append(caught.value)
    finally:
        await sender.close()
    with port_that_never_accepts() as port:
        never_accepts = f"http://127.0.0.1:{port}"
        for settings in (
            ronglian.settings(base_url=closed),
            ronglian.settings(auth_token=SecretStr("0" * 32)),
            ronglian.settings(connect_timeout_seconds=0.2, base_url=never_accepts),
        ):
            errors.append(await send_failing(RonglianSender(settings), sms()))

    secrets = {ronglian.auth_token, "0" * 32, CODE, NATIONAL, PHONE, PHONE[1:]}
    for request in ronglian.requests:
        secrets.add(request.query["sig"])
        secrets.add(request.headers["Authorization"])
    assert len(errors) == 8
    assert errors[-1].reason == "could not connect to Ronglian (ConnectionTimeoutError)"
    texts = [
        "".join(traceback.format_exception(error)) + repr(error) + error.reason for error in errors
    ]
    texts += [str(record.__dict__) for record in caplog.records]
    assert any("+86****00" in text for text in texts)  # the masked number is logged
    for text in texts:
        assert "sig=" not in text
        for secret in secrets:
            assert secret not in text
