"""``/openapi.json`` as a reference: examples that match their schemas, every problem and
outbound event documented, and code samples that really work."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from standardwebhooks import Webhook

from config.settings import Settings
from tests.conftest import SECRET, auth, post_event, signup_event, site, wait_for
from tests.emulators.site_callbacks import Receiver
from webhooks.app import create_app
from webhooks.problems import PROBLEMS

ROOT = Path(__file__).resolve().parent.parent
DOC_URI = "urn:tidings:openapi"


@pytest.fixture
async def document(client: TestClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator whose ``#/components/…`` refs resolve in the document."""
    resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
    rooted = json.loads(json.dumps(schema).replace('"#/components/', f'"{DOC_URI}#/components/'))
    return Draft202012Validator(rooted, registry=registry)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for section in ("paths", "webhooks"):
        for path, item in document[section].items():
            for method, operation in item.items():
                yield f"{section} {method.upper()} {path}", method, operation


def _media(operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, media type object) of the request body and every response."""
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
        yield f"request {media_type}", media
    for status, response in operation["responses"].items():
        for media_type, media in response.get("content", {}).items():
            yield f"{status} {media_type}", media


def test_every_operation_has_request_and_response_examples_that_match(
    document: dict[str, Any],
) -> None:
    checked = 0
    for name, _, operation in _operations(document):
        has_response_example = False
        for where, media in _media(operation):
            examples = [e["value"] for e in media.get("examples", {}).values()]
            if "example" in media:
                examples.append(media["example"])
            if where.startswith("request") and media["schema"].get("$ref"):
                assert examples, f"{name}: {where} has no example"
            if not where.startswith("request") and examples:
                has_response_example = True
            if "schema" not in media or media["schema"].get("type") == "string":
                continue
            validator = _validator(document, media["schema"])
            for value in examples:
                errors = [e.message for e in validator.iter_errors(value)]
                assert not errors, f"{name} {where}: {errors}"
                checked += 1
        if name.startswith("paths") and any(
            "content" in r for r in operation["responses"].values()
        ):
            assert has_response_example, f"{name} has no response example"
    assert checked > 40


def test_every_problem_is_documented_with_its_anchor(document: dict[str, Any]) -> None:
    guide = document["info"]["description"]
    for slug, (status, title) in PROBLEMS.items():
        row = re.search(
            rf'<a id="problem-{slug}"></a>`/docs#problem-{slug}` \| (\d+) \| (.+) \|', guide
        )
        assert row, slug
        assert (int(row.group(1)), row.group(2)) == (status, title)
    # Each problem response carries an example of each of its types.
    for name, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/problem+json")
            if media is None:
                continue
            for slug, example in media["examples"].items():
                assert example["value"]["type"] == f"/docs#problem-{slug}", name
                assert str(example["value"]["status"]) == status, name


def test_intro_names_every_channel_and_the_signing_libraries(document: dict[str, Any]) -> None:
    guide = document["info"]["description"]
    for word in ("email", "SMS", "Ronglian", "Telegram", "magic link", "callback_url"):
        assert word in guide, word
    assert "from standardwebhooks import Webhook" in guide
    assert 'import { Webhook } from "standardwebhooks"' in guide
    for hand_written in ("import hmac", "hashlib", "createHmac"):  # the libraries sign
        assert hand_written not in guide, hand_written
    assert "curl -s" in guide
    assert "List-Unsubscribe-Post" in guide


def _event_types_in_lua() -> set[str]:
    """Every final status the Lua scripts end a verification with (each emits its event)."""
    statuses = set()
    for script in (ROOT / "verification" / "lua").glob("*.lua"):
        text = script.read_text(encoding="utf-8")
        statuses |= set(re.findall(r"finish\(sk, v, now, [^,]+, '(\w+)'\)", text))
    return {f"verification.{status}" for status in statuses}


def test_webhooks_section_lists_every_event_tidings_sends(document: dict[str, Any]) -> None:
    emitted = _event_types_in_lua()
    assert "verification.approved" in emitted and "verification.failed" in emitted
    assert set(document["webhooks"]) == emitted
    for event_type, item in document["webhooks"].items():
        operation = item["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert set(operation["responses"]) >= {"2XX", "410"}
        assert "secret" in operation["description"]
        example = next(
            iter(operation["requestBody"]["content"]["application/json"]["examples"].values())
        )
        assert example["value"]["type"] == event_type


@pytest.fixture
def receiver_settings(make_settings: Callable[..., Settings], receiver: Receiver) -> Settings:
    return make_settings(sites=[site(callback_url=receiver.url)])


async def test_a_real_event_matches_its_documented_payload(
    aiohttp_client: Any,
    receiver_settings: Settings,
    receiver: Receiver,
    start_worker: Callable[[Settings], Awaitable[None]],
) -> None:
    await start_worker(receiver_settings)
    client: TestClient = await aiohttp_client(create_app(receiver_settings))
    document = await (await client.get("/openapi.json")).json()
    accepted = await post_event(client, signup_event(metadata={"order": 7}))
    assert accepted.status == 202
    vid = (await accepted.json())["id"]
    canceled = await client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
    assert canceled.status == 200

    await wait_for(lambda: receiver.calls, timeout=15, what="the canceled event")
    call = receiver.calls[0]
    # As the docs tell a site: the standardwebhooks library and the site's secret.
    event = Webhook(SECRET).verify(call["body"], call["headers"])
    assert event["type"] == "verification.canceled"
    media = document["webhooks"]["verification.canceled"]["post"]["requestBody"]["content"]
    errors = [
        e.message
        for e in _validator(document, media["application/json"]["schema"]).iter_errors(event)
    ]
    assert errors == []
    assert event["data"]["id"] == vid and event["data"]["status"] == "canceled"


async def test_the_documented_python_signing_sample_posts_a_signup(
    client: TestClient, document: dict[str, Any]
) -> None:
    # The sample runs as its own process against the test server's real port.
    guide = document["info"]["description"]
    sample = re.search(r"```python\n(# pip install standardwebhooks\n.*?)```", guide, re.S)
    assert sample, "no Python signing sample"
    source = sample.group(1)
    base = str(client.make_url("")).rstrip("/")
    for name, value in {"TIDINGS_URL": base, "SITE_ID": "shop", "WEBHOOK_SECRET": SECRET}.items():
        source, count = re.subn(rf'^{name} = ".*?"', f"{name} = {value!r}", source, flags=re.M)
        assert count == 1, name
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", source, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    status, vid, state = out.decode().split()
    assert (status, state) == ("202", "pending")
    shown = await client.get(f"/v1/verifications/{vid}", headers=auth())
    assert (await shown.json())["user_id"] == "u-1842"
