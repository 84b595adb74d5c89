"""Email delivery against a real SMTP server that is down, refuses, stutters or stays open."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

from config.settings import EmailSettings, Settings
from tasks.worker import build_worker_broker
from tests.conftest import (
    RecordingHandler,
    SmtpSink,
    auth,
    code_from,
    get_verification,
    signup,
    wait_for,
)
from tidings.embedded_redis import free_port
from verification.keys import Keys
from webhooks.app import create_app


class CountingSink(SmtpSink):
    """The conftest sink, also counting the TCP connections it accepts."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.connections = 0

    async def start(self) -> None:
        def accept() -> SMTPServer:
            self.connections += 1
            return SMTPServer(self.handler, hostname="sink.test")

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(accept, "127.0.0.1", self.port)


class TransientOnce(RecordingHandler):
    """Answers the first RCPT with a temporary failure, then accepts."""

    async def handle_RCPT(  # aiosmtpd hook name
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.rcpt_attempts == 0:
            self.rcpt_attempts += 1
            return "451 4.3.0 Try again later"
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
async def sinks() -> AsyncIterator[list[SmtpSink]]:
    """Sinks a test starts itself; stopped afterwards."""
    started: list[SmtpSink] = []
    yield started
    for sink in started:
        await sink.stop()


@pytest.fixture
def make_client(aiohttp_client: Any) -> Callable[[Settings], Awaitable[TestClient]]:
    """The real app over HTTP for custom settings."""

    async def build(settings: Settings) -> TestClient:
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    return build


async def _delivery(client: TestClient, vid: str) -> dict[str, Any]:
    delivery: dict[str, Any] = (await get_verification(client, vid))["deliveries"][0]
    return delivery


async def _delivery_when(
    client: TestClient, vid: str, ok: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        delivery = await _delivery(client, vid)
        return delivery if ok(delivery) else None

    result: dict[str, Any] = await wait_for(probe, what=what)
    return result


async def test_smtp_down_then_up_is_retried_and_sent_once(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], Awaitable[TestClient]],
    start_worker: Callable[[Settings], Awaitable[None]],
    sinks: list[SmtpSink],
) -> None:
    port = free_port()  # nothing listens here yet
    settings = make_settings(email={"port": port})
    client = await make_client(settings)
    await start_worker(settings)

    vid = (await signup(client))["id"]
    retrying = await _delivery_when(
        client,
        vid,
        lambda d: d["attempts"] >= 2 and bool(d["error"]),
        "two failed attempts recorded",
    )
    assert retrying["status"] == "queued"
    assert "smtp" in retrying["error"]
    assert (await get_verification(client, vid))["status"] == "pending"

    sink = SmtpSink(port)
    await sink.start()
    sinks.append(sink)
    [message] = await sink.wait_for_messages(1)
    assert message["To"] == "alice@example.com"
    sent = await _delivery_when(client, vid, lambda d: d["status"] == "sent", "delivery sent")
    assert sent["error"] is None
    assert sent["provider_id"] == message["Message-ID"]

    # Exactly once: the next email through is someone else's.
    await signup(client, email="bob@example.com", user_id="u-2")
    messages = await sink.wait_for_messages(2)
    assert [m["To"] for m in messages] == ["alice@example.com", "bob@example.com"]
    check = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": code_from(message)}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"


async def test_rcpt_550_fails_for_good_without_retrying(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    smtp.handler.refuse_rcpt = "550 5.1.1 No such user"
    vid = (await signup(client, email="nobody@example.com"))["id"]
    failed = await _delivery_when(
        client, vid, lambda d: d["status"] != "queued", "the delivery to settle"
    )
    assert failed["status"] == "failed"
    assert "550" in failed["error"]
    assert "nobody@example.com" not in failed["error"]
    assert failed["attempts"] == 1
    resource = await get_verification(client, vid)
    assert resource["status"] == "failed"
    check = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": "123456"}, headers=auth()
    )
    assert (await check.json())["status"] == "failed"

    # No retry storm: the next RCPT the server sees is a new signup's.
    smtp.handler.refuse_rcpt = None
    await signup(client, email="bob@example.com", user_id="u-2")
    [message] = await smtp.wait_for_messages(1)
    assert message["To"] == "bob@example.com"
    assert smtp.handler.rcpt_attempts == 2

    metrics = await (await client.get("/metrics")).text()
    assert 'tidings_deliveries_total{channel="email",outcome="failed"} 1.0' in metrics
    assert "tidings_dead_letters 1.0" in metrics
    assert 'tidings_verifications_total{status="failed"} 1.0' in metrics


async def test_rcpt_451_is_retried_and_arrives_once(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    smtp.handler = TransientOnce()
    vid = (await signup(client))["id"]
    [message] = await smtp.wait_for_messages(1)
    sent = await _delivery_when(client, vid, lambda d: d["status"] == "sent", "delivery sent")
    assert sent["attempts"] == 2
    assert sent["error"] is None
    assert smtp.handler.rcpt_attempts == 2

    await signup(client, email="bob@example.com", user_id="u-2")
    messages = await smtp.wait_for_messages(2)
    assert [m["To"] for m in messages] == ["alice@example.com", "bob@example.com"]
    assert smtp.handler.rcpt_attempts == 3
    check = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": code_from(message)}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"


async def test_one_connection_carries_consecutive_emails(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], Awaitable[TestClient]],
    start_worker: Callable[[Settings], Awaitable[None]],
    sinks: list[SmtpSink],
) -> None:
    sink = CountingSink(free_port())
    await sink.start()
    sinks.append(sink)
    settings = make_settings(email={"port": sink.port})
    client = await make_client(settings)
    await start_worker(settings)

    for n in range(3):
        vid = (await signup(client, email=f"p{n}@example.com", user_id=f"u-{n}"))["id"]
        await sink.wait_for_messages(n + 1)
        await _delivery_when(client, vid, lambda d: d["status"] == "sent", "delivery sent")
    assert [m["To"] for m in sink.messages] == [f"p{n}@example.com" for n in range(3)]
    assert sink.connections == 1


async def test_redelivered_task_does_not_send_twice(
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
    settings: Settings,
    redis_url: str,
) -> None:
    vid = (await signup(client))["id"]
    await smtp.wait_for_messages(1)
    sent = await _delivery_when(client, vid, lambda d: d["status"] == "sent", "delivery sent")

    # The same task again, straight on the queue (as after a lost acknowledgement) ...
    broker, tasks = build_worker_broker(settings)
    await broker.startup()
    try:
        await tasks.deliver.kiq(sent["id"])
    finally:
        await broker.shutdown()
    async with Redis.from_url(redis_url, decode_responses=True) as redis:

        async def consumed() -> bool:
            return await redis.xlen(Keys(settings.redis_prefix).queue) == 0

        await wait_for(consumed, what="the worker to take the repeated task")

    # ... and through the pump, as if the due set still held it.
    due = Keys(settings.redis_prefix).due
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        await redis.zadd(due, {sent["id"]: 0})

        async def gone() -> bool:
            return await redis.zscore(due, sent["id"]) is None

        await wait_for(gone, what="the pump to take the delivery and the worker to drop it")

    await signup(client, email="bob@example.com", user_id="u-2")
    messages = await smtp.wait_for_messages(2)
    assert [m["To"] for m in messages] == ["alice@example.com", "bob@example.com"]
    after = await _delivery(client, vid)
    assert after["status"] == "sent"
    assert after["attempts"] == 1
    assert after["provider_id"] == sent["provider_id"]


# -- TLS and login: refusals that retrying cannot fix fail at once ------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by nobody but itself, as a private relay has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "relay.pem", folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class TlsSink(SmtpSink):
    """A relay with a self-signed certificate: STARTTLS on 587-style, or implicit TLS."""

    def __init__(self, context: ssl.SSLContext, *, implicit: bool, password: str = "") -> None:
        super().__init__(free_port())
        self.context = context
        self.implicit = implicit
        self.password = password
        self.logins = 0

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins += 1
        ok = isinstance(data, LoginPassword) and data.password == self.password.encode()
        return AuthResult(success=ok, handled=False)

    async def start(self) -> None:
        def server() -> SMTPServer:
            return SMTPServer(
                self.handler,
                hostname="relay.test",
                tls_context=None if self.implicit else self.context,
                require_starttls=not self.implicit,
                authenticator=self._authenticate if self.password else None,
                auth_required=bool(self.password),
            )

        loop = asyncio.get_running_loop()
        ssl_context = self.context if self.implicit else None
        self._server = await loop.create_server(server, "127.0.0.1", self.port, ssl=ssl_context)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_unverifiable_certificate_fails_at_once_and_a_ca_file_fixes_it(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], Awaitable[TestClient]],
    start_worker: Callable[[Settings], Awaitable[None]],
    sinks: list[SmtpSink],
    certificate: tuple[Path, ssl.SSLContext],
    security: str,
) -> None:
    cert_file, context = certificate
    sink = TlsSink(context, implicit=security == "tls")
    await sink.start()
    sinks.append(sink)
    settings = make_settings(email={"port": sink.port, "security": security})
    client = await make_client(settings)
    await start_worker(settings)

    vid = (await signup(client))["id"]
    failed = await _delivery_when(
        client, vid, lambda d: d["status"] != "queued", "the delivery to settle"
    )
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1  # not retried as if the network had hiccupped
    assert "certificate could not be verified" in failed["error"]
    assert "TIDINGS_EMAIL__CA_FILE" in failed["error"]
    assert (await get_verification(client, vid))["status"] == "failed"
    assert sink.messages == []

    # Its own key prefix: the first worker, which trusts nothing, still reads its queue.
    trusting = make_settings(
        redis_prefix=f"{settings.redis_prefix}b",
        email={"port": sink.port, "security": security, "ca_file": cert_file},
    )
    trusted = await make_client(trusting)
    await start_worker(trusting)
    vid = (await signup(trusted, email="bob@example.com", user_id="u-2"))["id"]
    [message] = await sink.wait_for_messages(1)
    assert message["To"] == "bob@example.com"
    sent = await _delivery_when(trusted, vid, lambda d: d["status"] == "sent", "delivery sent")
    assert sent["attempts"] == 1


async def test_refused_credentials_fail_at_once(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], Awaitable[TestClient]],
    start_worker: Callable[[Settings], Awaitable[None]],
    sinks: list[SmtpSink],
    certificate: tuple[Path, ssl.SSLContext],
) -> None:
    cert_file, context = certificate
    sink = TlsSink(context, implicit=False, password="right-password")
    await sink.start()
    sinks.append(sink)
    email = {"port": sink.port, "security": "starttls", "ca_file": cert_file, "username": "tid"}
    settings = make_settings(email={**email, "password": "wrong-password"})
    client = await make_client(settings)
    await start_worker(settings)

    vid = (await signup(client))["id"]
    failed = await _delivery_when(
        client, vid, lambda d: d["status"] != "queued", "the delivery to settle"
    )
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert failed["error"].startswith("smtp login refused: 535")
    assert "wrong-password" not in failed["error"]
    # One attempt (aiosmtplib tries each mechanism offered once): no storm of retries
    # against the relay's lockout.
    assert sink.logins == 2

    right = make_settings(
        redis_prefix=f"{settings.redis_prefix}b", email={**email, "password": "right-password"}
    )
    right_client = await make_client(right)
    await start_worker(right)
    await signup(right_client, email="bob@example.com", user_id="u-2")
    [message] = await sink.wait_for_messages(1)
    assert message["To"] == "bob@example.com"


class DataRefusedOnce(RecordingHandler):
    """Answers the end of the first message with ``reply``, then accepts."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply: str | None = reply

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.reply is not None:
            reply, self.reply = self.reply, None
            return reply
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("reply", "status", "attempts"),
    [("554 5.7.1 Message rejected", "failed", 1), ("451 4.7.1 Try again later", "sent", 2)],
)
async def test_a_message_refused_at_the_end_of_data_is_final_or_retried_by_its_code(
    client: TestClient, smtp: SmtpSink, worker: None, reply: str, status: str, attempts: int
) -> None:
    smtp.handler = DataRefusedOnce(reply)
    vid = (await signup(client))["id"]
    settled = await _delivery_when(
        client, vid, lambda d: d["status"] in ("failed", "sent"), "the delivery to settle"
    )
    assert (settled["status"], settled["attempts"]) == (status, attempts)
    if status == "failed":
        assert "554" in settled["error"]
        assert smtp.messages == []
    else:
        [message] = await smtp.wait_for_messages(1)
        assert message["To"] == "alice@example.com"
        assert code_from(message).isdigit()


@pytest.mark.parametrize(
    "body",
    [
        b".first line\r\n..second\r\nthird\r\n.\r\n",  # leading dots, one line only a dot
        b"bare line ends\nfrom elsewhere\r\n.dot\n",  # not in wire form: aiosmtplib's own path
    ],
)
async def test_a_message_reaches_the_server_line_for_line(smtp: SmtpSink, body: bytes) -> None:
    from tasks.email.rendering import RenderedEmail
    from tasks.email.senders import SmtpSender

    settings = EmailSettings(host="127.0.0.1", port=smtp.port, security="none")
    sender = SmtpSender(settings)
    raw = b"Subject: dots\r\nTo: alice@example.com\r\n\r\n" + body
    message = RenderedEmail(
        to="alice@example.com",
        envelope_from="codes@tidings.test",
        subject="dots",
        message_id="<1@tidings.test>",
        text="",
        html="",
        raw=raw,
    )
    try:
        await sender.send(message)
        await sender.send(message)  # the connection is still in step after the first
    finally:
        await sender.close()
    first, second = await smtp.wait_for_messages(2)
    expected = body.replace(b"\r\n", b"\n").decode()
    for received in (first, second):
        assert received["Subject"] == "dots"
        assert received.get_content().replace("\r\n", "\n") == expected
