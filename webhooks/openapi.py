"""``/openapi.json`` (OpenAPI 3.1) and the ``/docs`` reference that Redoc renders from it."""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from webhooks import openapi_examples as ex
from webhooks.assets import REDOC_JS, asset_url
from webhooks.openapi_events import EVENTS, event_schemas, webhooks_section
from webhooks.openapi_paths import REF, paths
from webhooks.problems import PROBLEMS
from webhooks.schemas import CheckBody, Envelope, ResendBody, SignupCreated, UserRef

routes = web.RouteTableDef()

_SAMPLES = ("sign_signup_py", "sign_signup_js", "receive_event_py", "receive_event_js")

_TAGS = [
    {"name": "Signup webhooks", "description": "Your site tells Tidings about a signup."},
    {"name": "Verifications", "description": "Your site checks codes and manages verifications."},
    {
        "name": "Events to your site",
        "description": "What Tidings POSTs to your site's `callback_url`, signed.",
    },
    {"name": "Pages for people", "description": "Magic links and unsubscribe links in messages."},
    {"name": "Operations", "description": "Probes and metrics for operators."},
    {"name": "Telegram", "description": "The bot's webhook, called by Telegram."},
    {"name": "Documentation", "description": "This reference and the landing page."},
]

_VERIFICATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "example": ex.VID},
        "object": {"const": "verification"},
        "site": {"type": "string"},
        "user_id": {"type": "string"},
        "channel": {"enum": ["email", "sms", "telegram", "link"]},
        "destination": {
            "type": ["string", "null"],
            "description": "masked; null while a Telegram signup has no chat yet",
            "example": "a***@example.com",
        },
        "status": {
            "enum": ["pending", "approved", "canceled", "expired", "max_attempts_reached", "failed"]
        },
        "attempts_left": {"type": "integer"},
        "sends": {"type": "integer"},
        "locale": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "metadata": {"type": ["object", "null"]},
        "telegram_link": {"type": ["string", "null"]},
        "deliveries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "channel": {"type": "string"},
                    "status": {"enum": ["queued", "sent", "failed"]},
                    "attempts": {"type": "integer"},
                    "provider_id": {"type": ["string", "null"]},
                    "error": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
    },
}

_PROBLEM: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "example": "/docs#problem-validation"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "verification_status": {
            "type": "string",
            "description": "With `conflict`: the verification's status now",
        },
    },
}


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("webhooks", "templates"), autoescape=select_autoescape(default=True)
    )


@cache
def _markdown() -> Environment:
    # Markdown, not HTML: our own constant texts, nothing from a request.
    return Environment(
        loader=PackageLoader("webhooks", "templates"),
        autoescape=False,  # noqa: S701
        keep_trailing_newline=True,
    )


@cache
def samples() -> dict[str, str]:
    """The code samples shown in the guide and beside operations, by name."""
    env = _markdown()
    return {
        name: env.get_template(f"samples/{name}.txt").render().rstrip("\n") for name in _SAMPLES
    }


def _guide() -> str:
    problems = sorted(((slug, s, t) for slug, (s, t) in PROBLEMS.items()), key=lambda p: p[1])
    return (
        _markdown()
        .get_template("api_guide.md.j2")
        .render(samples=samples(), problems=problems, events=list(EVENTS.items()))
    )


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Verification": _VERIFICATION,
        "Problem": _PROBLEM,
        "CheckResult": {
            "type": "object",
            "required": ["valid", "status", "attempts_left"],
            "properties": {
                "valid": {"type": "boolean"},
                "status": {"type": "string"},
                "attempts_left": {"type": "integer"},
            },
        },
        "CancelResult": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "canceled": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Landing": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "links": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "rel": {"type": "string"},
                            "href": {"type": "string"},
                            "title": {"type": "string"},
                        },
                    },
                },
            },
        },
        **event_schemas(_VERIFICATION),
    }
    for model in (Envelope, SignupCreated, UserRef, CheckBody, ResendBody):
        schema = model.model_json_schema(ref_template=REF + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint, problem and outbound event."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tidings",
            "version": "1.0",
            "summary": "Verification codes and magic links by email, SMS and Telegram.",
            "description": _guide(),
        },
        "tags": _TAGS,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of your site's API keys (`tk_…`).",
                }
            },
        },
        "paths": paths(samples()),
        "webhooks": webhooks_section(),
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The machine-readable API description."""
    return web.json_response(openapi_document())


@cache
def _docs_page() -> tuple[str, str]:
    """The ``/docs`` HTML and its Content-Security-Policy, built once."""
    init_js = _markdown().get_template("docs_init.js").render()
    digest = base64.b64encode(hashlib.sha256(init_js.encode()).digest()).decode()
    html = (
        _templates()
        .get_template("docs.html")
        .render(
            doc=openapi_document(),
            problems=sorted(PROBLEMS.items(), key=lambda p: p[1][0]),
            redoc_js=asset_url(REDOC_JS),
            init_js=init_js,
        )
    )
    # Nothing but Tidings itself: Redoc's footer would load its logo from a CDN (and tell it
    # who reads these docs); the browser refuses that. Styles are inline (styled-components),
    # search runs in a blob: worker.
    policy = (
        "default-src 'self'; "
        f"script-src 'self' 'sha256-{digest}'; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "worker-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return html, policy


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """The reference: Redoc renders ``/openapi.json``; a plain summary without JavaScript."""
    html, policy = _docs_page()
    return web.Response(
        text=html, content_type="text/html", headers={"Content-Security-Policy": policy}
    )
