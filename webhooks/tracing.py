"""A server span per web request, when tracing is on (see :mod:`config.tracing`).

A middleware of our own rather than opentelemetry-instrumentation-aiohttp-server: it
names spans by route pattern (never a magic link's token), records no query string, and
runs inside the request-id middleware so tasks queued by the handler carry its context.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from config import tracing


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Open a SERVER span for the request, continuing an incoming ``traceparent``."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    scope = tracing.begin_span(
        f"{request.method} {route}",
        kind="server",
        carrier={"traceparent": request.headers.get("traceparent", "")},
        attributes={"http.request.method": request.method, "http.route": route},
    )
    if scope is None:  # tracing was turned off after the app was built (tests)
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        scope.set("http.response.status_code", exc.status)
        scope.end(failed=exc.status >= 500)
        raise
    except BaseException as exc:
        scope.end(exc)
        raise
    scope.set("http.response.status_code", response.status)
    scope.end(failed=response.status >= 500)
    return response


def tracing_middlewares() -> list[Middleware]:
    """The tracing middleware when ``OTEL_*`` turns tracing on (set up once per process)."""
    if tracing.setup_tracing("web"):
        return [tracing_middleware]
    return []
