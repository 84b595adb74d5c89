"""``/`` and ``/docs`` as a person sees them: headless Chromium at desktop and phone widths.

One Chromium is driven over the DevTools protocol (aiohttp's WebSocket client, no selenium);
screenshots land in ``/tmp/tidings-shots/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.test_hostile_input import raw_exchange, served
from webhooks.app import create_app
from webhooks.assets import REDOC_JS, asset_url

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path("/tmp/tidings-shots")
__all__ = ["served"]
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"
)

OPERATION_TITLES = [
    "Post a signed site event (Standard Webhooks)",
    "Get a verification",
    "Check a code",
    "Send a new code (the old one stops working)",
    "Cancel a pending verification",
]


class Page:
    """One browser tab, attached over the DevTools protocol."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.requested: dict[str, str] = {}  # request id → URL
        self.blocked: set[str] = set()  # request ids the browser refused to send
        self.errors: list[str] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    async def wait_until(self, expression: str, what: str, timeout: float = 30) -> Any:
        """Evaluate ``expression`` until it is truthy (a condition, not a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)
        return value

    async def open(self, url: str, size: tuple[int, int]) -> None:
        width, height = size
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,  # honours <meta name="viewport"> as a phone does
        )
        await self.send("Page.navigate", url=url)
        await self.wait_until("document.readyState === 'complete'", f"{url} to load")

    async def screenshot(self, name: str) -> Path:
        reply = await self.send("Page.captureScreenshot", format="png")
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(reply["data"]))
        return path

    async def overflow(self) -> int:
        """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
        value: int = await self.evaluate(
            "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
        return value


class Browser:
    """A headless Chromium and its DevTools WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"])
                if "error" in data:
                    future.set_exception(AssertionError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
                continue
            page = self._pages.get(data.get("sessionId", ""))
            if page is None:
                continue
            params = data.get("params", {})
            if data["method"] == "Network.requestWillBeSent":
                page.requested[params["requestId"]] = params["request"]["url"]
            elif data["method"] == "Network.loadingFailed" and params.get("blockedReason"):
                page.blocked.add(params["requestId"])
            elif data["method"] == "Runtime.exceptionThrown":
                page.errors.append(json.dumps(params["exceptionDetails"])[:500])

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        return await asyncio.wait_for(future, 30)

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium, started once per test and ended by its own process handle."""
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="tidings-chromium-")
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in CI has no user namespace for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    url = ""
    lines: list[str] = []
    while not url:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        if not line:
            raise AssertionError("chromium exited: " + "".join(lines[-10:]))
        lines.append(line)
        if match := re.search(r"DevTools listening on (ws://\S+)", line):
            url = match.group(1)
    drain = asyncio.create_task(process.stderr.read())  # a full pipe would block chromium
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        browser = Browser(ws)
        try:
            yield browser
        finally:
            await browser.close()
    process.terminate()
    await process.wait()
    drain.cancel()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def dev_client(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> TestClient:
    """The real app in development mode (so the landing page links the outbox)."""
    client: TestClient = await aiohttp_client(create_app(make_settings(dev=True)))
    return client


def _base(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


@needs_chromium
async def test_landing_page_in_a_browser(dev_client: TestClient, browser: Browser) -> None:
    page = await browser.new_page()
    base = _base(dev_client)
    for size_name, size in SIZES.items():
        await page.open(base + "/", size)
        await page.screenshot(f"landing-{size_name}")
        text = await page.evaluate("document.body.innerText")
        assert "Tidings" in text
        for word in ("email", "SMS", "Telegram", "reminders", "broadcasts"):
            assert word.lower() in text.lower(), word
        links = await page.evaluate(
            "[...document.querySelectorAll('a')].filter(a => a.offsetWidth > 0)"
            ".map(a => a.getAttribute('href'))"
        )
        for href in ("/docs", "/openapi.json", "/healthz", "/readyz", "/dev/outbox"):
            assert href in links, (size_name, href)
        assert await page.overflow() <= 0, f"scrolls sideways at {size}"
    assert page.errors == []


@needs_chromium
async def test_docs_rendered_by_redoc(client: TestClient, browser: Browser) -> None:
    page = await browser.new_page()
    base = _base(client)
    for size_name, size in SIZES.items():
        await page.open(base + "/docs", size)
        # Redoc rendered the whole document once the last webhook's title is on the page.
        await page.wait_until(
            "document.body.innerText.includes('verification.failed')", "Redoc to render"
        )
        await page.screenshot(f"docs-{size_name}")
        text = await page.evaluate("document.body.innerText")
        for title in OPERATION_TITLES:
            assert title in text, (size_name, title)
        assert "Events to your site" in text
        for event in ("approved", "expired", "max_attempts_reached", "canceled", "failed"):
            assert f"verification.{event}" in text
        assert "Ronglian" in text and "Telegram" in text
        assert "Signing signup webhooks" in text
        assert "from standardwebhooks import Webhook" in text
        assert "Loading the API reference" not in text
        assert await page.overflow() <= 0, f"scrolls sideways at {size}"
        for heading in ("Check a code", "verification.approved: The person is verified"):
            await page.evaluate(
                "[...document.querySelectorAll('h2')]"
                f".find(h => h.innerText.includes({json.dumps(heading)})).scrollIntoView()"
            )
            await page.screenshot(f"docs-{size_name}-{heading.split(':')[0].replace(' ', '-')}")
            assert await page.overflow() <= 0, f"{heading} scrolls sideways at {size}"

    # A problem's type URI lands on its row of the problems table.
    await page.open(base + "/docs#problem-rate-limited", SIZES["desktop"])
    await page.wait_until("!!document.getElementById('problem-rate-limited')", "the problem anchor")
    await page.wait_until("window.scrollY > 1000", "the scroll to the problem")
    await page.screenshot("docs-problem-anchor")
    # Nothing left the machine: no CDN, no web fonts, no telemetry (Redoc's footer logo
    # is refused by the page's Content-Security-Policy).
    foreign = [
        url
        for request_id, url in page.requested.items()
        if not url.startswith((base, "data:", "blob:")) and request_id not in page.blocked
    ]
    assert foreign == []
    assert page.errors == []


# ---------------------------------------------------------------- the same pages over HTTP


async def test_landing_answers_json_to_json_clients(client: TestClient) -> None:
    response = await client.get("/", headers={"Accept": "application/json"})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.headers["Vary"] == "Accept"
    document = await response.json()
    hrefs = [link["href"] for link in document["links"]]
    assert hrefs == ["/docs", "/openapi.json", "/healthz", "/readyz"]  # no outbox outside dev
    # Browsers ask for HTML (and JSON less): they get the page.
    browser_accept = "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"
    for accept in (browser_accept, "*/*", "", "application/json, text/html;q=0.5"):
        page = await client.get("/", headers={"Accept": accept})
        assert page.content_type == "text/html", accept
        assert 'href="/docs"' in await page.text()
        assert 'href="/dev/outbox"' not in await page.text()
    refused_html = await client.get("/", headers={"Accept": "application/json, text/html;q=0"})
    assert refused_html.content_type == "application/json"


async def test_landing_head_and_dev_outbox_link(client: TestClient, dev_client: TestClient) -> None:
    head = await client.head("/")
    assert head.status == 200
    assert head.content_type == "text/html"
    assert await head.read() == b""
    dev = await dev_client.get("/", headers={"Accept": "application/json"})
    assert "/dev/outbox" in [link["href"] for link in (await dev.json())["links"]]


async def test_no_version_banner_on_any_answer(client: TestClient) -> None:
    answers = [
        await client.get("/"),
        await client.get("/healthz"),
        await client.get("/no/such/page"),  # aiohttp's 404, as a problem
        await client.get("/v1/verifications/ver_x"),  # our own 401 problem
        await client.post("/docs"),  # 405
        await client.get(asset_url(REDOC_JS)),
    ]
    for response in answers:
        assert response.headers.get("Server") == "tidings", response.url
        assert "aiohttp" not in str(response.headers).lower()


async def test_bundled_viewer_is_served_gzipped_and_cached(client: TestClient) -> None:
    on_disk = (ROOT / "webhooks" / "static" / "redoc" / "redoc.standalone.js").read_bytes()
    # The README records where the file came from; the file is that file, unchanged.
    readme = (ROOT / "webhooks" / "static" / "redoc" / "README.md").read_text()
    assert hashlib.sha256(on_disk).hexdigest() in readme
    response = await client.get(asset_url(REDOC_JS))  # aiohttp's client asks for gzip
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.content_type == "text/javascript"
    assert await response.read() == on_disk
    assert int(response.headers["Content-Length"]) < len(on_disk) / 2
    plain = await client.get(asset_url(REDOC_JS), headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == on_disk
    # Only the bundled files: nothing else of the package can be asked for.
    for path in ("/docs/assets/../../config/settings.py", "/docs/assets/README.md"):
        missing = await client.get(path)
        assert missing.status == 404, path
        assert missing.content_type == "application/problem+json"
    notices = await client.get(asset_url(REDOC_JS) + ".LICENSE.txt")
    assert "ReDoc" in await notices.text()


async def test_docs_page_loads_only_the_bundled_viewer(client: TestClient) -> None:
    response = await client.get("/docs")
    html = await response.text()
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts == [asset_url(REDOC_JS)]
    assert not re.search(r"""(src|href)=["']https?://""", html)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:" in policy


async def test_no_version_banner_on_requests_refused_before_routing(served: TestClient) -> None:
    head, _ = await raw_exchange(
        served, b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    assert head.split(b" ")[1] == b"431"
    assert b"\r\nServer: tidings" in head
    assert b"aiohttp" not in head.lower()
