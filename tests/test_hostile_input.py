"""Hostile requests: every one is a 4xx problem document, stores nothing and logs no error."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from redis.asyncio import Redis

from config.settings import HttpSettings, Settings
from tests.conftest import SECRET, SmtpSink, auth, signup, signup_event
from tests.test_inbound import PROBLEM, assert_nothing_happened, problem, signed, store
from webhooks.app import create_app
from webhooks.serving import ProblemAppRunner, handler_kwargs

__all__ = ["store"]  # the fixture, imported for the tests below


class HardenedServer(TestServer):
    """The app served as ``tidings web`` serves it: its runner and handler limits."""

    def __init__(self, app: web.Application, http: HttpSettings) -> None:
        super().__init__(app)
        self._http = http

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ProblemAppRunner(self.app, **{**handler_kwargs(self._http), **kwargs})


@pytest.fixture
async def served(aiohttp_client: Any, settings: Settings) -> TestClient:
    """The real app behind the production runner."""
    client: TestClient = await aiohttp_client(HardenedServer(create_app(settings), settings.http))
    return client


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fails the test if anything was logged at ERROR or with a traceback."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def event_with(metadata_json: str) -> str:
    """A valid signup whose ``data.metadata`` is the raw JSON text given."""
    text = json.dumps(signup_event(metadata={"x": "PLACEHOLDER"}))
    return text.replace('{"x": "PLACEHOLDER"}', metadata_json)


async def raw_exchange(client: TestClient, request: bytes) -> tuple[bytes, bytes]:
    """Send bytes no HTTP client library would send; the answer's head and body."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


# ---------------------------------------------------------------- webhook headers


async def test_timestamp_of_400_digits_is_401_before_anything_else(
    client: TestClient, smtp: SmtpSink, worker: None, store: Redis, settings: Settings, quiet: Any
) -> None:
    body = json.dumps(signup_event())
    headers = {**signed(SECRET, body), "webhook-timestamp": "9" * 400}
    response = await client.post("/webhooks/shop", data=body, headers=headers)
    await problem(response, 401, "invalid-signature")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_signature_header_of_5000_entries_is_a_431_problem(
    served: TestClient, quiet: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(signup_event())
    headers = signed(SECRET, body)
    headers["webhook-signature"] = " ".join([headers["webhook-signature"]] * 5000)
    response = await served.post("/webhooks/shop", data=body, headers=headers)
    document = await problem(response, 431, "headers-too-large")
    assert "v1," not in json.dumps(document), "the header is not echoed"
    refused = [r for r in quiet.records if r.getMessage() == "malformed request refused"]
    assert [r.levelno for r in refused] == [logging.WARNING]


async def test_malformed_request_is_a_400_problem(
    served: TestClient, quiet: pytest.LogCaptureFixture
) -> None:
    head, body = await raw_exchange(
        served, b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
    )
    assert head.split(b" ")[1] == b"400", head
    assert f"content-type: {PROBLEM}".encode() in head.lower()
    assert json.loads(body)["type"] == "/docs#problem-bad-request"


async def test_undecodable_webhook_id_is_refused_not_crashed(
    served: TestClient, store: Redis, settings: Settings, quiet: Any
) -> None:
    """Header bytes that are not UTF-8 reach the app as surrogates; they are signed as sent."""
    body = json.dumps(signup_event()).encode()
    ts = str(int(time.time())).encode()
    msg_id = b"msg_\xff\xfe"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id + b"." + ts + b"." + body, hashlib.sha256).digest()
    head, answer = await raw_exchange(
        served,
        b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"webhook-id: " + msg_id + b"\r\nwebhook-timestamp: " + ts + b"\r\n"
        b"webhook-signature: v1," + base64.b64encode(mac) + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body,
    )
    assert head.split(b" ")[1] == b"422", head
    assert json.loads(answer)["detail"].startswith("webhook-id")
    assert [k async for k in store.scan_iter(f"{settings.redis_prefix}:v:*")] == []


async def test_undecodable_api_key_is_401(served: TestClient, quiet: Any) -> None:
    head, body = await raw_exchange(
        served,
        b"GET /v1/verifications/ver_x HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer tk_\xff\xfe\r\nConnection: close\r\n\r\n",
    )
    assert head.split(b" ")[1] == b"401", head
    assert json.loads(body)["type"] == "/docs#problem-unauthorized"


# ---------------------------------------------------------------- webhook bodies

REFUSED_METADATA = {
    # raw JSON of data.metadata: field named in the answer
    "NaN": ('{"score": NaN}', "data.metadata.score"),
    "Infinity": ('{"score": Infinity}', "data.metadata.score"),
    "-Infinity": ('{"a": [1, -Infinity]}', "data.metadata.a.1"),
    "float overflowing to infinity": ('{"big": 1e999}', "data.metadata.big"),
    "integer of 5000 digits": ('{"n": ' + "7" * 5000 + "}", "data.metadata.n"),
    "float of 5000 digits": ('{"n": 0.' + "7" * 5000 + "}", "data.metadata.n"),
    "unpaired surrogate in a value": ('{"name": "\\ud800x"}', "data.metadata.name"),
    "unpaired surrogate in a key": ('{"k\\udfff": 1}', "data.metadata"),
}


@pytest.mark.parametrize("case", list(REFUSED_METADATA))
async def test_values_strict_json_refuses_are_422_naming_the_field(
    case: str,
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
    store: Redis,
    settings: Settings,
    quiet: Any,
) -> None:
    raw, field = REFUSED_METADATA[case]
    body = event_with(raw)
    response = await client.post("/webhooks/shop", data=body, headers=signed(SECRET, body))
    document = await problem(response, 422, "validation")
    assert [e["field"] for e in document["errors"]] == [field]
    assert document["detail"].startswith(f"{field}: ")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


@pytest.mark.parametrize("depth", [40, 1_000, 30_000])
async def test_deeply_nested_data_is_400(
    depth: int,
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
    store: Redis,
    settings: Settings,
    quiet: Any,
) -> None:
    body = event_with(f'{{"deep": {nested(depth)}}}')
    response = await client.post("/webhooks/shop", data=body, headers=signed(SECRET, body))
    document = await problem(response, 400, "invalid-json")
    assert "nested" in document["detail"]
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


async def test_nesting_within_the_limit_and_large_but_sane_numbers_are_kept(
    client: TestClient, quiet: Any
) -> None:
    metadata = {"deep": json.loads(nested(25)), "n": 10**40, "f": -1.5e300, "text": "naïve 😀"}
    accepted = await signup(client, metadata=metadata)
    assert accepted["metadata"] == metadata


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_webhook_body_must_be_declared_json(
    content_type: str | None,
    client: TestClient,
    smtp: SmtpSink,
    worker: None,
    store: Redis,
    settings: Settings,
    quiet: Any,
) -> None:
    body = json.dumps(signup_event())
    headers = signed(SECRET, body)
    del headers["content-type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.post("/webhooks/shop", data=body.encode(), headers=headers)
    await problem(response, 415, "unsupported-media-type")
    await assert_nothing_happened(client, smtp, store, settings.redis_prefix)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/webhook+json"]
)
async def test_json_media_types_are_accepted(
    content_type: str, client: TestClient, quiet: Any
) -> None:
    body = json.dumps(signup_event())
    headers = {**signed(SECRET, body), "content-type": content_type}
    response = await client.post("/webhooks/shop", data=body, headers=headers)
    assert response.status == 202, await response.text()


# ---------------------------------------------------------------- the public API


@pytest.fixture
async def vid(client: TestClient) -> str:
    created: str = (await signup(client))["id"]
    return created


CHECK_BODIES: dict[str, tuple[str, int, str, str | None]] = {
    "nested 30000 deep": ('{"code": ' + nested(30_000) + "}", 400, "invalid-json", None),
    "integer of 5000 digits": ('{"code": ' + "1" * 5000 + "}", 422, "validation", "code"),
    "NaN": ('{"code": NaN}', 422, "validation", "code"),
    "surrogate": ('{"code": "\\udc00"}', 422, "validation", "code"),
    "not UTF-8": ('{"code": "\xff"}', 400, "invalid-json", None),
}


@pytest.mark.parametrize("case", list(CHECK_BODIES))
async def test_hostile_check_bodies_are_problems_and_cost_no_attempt(
    case: str, client: TestClient, vid: str, quiet: Any
) -> None:
    text, status, slug, field = CHECK_BODIES[case]
    data = text.encode("latin-1") if case == "not UTF-8" else text.encode()
    response = await client.post(
        f"/v1/verifications/{vid}/check",
        data=data,
        headers={**auth(), "Content-Type": "application/json"},
    )
    document = await problem(response, status, slug)
    if field is not None:
        assert [e["field"] for e in document["errors"]] == [field]
    resource = await (await client.get(f"/v1/verifications/{vid}", headers=auth())).json()
    assert resource["attempts_left"] == 5


async def test_check_body_must_be_declared_json(client: TestClient, vid: str, quiet: Any) -> None:
    response = await client.post(
        f"/v1/verifications/{vid}/check",
        data=b'{"code": "123456"}',
        headers={**auth(), "Content-Type": "text/plain"},
    )
    await problem(response, 415, "unsupported-media-type")


async def test_resend_without_a_body_needs_no_content_type(
    client: TestClient, vid: str, quiet: Any
) -> None:
    response = await client.post(f"/v1/verifications/{vid}/resend", headers=auth())
    # Refused only by the cooldown (the first send was just now), not for its missing body.
    await problem(response, 429, "rate-limited")


# ---------------------------------------------------------------- pages and methods


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_non_ascii_unsubscribe_token_is_the_invalid_link_page(
    method: str, client: TestClient, quiet: Any
) -> None:
    # A well-formed address part (alice@example.com) with a MAC part that is not ASCII.
    response = await client.request(method, "/unsubscribe/YWxpY2VAZXhhbXBsZS5jb20.%C3%A9%E2%9C%93")
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "This link is not valid" in await response.text()


def _concrete(path: str) -> str:
    return path.replace("{site}", "shop").replace("{id}", "ver_x").replace("{token}", "t.t")


async def test_unsupported_methods_are_405_with_allow_on_every_route(
    client: TestClient, quiet: Any
) -> None:
    by_path: dict[str, set[str]] = {}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "*":
            by_path.setdefault(path, set()).add(route.method)
    assert len(by_path) >= 10, by_path
    for path, methods in by_path.items():
        response = await client.request("TRACE", _concrete(path))
        await problem(response, 405, "method-not-allowed")
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed == methods, path


# ---------------------------------------------------------------- slow clients


@pytest.fixture
async def impatient(aiohttp_client: Any, make_settings: Any) -> TestClient:
    """The production runner with one-second timeouts."""
    settings = make_settings(http={"idle_timeout_seconds": 1, "read_timeout_seconds": 1})
    client: TestClient = await aiohttp_client(HardenedServer(create_app(settings), settings.http))
    return client


async def test_a_request_head_that_never_ends_is_closed(impatient: TestClient) -> None:
    assert impatient.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient.port)
    writer.write(b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    # The server hangs up (EOF) long before this generous deadline.
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_a_body_that_trickles_is_a_408_and_closed(impatient: TestClient, quiet: Any) -> None:
    assert impatient.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient.port)
    writer.write(
        b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"type": '
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)  # the whole answer, then EOF
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408", head
    assert json.loads(body)["type"] == "/docs#problem-request-timeout"
