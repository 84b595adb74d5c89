"""Request ids and access logs."""

from __future__ import annotations

import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from config.logging import RecordTemplate, request_id_var
from verification.codes import random_hex
from webhooks.metrics import HttpMetrics

logger = logging.getLogger("tidings.access")

#: What a handler adds to its request's access line (``request[LOG_FIELDS] = {...}``):
#: one line per request, not a line of the handler's own beside it.
LOG_FIELDS = web.RequestKey("log_fields", dict[str, object])

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_middleware(metrics: HttpMetrics) -> Middleware:
    """One layer for every request: an id, an access log line and the HTTP metrics."""
    access = RecordTemplate(logger, logging.INFO, "request")

    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else random_hex(8)
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
            # Not the query string (it could carry tokens), and the route pattern instead
            # of the path where the path is a secret (magic links: /v/{token}).
            path = request.path
            if resource is not None and "{token}" in resource.canonical:
                path = resource.canonical
            if logger.isEnabledFor(logging.INFO):
                access.log(
                    {
                        "method": request.method,
                        "path": path,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        **request.get(LOG_FIELDS, {}),
                    }
                )
            request_id_var.reset(token)
        response.headers["X-Request-ID"] = request_id
        return response

    return request_context
