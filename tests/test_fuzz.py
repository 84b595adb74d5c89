"""Property tests: correctly signed random requests never get a 5xx, and every error is a problem.

Hypothesis runs in a worker thread and hands each request to the test's event loop, where
the real app and its Redis live. ``TIDINGS_FUZZ_EXAMPLES`` raises the budget (default 40 per
property, a few seconds; 2,000 is a thorough local run).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import SECRET, auth, signup
from tests.test_inbound import PROBLEM

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "40"))

fuzz_settings = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,  # no wall-clock budgets: the loop is shared with the app
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every JSON value json.dumps can write, NaN, infinities and lone surrogates included.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**60, max_value=10**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)

_FIELDS = [
    "user_id",
    "email",
    "phone",
    "channel",
    "locale",
    "remind_after",
    "metadata",
    "subscribe",
]
_TYPICAL = {
    "user_id": st.text(max_size=300),
    "email": st.sampled_from(["a@example.com", "josé@example.com", "x@", "@", ""]) | st.text(),
    "phone": st.sampled_from(["+8613800138000", "138 0013 8000", "+1"]) | st.text(max_size=40),
    "channel": st.sampled_from(["email", "sms", "link", "telegram", "pigeon"]),
    "locale": st.sampled_from(["en", "zh", "zh-Hant-TW", "xx"]) | st.text(max_size=40),
    "remind_after": st.integers(),
    "metadata": json_values,
    "subscribe": json_values,
}
signup_data = st.fixed_dictionaries(
    {}, optional={name: _TYPICAL[name] | json_values for name in _FIELDS}
)
envelopes = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["signup.created", "signup.canceled", "user.deleted"])
        | st.text(max_size=20),
        "timestamp": st.sampled_from(["2026-11-23T10:00:00Z", "soon", ""]) | json_values,
        "data": signup_data | json_values,
    }
)
# Raw JSON text json.dumps never writes, but a hostile sender does.
hostile_fragments = st.one_of(
    st.sampled_from([33, 1_000, 30_000]).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from([65, 4_301, 5_000]).map(lambda digits: "9" * digits),
    st.sampled_from(["NaN", "-Infinity", "1e999", '"\\ud800"', '{"\\udfff": 1}']),
)
# Mostly around an otherwise valid signup, so the fragment is what gets judged.
valid_data = st.just({"user_id": "u-1", "email": "alice@example.com", "channel": "email"})
hostile_envelopes = st.tuples(valid_data | signup_data, hostile_fragments).map(
    lambda pair: (
        json.dumps(
            {"type": "signup.created", "timestamp": "2026-11-23T10:00:00Z", "data": pair[0]}
        )[:-2]
        + (", " if pair[0] else "")
        + f'"metadata": {{"x": {pair[1]}}}}}}}'
    )
)
bodies = (envelopes.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=200)).map(
    str.encode
) | st.binary(max_size=200)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=["Cc"]),
    max_size=60,
)
extra_headers = st.dictionaries(
    st.sampled_from(["content-type", "x-request-id", "accept", "accept-language", "x-anything"]),
    st.sampled_from(["application/json", "application/x+json", "text/plain", ""]) | header_text,
    max_size=3,
)
# Header text an HTTP client will send (it refuses control characters itself).
message_ids = st.none() | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, exclude_categories=["Cc"]),
    min_size=1,
    max_size=300,
)


def _not_json(constant: str) -> None:
    raise AssertionError(f"the answer carries {constant}, which is not JSON")


async def assert_documented(response: Any) -> None:
    """No 5xx; an error is a problem document for its own status; a success is JSON."""
    text = await response.text()
    assert response.status < 500, text
    document = json.loads(text, parse_constant=_not_json)  # strict, as receivers parse
    if response.status >= 400:
        assert response.content_type == PROBLEM, text
        assert document["status"] == response.status
        assert document["type"].startswith("/docs#problem-")
        assert isinstance(document["title"], str) and isinstance(document["detail"], str)
        for error in document.get("errors", []):
            assert isinstance(error["field"], str) and isinstance(error["message"], str)
    else:
        assert response.content_type == "application/json", text
        assert document.get("object") == "verification" or "canceled" in document, text


def run_property(
    loop: asyncio.AbstractEventLoop, post: Callable[..., Awaitable[None]], *strategies: Any
) -> Awaitable[None]:
    """Run a Hypothesis property in a thread; each example is awaited on ``loop``."""

    @fuzz_settings
    @given(st.tuples(*strategies))
    def prop(example: tuple[Any, ...]) -> None:
        asyncio.run_coroutine_threadsafe(post(*example), loop).result(timeout=60)

    return asyncio.to_thread(prop)


def sign(msg_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers over the exact bytes (the library signs text only)."""
    ts = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def webhook_poster(client: TestClient) -> Callable[..., Awaitable[None]]:
    """Post one correctly signed body with extra headers; assert the answer is documented."""

    async def post(body: bytes, headers: dict[str, str], msg_id: str | None) -> None:
        signed = sign(msg_id or f"msg_{secrets.token_hex(8)}", body)
        response = await client.post("/webhooks/shop", data=body, headers={**signed, **headers})
        await assert_documented(response)

    return post


async def test_signed_random_webhooks_never_5xx(client: TestClient) -> None:
    post = webhook_poster(client)
    await run_property(asyncio.get_running_loop(), post, bodies, extra_headers, message_ids)


async def test_signed_hostile_webhooks_never_5xx(client: TestClient) -> None:
    post = webhook_poster(client)
    hostile = hostile_envelopes.map(str.encode)
    await run_property(asyncio.get_running_loop(), post, hostile, extra_headers, st.none())


async def test_random_check_bodies_never_5xx(client: TestClient) -> None:
    vid = (await signup(client))["id"]

    async def post(body: bytes, headers: dict[str, str], target: str) -> None:
        response = await client.post(
            f"/v1/verifications/{target}/check",
            data=body,
            headers={**auth(), "content-type": "application/json", **headers},
        )
        await assert_documented(response)

    targets = st.just(vid) | st.text(
        st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=40
    )
    check_bodies = (
        st.fixed_dictionaries({"code": json_values | st.text(max_size=12)})
        .map(json.dumps)
        .map(str.encode)
        | hostile_fragments.map(lambda fragment: f'{{"code": {fragment}}}'.encode())
        | bodies
    )
    await run_property(asyncio.get_running_loop(), post, check_bodies, extra_headers, targets)
