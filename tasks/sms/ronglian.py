"""Ronglian Cloud (容联云通讯) template SMS over aiohttp.

The protocol (``POST /2013-12-26/Accounts/{accountSid}/SMS/TemplateSMS?sig=…``) is small
enough to implement here rather than wrap the official SDK, which blocks, prints the auth
token and turns every failure, a read timeout included, into the same ``172001``.

Whether a failure may be retried depends on whether the request can have reached
Ronglian: a connection that was never made sent nothing and is safe to try again, but a
request that timed out or lost its connection after it was written may have been
delivered, so retrying could send the person a second text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import phonenumbers

from config.settings import RonglianSettings, RonglianTemplate
from tasks.errors import DeliveryError
from tasks.sms.base import SmsMessage
from verification.models import mask_destination

logger = logging.getLogger(__name__)

API_VERSION = "2013-12-26"
SUCCESS = "000000"
# Status codes after which trying again later may succeed; every other code is final.
# 160000: system error; 160038: verification SMS sent too frequently (a short cooldown
# configured in the console); 160050: send failed.
RETRYABLE_CODES = frozenset({"160000", "160038", "160050"})
# Used in the reason when Ronglian's answer has no statusMsg.
KNOWN_CODES = {
    "111109": "sig check failed",
    "111141": "account does not exist",
    "111181": "app does not exist",
    "112310": "app not launched, only test numbers allowed",
    "112311": "template not found",
    "160000": "system error",
    "160014": "insufficient balance",
    "160038": "verification SMS sent too frequently",
    "160039": "daily cap for this template and number",
    "160040": "daily cap for verification codes to this number",
    "160041": "daily cap for notifications to this number",
    "160042": "bad number format",
    "160043": "app and template do not match",
    "160050": "send failed",
}
MAX_REASON = 200
MAX_ANSWER_BYTES = 65_536
NO_ANSWER = "no answer from Ronglian; the SMS may have been sent, not retried"


@functools.cache
def _shanghai() -> tzinfo:
    # Ronglian checks the timestamp in Beijing time. China has had no DST since 1991, so a
    # fixed +08:00 is exact if the system has no time zone database (slim images).
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=8), "CST")


def ronglian_timestamp(at: datetime) -> str:
    """``at`` (timezone-aware) as Ronglian's ``yyyyMMddHHmmss`` in Beijing time."""
    return at.astimezone(_shanghai()).strftime("%Y%m%d%H%M%S")


def ronglian_number(e164: str) -> str:
    """An E.164 number as Ronglian's ``to`` field.

    Mainland numbers (+86) are sent as the national number (``13800138000``), the form
    Ronglian's documentation and SDKs use. Other countries are sent as ``00`` + country
    code + national significant number (``0044…``), the international dialling form
    Ronglian's international SMS expects; a ``+`` is not accepted in ``to``.

    Raises :class:`DeliveryError` (final) if ``e164`` is not a valid number; the number is
    not repeated in the reason.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        raise DeliveryError("recipient is not an E.164 phone number", retryable=False) from None
    if not phonenumbers.is_possible_number(number) or number.country_code is None:
        raise DeliveryError("recipient is not a possible phone number", retryable=False)
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 86:
        return national
    return f"00{number.country_code}{national}"


def fill_datas(template: RonglianTemplate, params: dict[str, str]) -> list[str]:
    """The template's ``datas`` format strings filled from ``params``.

    A placeholder with no parameter raises a final :class:`DeliveryError` naming the
    placeholder (never the values).
    """
    datas: list[str] = []
    for entry in template.datas:
        try:
            datas.append(entry.format_map(params))
        except KeyError as exc:
            raise DeliveryError(
                f"Ronglian template {template.id}: no value for placeholder {{{exc.args[0]}}}",
                retryable=False,
            ) from None
        except (ValueError, IndexError, AttributeError):
            raise DeliveryError(
                f"Ronglian template {template.id}: a datas entry is not a valid format string",
                retryable=False,
            ) from None
    return datas


@dataclass(slots=True)
class _Progress:
    """Set by aiohttp's tracing once a connection exists: from then on bytes may have left."""

    connected: bool = False


async def _mark_connected(session: aiohttp.ClientSession, context: Any, params: object) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.connected = True


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, or its first ``MAX_ANSWER_BYTES`` if it is larger."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) >= MAX_ANSWER_BYTES:
            break
    return bytes(body[:MAX_ANSWER_BYTES])


class RonglianSender:
    """Sends template SMS through Ronglian; implements :class:`tasks.sms.base.SmsSender`.

    Owns one :class:`aiohttp.ClientSession`, made on first use (or by :meth:`start`) and
    released by :meth:`close`. Nothing is done at construction.
    """

    def __init__(
        self,
        settings: RonglianSettings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Keep ``settings``; ``clock`` (aware datetimes, default now) is for tests."""
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._session: aiohttp.ClientSession | None = None
        base = settings.base_url.rstrip("/")
        self._url = (
            f"{base}/{API_VERSION}/Accounts/{quote(settings.account_sid, safe='')}/SMS/TemplateSMS"
        )

    async def start(self) -> None:
        """Create the HTTP session now rather than on the first send."""
        self._ensure_session()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(_mark_connected)
            trace.on_connection_reuseconn.append(_mark_connected)
            s = self._settings
            self._session = aiohttp.ClientSession(
                # A fresh connection per request: a kept-alive connection the server has
                # just closed fails only after the request was written, which would turn
                # into a final "may have been sent" instead of a clean retry.
                connector=aiohttp.TCPConnector(force_close=True, limit=32),
                timeout=aiohttp.ClientTimeout(
                    total=s.timeout_seconds,
                    connect=s.connect_timeout_seconds,
                    sock_connect=s.connect_timeout_seconds,
                ),
                trace_configs=[trace],
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session; a later send opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers_and_sig(self) -> tuple[dict[str, str], str]:
        s = self._settings
        stamp = ronglian_timestamp(self._clock())
        plain = f"{s.account_sid}{s.auth_token.get_secret_value()}{stamp}"
        sig = hashlib.md5(plain.encode(), usedforsecurity=False).hexdigest().upper()
        authorization = base64.b64encode(f"{s.account_sid}:{stamp}".encode()).decode("ascii")
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json;charset=utf-8",
            "Authorization": authorization,
        }
        return headers, sig

    def _reason(self, text: str, message: SmsMessage, to: str) -> str:
        """``text`` without anything secret or personal, at most ``MAX_REASON`` long."""
        secrets_ = [
            self._settings.auth_token.get_secret_value(),
            message.to,
            message.to.lstrip("+"),
            to,
            message.params.get("code", ""),
        ]
        for secret in secrets_:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"

    async def send(self, message: SmsMessage) -> str:
        """Send ``message`` with its purpose's template; return Ronglian's smsMessageSid.

        Raises :class:`DeliveryError`; ``retryable`` is true only when Ronglian cannot
        have sent the text (no connection, HTTP 5xx, or a status code meaning "not sent,
        try later").
        """
        # A reminder uses the verification template unless one of its own is configured.
        templates = self._settings.templates
        template = templates.get(message.purpose) or (
            templates.get("verification") if message.purpose == "reminder" else None
        )
        if template is None:
            raise DeliveryError(
                f"no Ronglian template configured for purpose {message.purpose!r}",
                retryable=False,
            )
        to = ronglian_number(message.to)
        body: dict[str, Any] = {
            "to": to,
            "appId": self._settings.app_id,
            "templateId": template.id,
        }
        datas = fill_datas(template, message.params)
        if datas:
            body["datas"] = datas
        masked = mask_destination("sms", message.to) or "****"
        headers, sig = self._headers_and_sig()
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        session = self._ensure_session()
        progress = _Progress()
        try:
            async with session.post(
                self._url,
                params={"sig": sig},
                data=payload,
                headers=headers,
                allow_redirects=False,
                trace_request_ctx=progress,
            ) as response:
                http_status = response.status
                raw = await _read_capped(response)
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
            raise DeliveryError(
                "Ronglian base_url is not a valid http(s) URL", retryable=False
            ) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused, unreachable, DNS, TLS handshake or connect timeout: nothing was sent.
            # The exception's text is not used: some aiohttp messages contain the URL (sig).
            logger.warning(
                "Ronglian unreachable",
                extra={"to": masked, "error": type(exc).__name__},
            )
            raise DeliveryError(
                f"could not connect to Ronglian ({type(exc).__name__})", retryable=True
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not progress.connected:
                logger.warning(
                    "Ronglian unreachable", extra={"to": masked, "error": type(exc).__name__}
                )
                raise DeliveryError(
                    f"could not connect to Ronglian ({type(exc).__name__})", retryable=True
                ) from None
            logger.error(
                "Ronglian did not answer after the request was sent",
                extra={"to": masked, "error": type(exc).__name__},
            )
            raise DeliveryError(
                f"{NO_ANSWER} ({type(exc).__name__})", retryable=False, maybe_sent=True
            ) from None
        return self._outcome(http_status, raw, message, to, masked)

    def _outcome(
        self, http_status: int, raw: bytes, message: SmsMessage, to: str, masked: str
    ) -> str:
        """The message id from Ronglian's answer, or the classified :class:`DeliveryError`."""
        answer: Any = None
        try:
            answer = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:
            answer = None
        code = msg = None
        if isinstance(answer, dict):
            if answer.get("statusCode") is not None:
                code = str(answer["statusCode"])
            if answer.get("statusMsg") is not None:
                msg = str(answer["statusMsg"])
        logger.info(
            "Ronglian answered",
            extra={"to": masked, "http_status": http_status, "status_code": code},
        )
        server_error = http_status >= 500
        if code is None and http_status == 200:
            # A 200 means the request was taken; a body cut short or mangled on the way back
            # does not say it was not sent. Sending again could cost the person a second SMS.
            logger.error("Ronglian answered 200 without a readable status", extra={"to": masked})
            raise DeliveryError(
                "Ronglian HTTP 200: answer is not Ronglian JSON; "
                "the SMS may have been sent, not retried",
                retryable=False,
                maybe_sent=True,
            )
        if code is None:
            # Not Ronglian's answer: a proxy's error page, a redirect.
            raise DeliveryError(
                self._reason(f"Ronglian HTTP {http_status}: answer has no statusCode", message, to),
                retryable=server_error or http_status == 429,
            )
        if code == SUCCESS and http_status == 200:
            template_sms = answer.get("templateSMS") if isinstance(answer, dict) else None
            sid = template_sms.get("smsMessageSid") if isinstance(template_sms, dict) else None
            if not isinstance(sid, str) or not sid:
                # Sent all the same: failing it would invite a resend.
                logger.warning("Ronglian success without smsMessageSid", extra={"to": masked})
                return ""
            return sid
        text = f"Ronglian {code}: {msg or KNOWN_CODES.get(code, 'unknown status code')}"
        if http_status != 200:
            text = f"{text} (HTTP {http_status})"
        retryable = server_error or http_status == 429 or code in RETRYABLE_CODES
        raise DeliveryError(self._reason(text, message, to), retryable=retryable)
