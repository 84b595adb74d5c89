"""Serving the web app: slow-client timeouts, header limits, and malformed requests as problems.

aiohttp answers a request its parser refuses (an over-long header, a broken request line)
itself, before any middleware runs, as ``text/plain`` with an ERROR traceback in the log.
The request handler here answers those as problem documents too, with one WARNING line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_runner import GracefulExit

from config.settings import HttpSettings
from webhooks.problems import PROBLEM_TYPE, Problem

logger = logging.getLogger(__name__)

#: Sent instead of aiohttp's ``Python/x.y aiohttp/z`` banner, which tells scanners what to try.
SERVER_NAME = "tidings"


async def name_server(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: replace the version banner on every answer the app gives."""
    response.headers[hdrs.SERVER] = SERVER_NAME


def handler_kwargs(http: HttpSettings) -> dict[str, Any]:
    """Keyword arguments for aiohttp's request handler (``run_app``, ``AppRunner``, tests)."""
    return {
        # aiohttp starts this timer when a connection opens and after each answer, and closes
        # the connection if no whole request head has arrived by then: slow heads are cut.
        "keepalive_timeout": http.idle_timeout_seconds,
        "max_line_size": http.max_header_bytes,
        "max_field_size": http.max_header_bytes,
        # After an early answer (413, 408), read what is left of the body this long at most.
        "lingering_time": min(http.read_timeout_seconds, 10.0),
    }


class _ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser refused: a problem document, logged without echoing it."""
        if status >= 500 or request.writer.output_size > 0:
            fallback = super().handle_error(request, status, exc, message)
            fallback.headers[hdrs.SERVER] = SERVER_NAME
            return fallback
        if isinstance(exc, LineTooLong):
            problem = Problem("headers-too-large", "a request line or header is too long")
        else:
            problem = Problem("bad-request", "the request is not valid HTTP/1.1")
        # Plain-text port scans and TLS on the HTTP port are routine on the internet.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        logger.log(
            level,
            "malformed request refused",
            extra={"status": problem.status, "error": type(exc).__name__, "remote": request.remote},
        )
        response = web.Response(
            status=problem.status,
            text=problem.text,
            content_type=PROBLEM_TYPE,
            # Answered before routing, so the app's on_response_prepare never sees it.
            headers={hdrs.SERVER: SERVER_NAME},
        )
        response.force_close()
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections answer parse errors as problems."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no option for the handler class; the server only builds handlers.
        server.__class__ = _ProblemServer
        return server


def run(
    app: web.Application,
    http: HttpSettings,
    *,
    loop: asyncio.AbstractEventLoop,
    shutdown_timeout: float = 10.0,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``http.host:http.port`` until SIGINT/SIGTERM, as ``run_app`` does.

    ``reuse_port``: bind with ``SO_REUSEPORT``, beside the other servers of a web tier
    (:mod:`webhooks.tier`); ``on_listening`` is called once the port is bound.
    """

    async def serve() -> None:
        runner = ProblemAppRunner(
            app,
            handle_signals=True,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            **handler_kwargs(http),
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, http.host, http.port, reuse_port=reuse_port).start()
            if on_listening is not None:
                on_listening()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(serve())
    try:
        with contextlib.suppress(GracefulExit, KeyboardInterrupt):
            loop.run_until_complete(main)
    finally:
        if not main.done():
            main.cancel()
        # Until the drain has finished: a second signal (Ctrl-C reaches a web tier's
        # servers and its parent, which passes SIGTERM on) must not cut it short.
        while not main.done():
            with contextlib.suppress(asyncio.CancelledError, GracefulExit, KeyboardInterrupt):
                loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
