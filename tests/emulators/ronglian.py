"""A local Ronglian (容联云通讯) template-SMS endpoint, as strict as the real one.

Usage::

    async with RonglianEmulator() as ronglian:
        sender = RonglianSender(ronglian.settings())
        await sender.send(message)
        assert ronglian.messages[0].datas == ["123456", "10"]

It checks what the real service checks, independently of Tidings' client (its own
signature code): the path and account, ``Authorization`` (Base64 of ``sid:timestamp``),
the timestamp's 24 h window (Beijing time), ``sig`` (upper-case MD5 of
sid + token + timestamp), a JSON body, ``appId``, ``templateId`` (known, belonging to the
app, with the right number of ``datas``) and ``to``. A rejected request gets HTTP 200 and
``{"statusCode": …, "statusMsg": …}`` like Ronglian.

Status codes 111109, 111141, 111181, 112300/112307/112308, 112311, 1600xx come from the
table in the project notes; 111104-111108 and 111110 (Authorization problems, stale
timestamp) are this emulator's plausible choices, not confirmed Ronglian codes.

Faults are scripted per request with :meth:`RonglianEmulator.fail_next`:

- ``"timeout"``: read the request, then never answer (until :meth:`release` or
  :meth:`stop`); the client's own timeout fires.
- ``"drop"``: read the request, then close the connection without answering.
- ``"500"`` (or any 5xx): answer with that HTTP status and a non-JSON body.
- ``"garbled"``: answer HTTP 200 with a body that is not JSON (cut short, as by a proxy
  or a dropped connection after the headers), so the outcome cannot be read.
- a six-digit status code (``"160038"``, ``"160042"``, …): answer it with HTTP 200.

A scripted fault is used by the next request that reaches the endpoint, whatever it
contains; a request answered with a fault is never recorded in :attr:`messages`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import SecretStr

from config.settings import RonglianSettings, RonglianTemplate

PATH = re.compile(r"^/2013-12-26/Accounts/(?P<sid>[^/]+)/SMS/TemplateSMS$")
MAINLAND = re.compile(r"^1[3-9]\d{9}$")
INTERNATIONAL = re.compile(r"^00(?!86)[1-9]\d{6,14}$")
MAX_RECIPIENTS = 200
TIMESTAMP_WINDOW = timedelta(hours=24)

STATUS_MESSAGES = {
    "000000": "成功",
    "111104": "请求包头Authorization参数为空",
    "111105": "请求包头Authorization参数Base64解码失败",
    "111106": "请求包头Authorization参数解码后格式有误",
    "111107": "请求包头Authorization参数解码后账户ID与请求地址不一致",
    "111108": "请求包头Authorization参数解码后时间戳格式有误",
    "111109": "请求地址Sig校验失败",
    "111110": "请求时间戳已过期",
    "111141": "主账户不存在",
    "111181": "应用不存在",
    "112300": "接收短信的手机号码为空",
    "112307": "模板ID为空",
    "112308": "模板短信数据为空",
    "112310": "应用未上线(只能使用测试号码)",
    "112311": "模板不存在",
    "160000": "系统错误",
    "160014": "余额不足",
    "160031": "参数解析失败",
    "160032": "短信模板无效",
    "160038": "短信验证码发送过频繁",
    "160039": "超出同模板同号天发送次数上限",
    "160040": "验证码超出同模板同号码天发送上限",
    "160041": "通知超出同模板同号码天发送上限",
    "160042": "号码格式有误",
    "160043": "应用与模板id不匹配",
    "160050": "短信发送失败",
}


def _beijing() -> tzinfo:
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=8), "CST")


def expected_sig(account_sid: str, auth_token: str, timestamp: str) -> str:
    """The ``sig`` Ronglian expects: upper-case hex MD5 of sid + token + timestamp."""
    plain = f"{account_sid}{auth_token}{timestamp}".encode()
    return hashlib.md5(plain, usedforsecurity=False).hexdigest().upper()


def beijing_timestamp(at: datetime) -> str:
    """``at`` as ``yyyyMMddHHmmss`` in Beijing time."""
    return at.astimezone(_beijing()).strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True, slots=True)
class SentSms:
    """A message the emulator accepted (answered ``000000``)."""

    to: str  # exactly as sent in the body, e.g. "13800138000" or "00447911123456"
    app_id: str
    template_id: str
    datas: list[str]
    sid: str  # the smsMessageSid returned
    at: datetime  # when it was accepted (UTC)


@dataclass(slots=True)
class ReceivedRequest:
    """Anything that reached the endpoint, accepted or not, and how it was answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    fault: str | None  # the scripted fault used on it, if any
    status_code: str | None = None  # the statusCode answered, if a JSON answer was sent
    timestamp: str | None = None  # from Authorization, once decoded

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(slots=True)
class _App:
    templates: dict[str, int] = field(default_factory=dict)  # template id -> datas count


class _Rejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class RonglianEmulator:
    """Ronglian's template-SMS endpoint on ``127.0.0.1`` and a random port.

    One account (``account_sid``/``auth_token``) with one app (``app_id``) whose
    templates map template id -> number of ``datas``; the default is Ronglian's built-in
    test template ``"1"`` with two (code, minutes). ``clock`` (aware datetimes) is the
    emulator's idea of now, for timestamp checks.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        app_id: str | None = None,
        templates: Mapping[str, int] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Configure the account; nothing listens until :meth:`start`."""
        self.account_sid = account_sid or secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.app_id = app_id or secrets.token_hex(16)
        self._apps: dict[str, _App] = {
            self.app_id: _App(dict(templates) if templates is not None else {"1": 2})
        }
        self._clock = clock or (lambda: datetime.now(UTC))
        self.messages: list[SentSms] = []
        self.requests: list[ReceivedRequest] = []
        self._faults: deque[str] = deque()
        self._release = asyncio.Event()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- configuration -------------------------------------------------------------------

    def add_template(self, template_id: str, params: int = 2, *, app_id: str | None = None) -> None:
        """Declare a template with ``params`` datas; under another app (created) if given.

        A template of another app is answered ``160043`` when used with :attr:`app_id`.
        """
        self._apps.setdefault(app_id or self.app_id, _App()).templates[template_id] = params

    def fail_next(self, *faults: str) -> None:
        """Script the answers to the next requests, one fault per request, in order.

        Each fault is ``"timeout"``, ``"drop"``, ``"garbled"``, an HTTP 5xx status
        (``"500"``) or a six-digit Ronglian status code (``"160038"``).
        """
        for fault in faults:
            if not (
                fault in ("timeout", "drop", "garbled")
                or re.fullmatch(r"5\d\d", fault)
                or re.fullmatch(r"\d{6}", fault)
            ):
                raise ValueError(f"unknown fault {fault!r}")
        self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        """Scripted faults not used yet."""
        return len(self._faults)

    def release(self) -> None:
        """Let requests held by a ``"timeout"`` fault finish (their client is long gone)."""
        self._release.set()

    # -- what tests read -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, for :attr:`RonglianSettings.base_url`."""
        if self._port is None:
            raise RuntimeError("the Ronglian emulator is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def received(self) -> int:
        """How many requests reached the endpoint, failed and faulted ones included."""
        return len(self.requests)

    def settings(self, **overrides: Any) -> RonglianSettings:
        """:class:`RonglianSettings` pointing at this emulator, with short timeouts.

        The ``"verification"`` purpose uses the first template; ``overrides`` replace any
        field (``timeout_seconds=0.5``, ``auth_token=SecretStr("wrong")``, …).
        """
        first = next(iter(self._apps[self.app_id].templates), "1")
        values: dict[str, Any] = {
            "account_sid": self.account_sid,
            "auth_token": SecretStr(self.auth_token),
            "app_id": self.app_id,
            "base_url": self.url,
            "templates": {"verification": RonglianTemplate(id=first)},
            "connect_timeout_seconds": 2.0,
            "timeout_seconds": 5.0,
        }
        values.update(overrides)
        return RonglianSettings(**values)

    def env(self, prefix: str = "TIDINGS_SMS__") -> dict[str, str]:
        """Environment variables selecting Ronglian at this emulator, for child processes."""
        s = self.settings()
        r = f"{prefix}RONGLIAN__"
        return {
            f"{prefix}PROVIDER": "ronglian",
            f"{r}ACCOUNT_SID": s.account_sid,
            f"{r}AUTH_TOKEN": s.auth_token.get_secret_value(),
            f"{r}APP_ID": s.app_id,
            f"{r}BASE_URL": s.base_url,
            f"{r}TEMPLATES": json.dumps({k: t.model_dump() for k, t in s.templates.items()}),
            f"{r}CONNECT_TIMEOUT_SECONDS": str(s.connect_timeout_seconds),
            f"{r}TIMEOUT_SECONDS": str(s.timeout_seconds),
        }

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived; AssertionError after ``timeout``."""
        return await self._wait(lambda: self.received >= count, timeout, f"{count} request(s)")

    async def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[SentSms]:
        """Wait until at least ``count`` messages were accepted; AssertionError after ``timeout``."""
        await self._wait(lambda: len(self.messages) >= count, timeout, f"{count} SMS")
        return self.messages

    async def _wait(
        self, predicate: Callable[[], bool], timeout: float, what: str
    ) -> list[ReceivedRequest]:
        if self._changed is None:
            raise RuntimeError("the Ronglian emulator is not started")
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"Ronglian emulator: timed out after {timeout}s waiting for {what} "
                    f"(received {self.received}, accepted {len(self.messages)})"
                ) from None
        return self.requests

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a random port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._port = int(port)

    async def stop(self) -> None:
        """Release held requests and stop listening; the port is closed afterwards."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        await self.stop()

    # -- the endpoint ------------------------------------------------------------------------

    async def _record(self, request: ReceivedRequest) -> None:
        assert self._changed is not None
        async with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._faults.popleft() if self._faults else None
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            fault=fault,
        )
        await self._record(received)
        if fault == "timeout":
            await self._release.wait()
            return web.Response(status=504, text="released by the test")
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            # Nothing can be answered now; aiohttp drops this response quietly.
            return web.Response(status=500)
        if fault == "garbled":
            return web.Response(
                status=200,
                text='{"statusCode":"000000","templateSMS":{"dateCr',
                content_type="application/json",
            )
        if fault is not None and len(fault) == 3:
            return web.Response(
                status=int(fault), text=f"{fault} Internal Server Error", content_type="text/html"
            )
        match = PATH.match(request.path)
        if match is None:
            return web.Response(status=404, text="Not Found")
        if request.method != "POST":
            return web.Response(status=405, text="Method Not Allowed")
        try:
            if fault is not None:
                raise _Rejected(fault)
            message = self._check(request, match.group("sid"), body, received)
        except _Rejected as rejected:
            received.status_code = rejected.code
            return self._answer(
                {
                    "statusCode": rejected.code,
                    "statusMsg": STATUS_MESSAGES.get(rejected.code, "错误"),
                }
            )
        received.status_code = "000000"
        assert self._changed is not None
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return self._answer(
            {
                "statusCode": "000000",
                "templateSMS": {
                    "dateCreated": beijing_timestamp(message.at),
                    "smsMessageSid": message.sid,
                },
            }
        )

    @staticmethod
    def _answer(payload: dict[str, Any]) -> web.Response:
        return web.Response(
            text=json.dumps(payload, ensure_ascii=False),
            content_type="application/json",
            charset="utf-8",
        )

    def _check(
        self, request: web.Request, sid: str, body: bytes, received: ReceivedRequest
    ) -> SentSms:
        """The accepted message, or :class:`_Rejected` with Ronglian's status code."""
        if sid != self.account_sid:
            raise _Rejected("111141")
        timestamp = self._check_authorization(request.headers.get("Authorization"), sid)
        received.timestamp = timestamp
        sig = request.query.get("sig", "")
        if not secrets.compare_digest(sig, expected_sig(sid, self.auth_token, timestamp)):
            raise _Rejected("111109")
        if request.content_type != "application/json":
            raise _Rejected("160031")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Rejected("160031") from None
        if not isinstance(data, dict):
            raise _Rejected("160031")
        app_id = data.get("appId")
        if not isinstance(app_id, str) or app_id not in self._apps:
            raise _Rejected("111181")
        template_id = data.get("templateId")
        if not isinstance(template_id, str) or not template_id:
            raise _Rejected("112307")
        templates = self._apps[app_id].templates
        if template_id not in templates:
            elsewhere = any(template_id in app.templates for app in self._apps.values())
            raise _Rejected("160043" if elsewhere else "112311")
        to = data.get("to")
        if not isinstance(to, str) or not to.strip():
            raise _Rejected("112300")
        numbers = to.split(",")
        if len(numbers) > MAX_RECIPIENTS or not all(
            MAINLAND.match(n) or INTERNATIONAL.match(n) for n in numbers
        ):
            raise _Rejected("160042")
        datas = data.get("datas", [])
        if not isinstance(datas, list) or not all(isinstance(d, str) for d in datas):
            raise _Rejected("160031")
        if templates[template_id] and not datas:
            raise _Rejected("112308")
        if len(datas) != templates[template_id]:
            raise _Rejected("160032")
        return SentSms(
            to=to,
            app_id=app_id,
            template_id=template_id,
            datas=list(datas),
            sid=secrets.token_hex(16),
            at=self._clock().astimezone(UTC),
        )

    def _check_authorization(self, header: str | None, sid: str) -> str:
        """The timestamp from a valid ``Authorization`` header for ``sid``."""
        if not header:
            raise _Rejected("111104")
        try:
            decoded = base64.b64decode(header.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _Rejected("111105") from None
        account, colon, timestamp = decoded.partition(":")
        if not colon:
            raise _Rejected("111106")
        if account != sid:
            raise _Rejected("111107")
        if not re.fullmatch(r"\d{14}", timestamp):
            raise _Rejected("111108")
        try:
            at = datetime.strptime(timestamp, "%Y%m%d%H%M%S").replace(tzinfo=_beijing())
        except ValueError:
            raise _Rejected("111108") from None
        if abs(self._clock() - at) > TIMESTAMP_WINDOW:
            raise _Rejected("111110")
        return timestamp
