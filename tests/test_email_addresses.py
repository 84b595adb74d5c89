"""Every address intake accepts is delivered, or fails at once with a clear reason.

IDN domains travel as A-labels everywhere; non-ASCII local parts need SMTPUTF8, which the
in-process aiosmtpd server offers or not, like a real relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from email.headerregistry import Address
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from config.settings import Settings
from tests.conftest import RecordingHandler, SmtpSink, code_from, get_verification, signup, wait_for
from tidings.embedded_redis import free_port
from verification.connections import open_redis
from verification.keys import Keys
from webhooks.app import create_app


class EnvelopeHandler(RecordingHandler):
    """Also keeps each message's envelope and its raw bytes, as the server saw them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[tuple[str, list[str], list[str]]] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.mail_from, str)
        self.envelopes.append(
            (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options))
        )
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        self.raw.append(raw)
        return await super().handle_DATA(server, session, envelope)


class Relay(SmtpSink):
    """An SMTP server that offers SMTPUTF8 or does not."""

    def __init__(self, *, smtputf8: bool) -> None:
        super().__init__(free_port())
        self.handler = EnvelopeHandler()
        self.smtputf8 = smtputf8

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTPServer(self.handler, hostname="relay.test", enable_SMTPUTF8=self.smtputf8),
            "127.0.0.1",
            self.port,
        )


@pytest.fixture
async def start_relay() -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    started: list[Relay] = []

    async def start(*, smtputf8: bool) -> Relay:
        relay = Relay(smtputf8=smtputf8)
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


@pytest.fixture
def through(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
) -> Callable[..., Awaitable[tuple[TestClient, Settings]]]:
    """The app and a worker sending through ``relay``."""

    async def build(relay: Relay, **email: Any) -> tuple[TestClient, Settings]:
        settings = make_settings(email={"port": relay.port, **email})
        client: TestClient = await aiohttp_client(create_app(settings))
        await start_worker(settings)
        return client, settings

    return build


async def _settled(client: TestClient, vid: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        delivery: dict[str, Any] = (await get_verification(client, vid))["deliveries"][0]
        return delivery if delivery["status"] != "queued" else None

    result: dict[str, Any] = await wait_for(probe, what="the delivery to settle")
    return result


@pytest.mark.parametrize("smtputf8", [False, True])
async def test_an_idn_domain_goes_out_as_a_labels(
    start_relay: Callable[..., Awaitable[Relay]],
    through: Callable[..., Awaitable[tuple[TestClient, Settings]]],
    smtputf8: bool,
) -> None:
    relay = await start_relay(smtputf8=smtputf8)
    client, _ = await through(relay)
    vid = (await signup(client, email="user@bücher.example.com"))["id"]
    [message] = await relay.wait_for_messages(1)
    assert (await _settled(client, vid))["status"] == "sent"
    [(_, rcpt, options)] = relay.handler.envelopes
    assert rcpt == ["user@xn--bcher-kva.example.com"]
    assert "SMTPUTF8" not in options  # plain ASCII: any relay takes it
    assert message["To"] == "user@xn--bcher-kva.example.com"
    assert relay.handler.raw[0].isascii()
    assert code_from(message).isdigit()


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        ("josé@example.com", "josé@example.com"),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
    ],
)
async def test_a_non_ascii_local_part_is_sent_with_smtputf8(
    start_relay: Callable[..., Awaitable[Relay]],
    through: Callable[..., Awaitable[tuple[TestClient, Settings]]],
    address: str,
    wire: str,
) -> None:
    relay = await start_relay(smtputf8=True)
    client, _ = await through(relay, from_name="Acme 验证")
    vid = (await signup(client, email=address))["id"]
    [message] = await relay.wait_for_messages(1)
    sent = await _settled(client, vid)
    assert sent["status"] == "sent"
    assert sent["attempts"] == 1
    [(mail_from, rcpt, options)] = relay.handler.envelopes
    assert mail_from == "codes@tidings.test"
    assert rcpt == [wire]
    assert "SMTPUTF8" in options
    # RFC 6532: the address itself as UTF-8, never an encoded word over it (RFC 2047 §5).
    raw = relay.handler.raw[0]
    to_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"To:"))
    assert to_line == f"To: {wire}".encode()
    from_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"From:"))
    assert from_line.endswith(b" <codes@tidings.test>")
    assert from_line.startswith(b"From: =?utf-8?")  # only the display name is encoded
    sender = message["From"].addresses[0]
    assert isinstance(sender, Address)
    assert (sender.display_name, sender.addr_spec) == ("Acme 验证", "codes@tidings.test")
    assert code_from(message).isdigit()


async def test_without_smtputf8_a_non_ascii_local_part_fails_at_once(
    start_relay: Callable[..., Awaitable[Relay]],
    through: Callable[..., Awaitable[tuple[TestClient, Settings]]],
) -> None:
    relay = await start_relay(smtputf8=False)
    client, settings = await through(relay)
    vid = (await signup(client, email="josé@example.com"))["id"]
    failed = await _settled(client, vid)
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1  # final, not retried as if transient
    assert "SMTPUTF8" in failed["error"]
    assert "josé" not in failed["error"]
    assert (await get_verification(client, vid))["status"] == "failed"
    redis = open_redis(settings)
    try:
        event = await redis.hgetall(Keys(settings.redis_prefix).event(vid))
    finally:
        await redis.aclose()
    assert event.get("type") == "verification.failed"

    # The connection stays usable: the next person's email goes through it.
    await signup(client, email="bob@example.com", user_id="u-2")
    [message] = await relay.wait_for_messages(1)
    assert message["To"] == "bob@example.com"
    assert relay.handler.rcpt_attempts == 1
