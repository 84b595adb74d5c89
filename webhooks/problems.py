"""RFC 9457 problem documents and the middleware that turns every error into one."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from verification.connections import is_unavailable

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

#: slug → (status, title); every problem an endpoint can answer, documented in OpenAPI.
PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid-json": (400, "Body is not valid JSON"),
    "bad-request": (400, "Malformed HTTP request"),
    "unauthorized": (401, "Missing or invalid API key"),
    "invalid-signature": (401, "Webhook signature could not be verified"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "Request not received in time"),
    "conflict": (409, "Verification is not pending"),
    "too-large": (413, "Body too large"),
    "unsupported-media-type": (415, "Body must be JSON"),
    "validation": (422, "Request is not valid"),
    "unknown-event": (422, "Unknown event type"),
    "channel-unavailable": (422, "Channel not available"),
    "rate-limited": (429, "Too many requests"),
    "headers-too-large": (431, "Request header fields too large"),
    "internal": (500, "Internal error"),
    "unavailable": (503, "Service temporarily unavailable"),
}


class Problem(web.HTTPException):
    """An error answered as ``application/problem+json``."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        status, title = PROBLEMS[slug]
        self.status_code = status
        body: dict[str, Any] = {
            "type": f"/docs#problem-{slug}",
            "title": title,
            "status": status,
            "detail": detail,
        }
        if errors:
            body["errors"] = errors
        body.update(extra or {})
        super().__init__(
            text=json.dumps(body, ensure_ascii=False),
            content_type=PROBLEM_TYPE,
            headers=headers,
        )


_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "too-large",
    415: "unsupported-media-type",
    431: "headers-too-large",
}
#: Headers of aiohttp's own errors that must survive the translation (405 must name ``Allow``).
_KEPT_HEADERS = ("Allow",)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure as a problem document; Redis trouble is a 503, never a 500."""
    try:
        return await handler(request)
    except Problem:
        raise
    except web.HTTPException as exc:
        slug = _HTTP_SLUGS.get(exc.status)
        if slug is None or exc.status < 400:
            raise
        kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        raise Problem(slug, exc.reason, headers=kept) from None
    except Exception as exc:
        if is_unavailable(exc):
            # Unreachable, failing over, read-only, re-sharding, not enough replicas.
            logger.warning(
                "redis unavailable", extra={"path": request.path, "error": type(exc).__name__}
            )
            raise Problem(
                "unavailable", "storage is unavailable; retry shortly", headers={"Retry-After": "2"}
            ) from None
        logger.exception("unhandled error", extra={"path": request.path})
        raise Problem("internal", "an unexpected error occurred") from None
