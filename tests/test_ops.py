"""Operations: health, readiness through a Redis outage, metrics, OpenAPI, docs, request ids."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from tests.conftest import (
    API_KEY,
    SmtpSink,
    auth,
    code_from,
    post_event,
    signup_event,
    wait_for,
)
from tidings.embedded_redis import EmbeddedRedis
from webhooks.app import create_app

API_PATHS = (
    "/webhooks/{site}",
    "/v1/verifications/{id}",
    "/v1/verifications/{id}/check",
    "/v1/verifications/{id}/resend",
    "/v1/verifications/{id}/cancel",
)


# ---------------------------------------------------------------- health and readiness


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_with_redis_up(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["redis"] is True
    assert body["broker"] is True


async def _readyz(client: TestClient) -> tuple[int, dict[str, Any], str | None]:
    response = await client.get("/readyz")
    return response.status, await response.json(), response.headers.get("Retry-After")


async def test_redis_outage_is_503_and_recovers_by_itself(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    await redis.start()
    try:
        settings = make_settings(redis_url=redis.url)
        client = await aiohttp_client(create_app(settings))
        status, body, _ = await _readyz(client)
        assert (status, body["status"]) == (200, "ok")

        await redis.stop()

        started = time.monotonic()
        status, body, retry_after = await _readyz(client)
        assert status == 503
        assert body == {"status": "unavailable", "redis": False}
        assert retry_after is not None and int(retry_after) > 0
        assert time.monotonic() - started < 5, "readiness must answer quickly during an outage"

        started = time.monotonic()
        response = await post_event(client, signup_event())
        text = await response.text()
        assert response.status == 503, text
        assert response.content_type == "application/problem+json"
        problem = json.loads(text)
        assert problem["type"] == "/docs#problem-unavailable"
        assert problem["status"] == 503
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 15

        # The public API is a 503 too, never a 500.
        api = await client.get("/v1/verifications/ver_0123", headers=auth())
        assert api.status == 503
        assert api.content_type == "application/problem+json"

        # /metrics still answers: HTTP metrics matter most during an outage.
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert "tidings_http_requests_total" in await metrics.text()

        # Same port; without persistence the stream and consumer group are gone, and
        # /readyz declares them again instead of answering "starting" forever.
        await redis.start()
        await wait_for(
            lambda: _ready(client), timeout=15, what="/readyz to recover after Redis restarts"
        )
        response = await post_event(client, signup_event())
        assert response.status == 202
    finally:
        await redis.stop()


async def _ready(client: TestClient) -> bool:
    status, _, _ = await _readyz(client)
    return status == 200


async def test_first_signup_after_redis_restart_is_emailed_promptly(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
    smtp: SmtpSink,
    tmp_path: Path,
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    await redis.start()
    try:
        settings = make_settings(redis_url=redis.url)
        client = await aiohttp_client(create_app(settings))
        await start_worker(settings)
        first = await post_event(client, signup_event(email="before@example.com"))
        assert first.status == 202
        await smtp.wait_for_messages(1)

        await redis.stop()
        assert (await client.get("/readyz")).status == 503
        await redis.start()
        await wait_for(lambda: _ready(client), timeout=15, what="/readyz to recover")

        after = await post_event(client, signup_event(user_id="u-2", email="after@example.com"))
        assert after.status == 202
        await smtp.wait_for_messages(2, timeout=5)
        assert [m["To"] for m in smtp.messages] == ["before@example.com", "after@example.com"]
    finally:
        await redis.stop()


# ---------------------------------------------------------------- metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return _samples(await response.text())


async def test_metrics_after_one_full_flow(
    client: TestClient, smtp: SmtpSink, worker: None
) -> None:
    before = await _scrape(client)
    assert before[("tidings_queue_depth", ())] == 0

    created = await post_event(client, signup_event())
    assert created.status == 202
    vid = (await created.json())["id"]
    code = code_from((await smtp.wait_for_messages(1))[0])
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert (await check.json())["status"] == "approved"

    sent = ("tidings_deliveries_total", (("channel", "email"), ("outcome", "sent")))

    async def delivered() -> dict[Any, float] | None:
        samples = await _scrape(client)
        # Sent, and its task acknowledged (deleted from the stream).
        done = samples.get(sent) == 1 and samples[("tidings_queue_depth", ())] == 0
        return samples if done else None

    samples = await wait_for(delivered, what="the sent delivery to show in /metrics")
    assert samples[("tidings_verifications_total", (("status", "created"),))] == 1
    assert samples[("tidings_verifications_total", (("status", "approved"),))] == 1
    webhook = (
        "tidings_http_requests_total",
        (("method", "POST"), ("route", "/webhooks/{site}"), ("status", "202")),
    )
    assert samples[webhook] == 1
    check_route = (
        "tidings_http_requests_total",
        (("method", "POST"), ("route", "/v1/verifications/{id}/check"), ("status", "200")),
    )
    assert samples[check_route] == 1
    assert samples[("tidings_delivery_latency_seconds_count", ())] == 1
    # Cumulative buckets, as Prometheus reads them: 0 up to the send's latency, then 1.
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "tidings_delivery_latency_seconds_bucket"
    )
    counts = [value for _, value in buckets]
    assert len(counts) == 11
    assert counts == sorted(counts)
    assert counts[-2:] == [1, 1]  # 300 s and +Inf
    # Raw ids never become label values (unbounded cardinality).
    response = await client.get("/metrics")
    assert vid not in await response.text()


async def test_metrics_count_unknown_paths_under_one_label(client: TestClient) -> None:
    for n in range(3):
        assert (await client.get(f"/no/such/path/{n}")).status == 404
    samples = await _scrape(client)
    unmatched = [
        value
        for (name, labels), value in samples.items()
        if name == "tidings_http_requests_total" and ("status", "404") in labels
    ]
    assert sum(unmatched) == 3
    assert all("/no/such" not in str(key) for key in samples)


# ---------------------------------------------------------------- OpenAPI and docs


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_document(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    doc = await response.json()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in _refs(doc):
        _resolve(doc, ref)

    paths = doc["paths"]
    for path in API_PATHS:
        assert path in paths, path
        for method, operation in paths[path].items():
            assert method in {"get", "post"}
            assert operation["summary"]
            templated = set(re.findall(r"{(\w+)}", path))
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert templated == declared, path
            problems = {
                status: r
                for status, r in operation["responses"].items()
                if "application/problem+json" in r.get("content", {})
            }
            assert problems, f"{path} documents no problem responses"
            for r in problems.values():
                schema = r["content"]["application/problem+json"]["schema"]
                assert _resolve(doc, schema["$ref"]) is doc["components"]["schemas"]["Problem"]

    webhook = paths["/webhooks/{site}"]["post"]["responses"]
    for status in ("202", "200", "400", "401", "413", "422", "429", "503"):
        assert status in webhook, status
    headers = {p["name"] for p in paths["/webhooks/{site}"]["post"]["parameters"]}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
    for path in API_PATHS[1:]:
        for operation in paths[path].values():
            assert operation["security"] == [{"apiKey": []}]
            assert {"401", "404", "503"} <= set(operation["responses"]), path
    assert {"400", "422"} <= set(paths["/v1/verifications/{id}/check"]["post"]["responses"])
    assert {"409", "422", "429"} <= set(paths["/v1/verifications/{id}/resend"]["post"]["responses"])
    assert "409" in paths["/v1/verifications/{id}/cancel"]["post"]["responses"]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


async def test_openapi_lists_every_route_the_app_serves(client: TestClient) -> None:
    doc = await (await client.get("/openapi.json")).json()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    undocumented = {
        (method, path)
        for method, path in served
        if path not in {"/openapi.json", "/docs"} and method not in doc["paths"].get(path, {})
    }
    assert undocumented == set()


async def test_docs_page_mentions_every_path(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    for path in API_PATHS:
        assert f"<code>{path}</code>" in html, path
    for slug in ("invalid-signature", "too-large", "validation", "unavailable"):
        assert f'id="problem-{slug}"' in html
    assert 'href="/openapi.json"' in html
    assert API_KEY not in html


# ---------------------------------------------------------------- request ids


async def test_sane_request_id_is_echoed(client: TestClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "req-42.abc_DEF:7"})
    assert response.headers["X-Request-ID"] == "req-42.abc_DEF:7"


async def test_request_id_is_echoed_on_problems(client: TestClient) -> None:
    response = await client.get("/v1/verifications/nope", headers={"X-Request-ID": "trace-1"})
    assert response.status == 401
    assert response.headers["X-Request-ID"] == "trace-1"
    missing = await client.get("/nowhere", headers={"X-Request-ID": "trace-2"})
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"
    assert missing.headers["X-Request-ID"] == "trace-2"


@pytest.mark.parametrize(
    "incoming", ["has space", "x" * 65, "<script>", "semi;colon", "ünïcode", ""]
)
async def test_unsafe_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    headers = {"X-Request-ID": incoming} if incoming else {}
    response = await client.get("/healthz", headers=headers)
    generated = response.headers["X-Request-ID"]
    assert generated != incoming
    assert re.fullmatch(r"[0-9a-f]{16}", generated)


async def test_each_request_gets_its_own_id(client: TestClient) -> None:
    ids = {(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5
