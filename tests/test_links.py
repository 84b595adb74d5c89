"""Magic links over real HTTP: a GET shows a confirm page, a POST approves once."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from config.settings import Settings
from tests.conftest import (
    SmtpSink,
    auth,
    code_from,
    get_verification,
    html_of,
    post_event,
    signup_event,
    site,
    wait_for,
)
from tidings.embedded_redis import free_port
from verification.keys import Keys
from verification.models import now_ms
from webhooks import keys as app_keys
from webhooks.app import create_app

PUBLIC_URL = "https://verify.tidings.test"
RETURN_URL = "https://shop.example/welcome?src=mail"
LINK = re.compile(r"(https?://[^\s\"'<>]+/v/([0-9a-f]{32}\.[A-Za-z0-9_-]{32}))(?![A-Za-z0-9_-])")

OpenApp = Callable[..., Awaitable[tuple[TestClient, Settings]]]

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class Callbacks:
    """A site's callback endpoint: keeps every outbound event it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _handle(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    receiver = Callbacks()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client that does not follow redirects by itself."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def open_app(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Awaitable[None]],
) -> OpenApp:
    """The real app and a worker, for one site built from ``site_extra``."""

    async def open_(
        *, worker: bool = True, site_extra: dict[str, Any] | None = None, **overrides: Any
    ) -> tuple[TestClient, Settings]:
        extra = {"channels": ["email", "link"], **(site_extra or {})}
        settings = make_settings(public_url=PUBLIC_URL, sites=[site(**extra)], **overrides)
        if worker:
            await start_worker(settings)
        client: TestClient = await aiohttp_client(create_app(settings))
        return client, settings

    return open_


def link_token(message: EmailMessage) -> str:
    """The magic link's token as a person finds it in the text part (also in the HTML)."""
    body = message.get_body(("plain",))
    assert body is not None
    found = LINK.findall(body.get_content())
    assert len(found) == 1, "expected exactly one magic link in the text part"
    url, token = found[0]
    assert url == f"{PUBLIC_URL}/v/{token}"
    assert f'href="{url}"' in html_of(message)
    return str(token)


def page_url(client: TestClient, token: str) -> str:
    """The link's path on the server under test (``public_url`` is the proxy in front)."""
    return str(client.make_url(f"/v/{token}"))


async def open_link(
    http: aiohttp.ClientSession, client: TestClient, token: str, method: str = "GET", **kw: Any
) -> tuple[int, str, Any]:
    async with http.request(
        method, page_url(client, token), allow_redirects=False, **kw
    ) as response:
        return response.status, await response.text(), response.headers


def assert_private_page(headers: Any) -> None:
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"


async def signup_and_mail(
    client: TestClient, smtp: SmtpSink, count: int = 1, **data: Any
) -> tuple[str, EmailMessage]:
    response = await post_event(client, signup_event(**data))
    assert response.status == 202, await response.text()
    vid = (await response.json())["id"]
    messages = await smtp.wait_for_messages(count)
    return vid, messages[count - 1]


async def status_of(client: TestClient, vid: str) -> str:
    return str((await get_verification(client, vid))["status"])


async def test_get_shows_a_confirm_page_and_post_approves_and_redirects(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession, callbacks: Callbacks
) -> None:
    client, _ = await open_app(site_extra={"return_url": RETURN_URL, "callback_url": callbacks.url})
    vid, message = await signup_and_mail(client, smtp)
    code = code_from(message)  # the code email carries both the code and the link
    token = link_token(message)
    assert token.startswith(vid.removeprefix("ver_") + ".")

    # Opening the link (twice, as a mail scanner then the person would) approves nothing.
    for _ in range(2):
        status, html, headers = await open_link(http, client, token)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert_private_page(headers)
        assert "Confirm your email address" in html
        assert "Acme Shop" in html
        assert re.search(r'<form[^>]*method="post"', html, re.IGNORECASE)
        assert "<button" in html
    status, _, headers = await open_link(http, client, token, "HEAD")
    assert status == 200
    assert_private_page(headers)
    assert await status_of(client, vid) == "pending"

    status, _, headers = await open_link(http, client, token, "POST")
    assert status == 303
    assert_private_page(headers)
    target = URL(headers["Location"])
    assert (target.scheme, target.host, target.path) == ("https", "shop.example", "/welcome")
    assert dict(target.query) == {"src": "mail", "verification_id": vid, "status": "approved"}

    assert await status_of(client, vid) == "approved"
    check = await client.post(f"/v1/verifications/{vid}/check", json={"code": code}, headers=auth())
    assert check.status == 200
    assert await check.json() == {"valid": False, "status": "approved", "attempts_left": 5}

    # The site hears about it like after a code check.
    await wait_for(lambda: callbacks.events, what="the approval event")
    [event] = callbacks.events
    assert event["type"] == "verification.approved"
    assert event["data"]["id"] == vid
    assert event["data"]["status"] == "approved"

    # A second use: a clear page, no second approval, no form.
    for method in ("POST", "GET"):
        status, html, headers = await open_link(http, client, token, method)
        assert status == 410
        assert_private_page(headers)
        assert "already been used" in html
        assert "<form" not in html
        assert 'href="https://shop.example/welcome?src=mail"' in html


async def test_without_return_url_post_shows_a_confirmed_page(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app()
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    status, html, headers = await open_link(http, client, token, "POST")
    assert status == 200
    assert "Location" not in headers
    assert_private_page(headers)
    assert "Email address confirmed" in html
    assert "<form" not in html
    assert await status_of(client, vid) == "approved"


async def test_link_after_the_code_was_checked_is_used(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(site_extra={"return_url": RETURN_URL})
    vid, message = await signup_and_mail(client, smtp)
    check = await client.post(
        f"/v1/verifications/{vid}/check", json={"code": code_from(message)}, headers=auth()
    )
    assert (await check.json())["status"] == "approved"
    status, html, _ = await open_link(http, client, link_token(message), "POST")
    assert status == 410
    assert "already been used" in html


async def test_expired_link_shows_the_expired_page(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, settings = await open_app(site_extra={"return_url": RETURN_URL})
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    # Set-up, not behaviour under test: the shortest ttl a site can have is 60 s, so the
    # verification's expiry is moved into the past in Redis instead of waiting for it.
    redis = client.app[app_keys.REDIS]
    await redis.hset(Keys(settings.redis_prefix).verification(vid), "expires_at", now_ms() - 1000)

    for method in ("GET", "POST", "GET"):
        status, html, headers = await open_link(http, client, token, method)
        assert status == 410
        assert_private_page(headers)
        assert "This link has expired" in html
        assert "<form" not in html
    assert await status_of(client, vid) == "expired"


async def test_resend_replaces_the_link(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(
        site_extra={"return_url": RETURN_URL, "codes": {"resend_cooldown_seconds": 0}}
    )
    vid, first = await signup_and_mail(client, smtp)
    old = link_token(first)
    resent = await client.post(f"/v1/verifications/{vid}/resend", headers=auth())
    assert resent.status == 202, await resent.text()
    second = (await smtp.wait_for_messages(2))[1]
    new = link_token(second)
    assert new != old

    for method in ("GET", "POST"):
        status, html, headers = await open_link(http, client, old, method)
        assert status == 404
        assert_private_page(headers)
        assert "This link is not valid" in html
        assert "<form" not in html
    assert await status_of(client, vid) == "pending"

    status, _, headers = await open_link(http, client, new, "POST")
    assert status == 303
    assert URL(headers["Location"]).query["verification_id"] == vid
    assert await status_of(client, vid) == "approved"


async def test_canceled_verification_link_no_longer_works(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app()
    vid, message = await signup_and_mail(client, smtp)
    canceled = await client.post(f"/v1/verifications/{vid}/cancel", headers=auth())
    assert canceled.status == 200
    status, html, _ = await open_link(http, client, link_token(message), "POST")
    assert status == 410
    assert "no longer valid" in html
    assert await status_of(client, vid) == "canceled"


async def test_link_channel_email_has_a_link_and_no_code(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(site_extra={"return_url": RETURN_URL})
    vid, message = await signup_and_mail(client, smtp, channel="link")
    assert (await get_verification(client, vid))["channel"] == "link"
    assert message["Subject"] == "Confirm your Acme Shop email address"
    token = link_token(message)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    visible_html = re.sub(r"<[^>]*>", " ", html_of(message))  # tags hold colours, sizes
    for body in (text, visible_html):
        without_link = LINK.sub("", body)
        assert not re.search(r"(?<!\w)\d{4,10}(?!\w)", without_link), "a code in the email"

    status, _, headers = await open_link(http, client, token, "POST")
    assert status == 303
    assert URL(headers["Location"]).query["status"] == "approved"
    assert await status_of(client, vid) == "approved"


async def test_pages_in_chinese(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(site_extra={"codes": {"resend_cooldown_seconds": 0}})
    vid, message = await signup_and_mail(client, smtp, locale="zh-CN", channel="link")
    token = link_token(message)

    status, html, _ = await open_link(http, client, token)
    assert status == 200
    assert 'lang="zh-CN"' in html
    assert "确认您的邮箱地址" in html
    assert ">确认</button>" in html

    status, html, _ = await open_link(http, client, token, "POST")
    assert status == 200
    assert "邮箱地址已确认" in html
    assert await status_of(client, vid) == "approved"

    status, html, _ = await open_link(http, client, token)
    assert status == 410
    assert "此链接已被使用" in html
    assert "already" not in html


async def test_expired_and_replaced_pages_in_chinese(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, settings = await open_app(site_extra={"default_locale": "zh"})
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    status, html, _ = await open_link(http, client, bad)
    assert status == 404
    assert "此链接无效" in html
    redis = client.app[app_keys.REDIS]
    await redis.hset(Keys(settings.redis_prefix).verification(vid), "expires_at", now_ms() - 1000)
    status, html, _ = await open_link(http, client, token)
    assert status == 410
    assert "此链接已过期" in html


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "0" * 32 + "." + "a" * 32,  # well-formed, but no such verification
        "0" * 32 + "." + "a" * 31,  # one character short
        "Z" * 32 + "." + "a" * 32,  # not hex
        "x" * 2000,
        "%00",
    ],
)
async def test_garbage_tokens_are_not_found(
    open_app: OpenApp, http: aiohttp.ClientSession, token: str
) -> None:
    client, _ = await open_app(worker=False)
    for method in ("GET", "POST"):
        status, html, headers = await open_link(http, client, token, method)
        assert status == 404
        assert headers["Content-Type"].startswith("text/html")
        assert_private_page(headers)
        assert "This link is not valid" in html


async def test_right_verification_wrong_secret_does_not_approve(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app()
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    head, _, secret = token.partition(".")
    forged = f"{head}.{secret[::-1]}" if secret[::-1] != secret else f"{head}.{'A' * 32}"
    status, html, _ = await open_link(http, client, forged, "POST")
    assert status == 404
    assert "This link is not valid" in html
    assert await status_of(client, vid) == "pending"


async def test_per_ip_limit_answers_a_429_page(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(http={"page_requests_per_minute": 3})
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    for _ in range(3):
        status, _, _ = await open_link(http, client, token)
        assert status == 200
    # Over the limit, and a made-up X-Forwarded-For does not help when it is not trusted.
    for method, headers in (("GET", {}), ("POST", {"X-Forwarded-For": "203.0.113.9"})):
        status, html, answer = await open_link(http, client, token, method, headers=headers)
        assert status == 429
        assert 1 <= int(answer["Retry-After"]) <= 60
        assert_private_page(answer)
        assert "Too many attempts" in html
    assert await status_of(client, vid) == "pending"


async def test_per_ip_limit_behind_a_trusted_proxy_counts_each_client(
    open_app: OpenApp, http: aiohttp.ClientSession
) -> None:
    client, _ = await open_app(
        worker=False, http={"page_requests_per_minute": 1, "trust_forwarded_for": True}
    )
    token = "0" * 32 + "." + "a" * 32

    async def status_for(ip: str) -> int:
        headers = {"X-Forwarded-For": f"198.51.100.7, {ip}"}
        return (await open_link(http, client, token, headers=headers))[0]

    assert await status_for("192.0.2.1") == 404
    assert await status_for("192.0.2.1") == 429
    assert await status_for("192.0.2.2") == 404


async def test_concurrent_posts_approve_exactly_once(
    open_app: OpenApp, smtp: SmtpSink, http: aiohttp.ClientSession, callbacks: Callbacks
) -> None:
    client, settings = await open_app(
        site_extra={"return_url": RETURN_URL, "callback_url": callbacks.url}
    )
    vid, message = await signup_and_mail(client, smtp)
    token = link_token(message)

    results = await asyncio.gather(*(open_link(http, client, token, "POST") for _ in range(10)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [303] + [410] * 9
    assert all("already been used" in html for status, html, _ in results if status == 410)
    assert await status_of(client, vid) == "approved"

    stats = Keys(settings.redis_prefix).stats
    approved = await client.app[app_keys.REDIS].hget(stats, "verifications:approved")
    assert int(approved) == 1
    await wait_for(lambda: callbacks.events, what="the approval event")
    assert [e["type"] for e in callbacks.events] == ["verification.approved"]


async def test_link_secret_is_never_logged(
    open_app: OpenApp,
    smtp: SmtpSink,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Whoever reads the logs must not be able to approve somebody else's signup.
    caplog.set_level(logging.DEBUG)
    client, _ = await open_app(site_extra={"return_url": RETURN_URL})
    _, message = await signup_and_mail(client, smtp)
    token = link_token(message)
    await open_link(http, client, token)
    await open_link(http, client, token, "POST")
    secret = token.partition(".")[2]
    for record in caplog.records:
        if record.name in ("aiohttp.access", "mail.log"):  # off in Tidings; the test SMTP sink
            continue
        fields = [record.getMessage()]
        fields += [str(v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS]
        for value in fields:
            assert secret not in value, f"the link's secret is logged by {record.name}: {value}"
