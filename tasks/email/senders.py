"""Email providers: SMTP with reused connections, and the development outbox."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import aiosmtplib

from config.settings import EmailSettings
from tasks.email.rendering import RenderedEmail
from tasks.errors import DeliveryError
from tasks.outbox import DevOutbox

logger = logging.getLogger(__name__)


class EmailSender(Protocol):
    """Something that sends a finished message or raises :class:`DeliveryError`."""

    async def send(self, message: RenderedEmail) -> None:
        """Send ``message``."""

    async def close(self) -> None:
        """Release connections."""


def classify_smtp_error(exc: Exception) -> DeliveryError:
    """Map an aiosmtplib error to retryable (4xx, network) or final (5xx on the message)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        final = bool(codes) and all(500 <= c < 600 for c in codes)
        reply = exc.recipients[0] if exc.recipients else None
        text = f"{reply.code} {reply.message}" if reply else "recipient refused"
        return DeliveryError(f"recipient refused: {text}"[:300], retryable=not final)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        final = 500 <= exc.code < 600
        return DeliveryError(f"{exc.code} {exc.message}"[:300], retryable=not final)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # Sender, auth or greeting trouble is the operator's to fix; keep retrying meanwhile.
        return DeliveryError(f"smtp {exc.code} {exc.message}"[:300], retryable=True)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
        return DeliveryError("smtp timeout", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return DeliveryError(f"smtp unavailable: {type(exc).__name__}", retryable=True)
    return DeliveryError(f"unexpected error: {type(exc).__name__}", retryable=True)


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.last_used = 0.0


class SmtpSender:
    """A small pool of SMTP connections kept open across sends."""

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._idle: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        for _ in range(settings.pool_size):
            self._idle.put_nowait(_Connection(self._new_client()))

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            timeout=s.timeout_seconds,
            validate_certs=s.validate_certs,
        )

    async def _ready(self, conn: _Connection) -> None:
        stale = time.monotonic() - conn.last_used > self._settings.max_idle_seconds
        if conn.client.is_connected and stale:
            conn.client.close()
        if not conn.client.is_connected:
            conn.client = self._new_client()
            await conn.client.connect()

    async def send(self, message: RenderedEmail) -> None:
        """Send over a pooled connection; on any error the connection is dropped."""
        conn = await self._idle.get()
        try:
            await self._ready(conn)
            await conn.client.sendmail(message.envelope_from, [message.to], message.raw)
            conn.last_used = time.monotonic()
        except Exception as exc:
            conn.client.close()
            raise classify_smtp_error(exc) from None
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        """Say QUIT on every open connection."""
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            if conn.client.is_connected:
                try:
                    await conn.client.quit()
                except aiosmtplib.SMTPException:
                    conn.client.close()


class OutboxSender:
    """Development provider: keeps messages in the dev outbox instead of sending them."""

    def __init__(self, outbox: DevOutbox) -> None:
        self._outbox = outbox

    async def send(self, message: RenderedEmail) -> None:
        """Store ``message`` (text and HTML parts) in the outbox."""
        entry = {
            "kind": "email",
            "id": message.message_id,
            "to": message.to,
            "from": message.envelope_from,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
        }
        headline = f"email to {message.to}"
        await self._outbox.keep(entry, headline, f"Subject: {message.subject}\n\n{message.text}")

    async def close(self) -> None:
        """Nothing to release."""
