"""Email providers: SMTP with reused connections, and the development outbox."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address

from config.settings import EmailSettings
from tasks.email.rendering import RenderedEmail
from tasks.errors import DeliveryError
from tasks.outbox import DevOutbox

logger = logging.getLogger(__name__)


class Reservation(Protocol):
    """A provider's capacity held for one send: for SMTP, one pooled connection."""

    async def send(self, message: RenderedEmail) -> None:
        """Send ``message`` with what is held."""

    def release(self) -> None:
        """Give the capacity back early (it is also given back when the reservation ends)."""


class EmailSender(Protocol):
    """Something that sends a finished message or raises :class:`DeliveryError`."""

    def reserve(self) -> AbstractAsyncContextManager[Reservation]:
        """Wait until a send can start at once, and hold that capacity."""

    async def send(self, message: RenderedEmail) -> None:
        """Send ``message`` (reserving and releasing capacity around it)."""

    async def close(self) -> None:
        """Release connections."""


def _certificate_error(exc: BaseException) -> bool:
    """Whether ``exc`` or anything it was raised from is a failed certificate check."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _refusal(exc: Exception) -> tuple[str, bool] | None:
    """Reason and finality of a server's answer to this message, or None if it is not one."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        reply = exc.recipients[0] if exc.recipients else None
        text = f"{reply.code} {reply.message}" if reply else "recipient refused"
        return f"recipient refused: {text}", bool(codes) and all(500 <= c < 600 for c in codes)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return f"recipient refused: {exc.code} {exc.message}", 500 <= exc.code < 600
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return f"{exc.code} {exc.message}", 500 <= exc.code < 600
    return None


def classify_smtp_error(exc: Exception) -> DeliveryError:
    """Map an aiosmtplib error to retryable (4xx, network) or final.

    Final: 5xx refusals of the message or its recipient, a certificate that cannot be
    verified, refused credentials. None of them goes away by retrying; the operator or the
    address must change.
    """
    if _certificate_error(exc):
        reason, final = (
            "the mail server's TLS certificate could not be verified "
            "(see TIDINGS_EMAIL__CA_FILE and TIDINGS_EMAIL__VALIDATE_CERTS)",
            True,
        )
    elif isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        reason, final = f"smtp login refused: {exc.code} {exc.message}", True
    elif (refusal := _refusal(exc)) is not None:
        reason, final = refusal
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        # Sender or greeting trouble is the operator's to fix; keep retrying meanwhile.
        reason, final = f"smtp {exc.code} {exc.message}", False
    elif isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
        reason, final = "smtp timeout", False
    elif isinstance(exc, aiosmtplib.SMTPException | OSError):
        reason, final = f"smtp unavailable: {type(exc).__name__}", False
    else:
        reason, final = f"unexpected error: {type(exc).__name__}", False
    return DeliveryError(reason[:300], retryable=not final)


def _no_smtputf8() -> DeliveryError:
    return DeliveryError(
        "the address has a non-ASCII local part and the mail server does not offer SMTPUTF8",
        retryable=False,
    )


# A dot-atom address (RFC 5321 section 4.1.2) goes into MAIL FROM and RCPT TO as it is;
# aiosmtplib's mail() and rcpt() run email.utils.parseaddr on every address (~6 us each)
# to find what it finds unchanged. Anything else still goes through its quote_address.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


# A line's leading dot is doubled on the wire (RFC 5321 section 4.5.2).
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _in_wire_form(raw: bytes) -> bool:
    """Whether every line of ``raw`` ends with CRLF, as the renderer writes messages."""
    crlf = raw.count(b"\r\n")
    return raw.endswith(b"\r\n") and raw.count(b"\n") == crlf and raw.count(b"\r") == crlf


async def _data(client: aiosmtplib.SMTP, raw: bytes) -> None:
    """DATA, then the message: what ``client.data(raw)`` does for a message in wire form.

    aiosmtplib rewrites every line end of every message with a regular expression (about
    as much CPU as the rest of a send's Python); the renderer's messages already end every
    line with CRLF, so they only need their leading dots doubled, which few have.
    Anything else still goes through ``client.data``.
    """
    protocol = client.protocol
    if protocol is None or not _in_wire_form(raw):
        await client.data(raw)
        return
    if raw.startswith(b".") or b"\n." in raw:
        raw = _LEADING_DOT.sub(b"..", raw)
    reply = await client.execute_command(b"DATA")
    if reply.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    protocol.write(raw + b".\r\n")
    reply = await protocol.read_response(timeout=client.timeout)
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def _path(address: str, encoding: str) -> bytes:
    """``address`` as the ``<…>`` of a MAIL FROM or RCPT TO command."""
    quoted = f"<{address}>" if _DOT_ATOM_ADDRESS.fullmatch(address) else quote_address(address)
    return quoted.encode(encoding)


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.last_used = 0.0


class _SmtpReservation:
    """One pooled connection, held from before the claim until the send has ended."""

    def __init__(self, sender: SmtpSender, conn: _Connection) -> None:
        self._sender = sender
        self._conn: _Connection | None = conn

    async def send(self, message: RenderedEmail) -> None:
        if self._conn is None:
            raise RuntimeError("the reservation was released")
        await self._sender.send_on(self._conn, message)

    def release(self) -> None:
        if self._conn is not None:
            self._sender.give_back(self._conn)
            self._conn = None


class _Reserving:
    """``SmtpSender.reserve()``, as a class: it runs for every email.

    A generator-based context manager costs several times as much to enter and leave.
    """

    __slots__ = ("_held", "_sender")

    def __init__(self, sender: SmtpSender) -> None:
        self._sender = sender
        self._held: _SmtpReservation | None = None

    async def __aenter__(self) -> Reservation:
        self._held = _SmtpReservation(self._sender, await self._sender.take())
        return self._held

    async def __aexit__(self, *exc_info: object) -> None:
        if self._held is not None:
            self._held.release()


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
            cert_bundle=str(s.ca_file) if s.ca_file else None,
        )

    async def _ready(self, conn: _Connection) -> None:
        stale = time.monotonic() - conn.last_used > self._settings.max_idle_seconds
        if conn.client.is_connected and stale:
            conn.client.close()
        if not conn.client.is_connected:
            conn.client = self._new_client()
            await conn.client.connect()
        if conn.client.is_ehlo_or_helo_needed:
            await conn.client.ehlo()

    def reserve(self) -> AbstractAsyncContextManager[Reservation]:
        """Wait for an idle pooled connection and hold it (the wait has no deadline)."""
        return _Reserving(self)

    async def take(self) -> _Connection:
        """An idle pooled connection, once there is one."""
        return await self._idle.get()

    def give_back(self, conn: _Connection) -> None:
        """Return ``conn`` to the pool."""
        self._idle.put_nowait(conn)

    async def send(self, message: RenderedEmail) -> None:
        """Send over a pooled connection, waiting for one if all are busy."""
        async with self.reserve() as reservation:
            await reservation.send(message)

    async def send_on(self, conn: _Connection, message: RenderedEmail) -> None:
        """Send over ``conn``; on any error the connection is dropped.

        Everything before DATA is safe to retry. Once the message has been written, a
        timeout or a lost connection before the server's reply leaves the outcome unknown:
        that is ``maybe_sent``, never retried (the person could get the code twice).
        """
        client = conn.client
        options = [b"SMTPUTF8"] if message.smtputf8 else []
        encoding = "utf-8" if message.smtputf8 else "ascii"
        handed_over = False
        try:
            await self._ready(conn)
            client = conn.client
            if message.smtputf8 and not client.supports_extension("smtputf8"):
                raise _no_smtputf8()
            # What client.mail() and client.rcpt() do once EHLO is done (_ready did it),
            # with the addresses quoted without parsing them again.
            sender, recipient = message.envelope_from, message.envelope_to or message.to
            reply = await client.execute_command(
                b"MAIL", b"FROM:" + _path(sender, encoding), *options
            )
            if reply.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
            reply = await client.execute_command(b"RCPT", b"TO:" + _path(recipient, encoding))
            if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            handed_over = True
            await _data(client, message.raw)
            conn.last_used = time.monotonic()
        except DeliveryError:
            await self._reset(client)
            raise
        except Exception as exc:
            client.close()
            if handed_over and not isinstance(exc, aiosmtplib.SMTPResponseException):
                raise DeliveryError(
                    f"no answer after the message was sent ({type(exc).__name__}); "
                    "it may have been delivered",
                    retryable=False,
                    maybe_sent=True,
                ) from None
            raise classify_smtp_error(exc) from None

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        """Keep a healthy connection for the next message after a refusal of ours."""
        if client.is_connected:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def close(self) -> None:
        """Say QUIT on every open connection."""
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            if conn.client.is_connected:
                try:
                    await conn.client.quit()
                except aiosmtplib.SMTPException:
                    conn.client.close()


class _OutboxReservation:
    def __init__(self, sender: OutboxSender) -> None:
        self._sender = sender

    async def send(self, message: RenderedEmail) -> None:
        await self._sender.send(message)

    def release(self) -> None:
        pass


class OutboxSender:
    """Development provider: keeps messages in the dev outbox instead of sending them."""

    def __init__(self, outbox: DevOutbox) -> None:
        self._outbox = outbox

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[Reservation]:
        """Nothing to wait for: the outbox always has room."""
        yield _OutboxReservation(self)

    async def send(self, message: RenderedEmail) -> None:
        """Store ``message`` (text and HTML parts) in the outbox."""
        entry = {
            "kind": "email",
            "id": message.message_id,
            "to": message.to,
            "from": message.sender or message.envelope_from,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
        }
        headline = f"email to {message.to}"
        await self._outbox.keep(
            entry, headline, f"Subject: {message.subject}\n\n{message.text}", raw=message.raw
        )

    async def close(self) -> None:
        """Nothing to release."""
