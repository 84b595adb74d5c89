"""Request ids and access logs."""

from __future__ import annotations

import logging
import re
import secrets
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from config.logging import request_id_var
from webhooks.metrics import HttpMetrics

logger = logging.getLogger("tidings.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_middleware(metrics: HttpMetrics) -> Middleware:
    """One layer for every request: an id, an access log line and the HTTP metrics."""

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else secrets.token_hex(8)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            exc.headers["X-Request-ID"] = request_id
            raise
        finally:
            elapsed = time.perf_counter() - started
            resource = request.match_info.route.resource
            metrics.observe(
                request.method,
                resource.canonical if resource is not None else "unmatched",
                status,
                elapsed,
            )
            # The path only: query strings could carry tokens.
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)
        response.headers["X-Request-ID"] = request_id
        return response

    return request_context
