"""A site's callback endpoint: answers from a script, verifies every signature it gets."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook

from tidings.embedded_redis import free_port


class Receiver:
    """A site's callback endpoint that answers from a script and verifies every signature."""

    def __init__(self, secret: str) -> None:
        self.port = free_port()
        self.secret = secret
        self.answers: list[int] = []
        self.calls: list[dict[str, Any]] = []
        self.rejected = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tidings-events"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        # What a site does with either public library: both raise if no signature matches.
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
            SvixWebhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.rejected += 1
            return web.Response(status=401)
        self.calls.append({"headers": dict(request.headers), "event": event, "body": body})
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/tidings-events", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
