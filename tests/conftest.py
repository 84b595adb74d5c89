"""Real parts for every test: a private redis-server, an in-process SMTP server, the real app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from taskiq.api import run_receiver_task

from config.settings import Settings, load_settings
from tasks.broker import build_broker
from tasks.scheduling import schedule_source
from tasks.stopping import stop_task
from tasks.worker import build_worker_broker, register_tasks
from tests.emulators.site_callbacks import Receiver
from tidings.devsite import new_api_key, new_webhook_secret
from tidings.embedded_redis import free_port, redis_server_binary
from tidings.signup_client import signed_headers
from webhooks.app import create_app

SECRET = new_webhook_secret()
API_KEY = new_api_key()
OTHER_SECRET = new_webhook_secret()
OTHER_API_KEY = new_api_key()


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it is truthy, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server for the session, or ``TIDINGS_TEST_REDIS_URL`` if set."""
    if url := os.environ.get("TIDINGS_TEST_REDIS_URL"):
        yield url
        return
    folder = tempfile.mkdtemp(prefix="tidings-test-redis-")
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except sync_redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("could not start redis-server for the tests") from None
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


class RecordingHandler:
    """aiosmtpd handler keeping every accepted message; can refuse recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_rcpt: str | None = None
        self.rcpt_attempts = 0

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.rcpt_attempts += 1
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = message_from_bytes(raw, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"


class SmtpSink:
    """A real SMTP server on the test's event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = RecordingHandler()
        self._server: asyncio.Server | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTPServer(self.handler, hostname="sink.test"), "127.0.0.1", self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        await wait_for(lambda: len(self.messages) >= count, timeout, f"{count} email(s)")
        return self.messages


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    """A running SMTP sink."""
    sink = SmtpSink(free_port())
    await sink.start()
    yield sink
    await sink.stop()


def site(
    site_id: str = "shop", secret: str = SECRET, api_key: str = API_KEY, **extra: Any
) -> dict[str, Any]:
    """A site declaration for settings."""
    return {
        "id": site_id,
        "name": extra.pop("name", "Acme Shop"),
        "webhook_secrets": [secret],
        "api_keys": [api_key],
        **extra,
    }


@pytest.fixture
def make_settings(redis_url: str, smtp: SmtpSink) -> Callable[..., Settings]:
    """Settings for one test: its own key prefix, the sink, fast retries."""
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_prefix": prefix,
            "secret_key": "test-secret-key-" + "x" * 32,
            "sites": [site(), site("other", OTHER_SECRET, OTHER_API_KEY, name="Other")],
            "email": {
                "backend": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "none",
                "from_address": "codes@tidings.test",
                "timeout_seconds": 5,
            },
            "queue": {
                "backoff_base_seconds": 0.2,
                "backoff_max_seconds": 1.0,
                "pump_interval_seconds": 0.05,
                "task_timeout_seconds": 10,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return load_settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    """The real web app over HTTP."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Settings], Awaitable[None]]]:
    """Start in-process workers (the real receiver on the real stream); stopped after the test."""
    running: list[tuple[asyncio.Task[None], Any]] = []

    async def start(settings: Settings) -> None:
        broker, _ = build_worker_broker(settings)
        task = asyncio.create_task(run_receiver_task(broker, run_startup=True, max_async_tasks=20))
        running.append((task, broker))

    yield start
    for task, broker in reversed(running):
        broker.stop_listening()  # a blocked stream read may swallow the cancel on 3.11
        await stop_task(task)
        await broker.shutdown()


@pytest.fixture
async def scheduler(settings: Settings) -> AsyncIterator[None]:
    """The schedule store's on-time dispatcher, as a ``tidings scheduler`` process runs it."""
    broker = build_broker(settings)
    register_tasks(broker, settings)
    await broker.startup()
    source = schedule_source(settings, broker, dispatch=True)
    await source.startup()
    yield
    await source.shutdown()
    await broker.shutdown()


@pytest.fixture
async def worker(settings: Settings, start_worker: Callable[[Settings], Awaitable[None]]) -> None:
    """One in-process worker for the default settings."""
    await start_worker(settings)


async def post_event(
    client: TestClient,
    event: dict[str, Any] | str | bytes,
    *,
    site_id: str = "shop",
    secret: str = SECRET,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a signed webhook like a real site."""
    body = event if isinstance(event, str | bytes) else json.dumps(event)
    text = body.decode() if isinstance(body, bytes) else body
    signed = signed_headers(secret, text, msg_id)
    signed.update(headers or {})
    return await client.post(f"/webhooks/{site_id}", data=body, headers=signed)


async def post_until_accepted(
    client: TestClient, event: dict[str, Any], msg_id: str, seen: list[int], timeout: float = 30
) -> dict[str, Any]:
    """Post as a site would: retry the same webhook-id on 503 until it is accepted.

    Every status seen is appended to ``seen``; a 503 must say when to come back.
    """

    async def attempt() -> dict[str, Any] | None:
        response = await post_event(client, event, msg_id=msg_id)
        seen.append(response.status)
        if response.status == 503:
            assert int(response.headers["Retry-After"]) > 0
            return None
        assert response.status == 202, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    accepted: dict[str, Any] = await wait_for(attempt, timeout, f"webhook {msg_id} accepted")
    return accepted


async def signup(client: TestClient, **data: Any) -> dict[str, Any]:
    """Post a ``signup.created`` and return the accepted verification (asserting the 202)."""
    response = await post_event(client, signup_event(**data))
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def get_verification(client: TestClient, vid: str, api_key: str = API_KEY) -> dict[str, Any]:
    """The verification resource as the owning site reads it (asserting the 200)."""
    response = await client.get(f"/v1/verifications/{vid}", headers=auth(api_key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def signup_event(**data: Any) -> dict[str, Any]:
    """A ``signup.created`` event with sensible defaults."""
    payload = {"user_id": "u-1", "email": "alice@example.com", "channel": "email", **data}
    return {"type": "signup.created", "timestamp": "2026-11-23T10:00:00Z", "data": payload}


def auth(api_key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def code_from(message: EmailMessage) -> str:
    """The code as a person reads it in the plain-text part."""
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(r"^\s+(\d{4,10})\s*$", body.get_content(), re.MULTILINE)
    assert match, "no code in the email"
    return match.group(1)


def html_of(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


TESTS_DIR = Path(__file__).parent


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A site's callback endpoint, signed with the test site's secret."""
    r = Receiver(SECRET)
    await r.start()
    yield r
    await r.stop()
