"""``/openapi.json`` and a readable ``/docs`` page generated from it."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from webhooks.problems import PROBLEMS
from webhooks.schemas import CheckBody, Envelope, ResendBody, SignupCreated, UserRef

routes = web.RouteTableDef()

_REF = "#/components/schemas/"


def _problem(slugs: list[str]) -> dict[str, Any]:
    return {
        str(PROBLEMS[slug][0]): {
            "description": PROBLEMS[slug][1] + f" (`{slug}`)",
            "content": {"application/problem+json": {"schema": {"$ref": _REF + "Problem"}}},
        }
        for slug in slugs
    }


def _json_body(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": _REF + ref}}}}


def _ok(status: int, ref: str, description: str) -> dict[str, Any]:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": _REF + ref}}},
        }
    }


def _responses(ok: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    merged = dict(ok)
    for status, response in _problem(problems).items():
        if status in merged:
            merged[status]["description"] += "; " + response["description"]
        else:
            merged[status] = response
    return merged


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_API_ERRORS = ["unauthorized", "not-found", "unavailable"]
_JSON_BODY_ERRORS = ["invalid-json", "request-timeout", "too-large", "unsupported-media-type"]

_VERIFICATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "example": "ver_3f2c…"},
        "object": {"const": "verification"},
        "site": {"type": "string"},
        "user_id": {"type": "string"},
        "channel": {"enum": ["email", "sms", "telegram", "link"]},
        "destination": {"type": "string", "description": "masked", "example": "a***@example.com"},
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
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every public endpoint and error."""
    schemas: dict[str, Any] = {
        "Verification": _VERIFICATION,
        "Problem": _PROBLEM,
        "CheckResult": {
            "type": "object",
            "properties": {
                "valid": {"type": "boolean"},
                "status": {"type": "string"},
                "attempts_left": {"type": "integer"},
            },
        },
        "CancelResult": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "canceled": {"type": "array"}},
        },
    }
    for model in (Envelope, SignupCreated, UserRef, CheckBody, ResendBody):
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    webhook_headers = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tidings",
            "version": "1",
            "description": "Verification codes delivered by email, checked by your site.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/webhooks/{site}": {
                "post": {
                    "summary": "Receive a signed site event (Standard Webhooks)",
                    "description": (
                        "Body is an Envelope; `data` is SignupCreated for `signup.created` and "
                        "UserRef for `signup.canceled` / `user.deleted`. Signature: `v1,` + "
                        "base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` with "
                        "any of the site's secrets (several space-separated signatures may be sent); "
                        "timestamps within 5 minutes. Svix senders' `svix-id`, `svix-timestamp` "
                        "and `svix-signature` are accepted instead. A repeated "
                        "`webhook-id` returns the first answer and does nothing."
                    ),
                    "parameters": [
                        {
                            "name": "site",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        *webhook_headers,
                    ],
                    "requestBody": _json_body("Envelope"),
                    "responses": _responses(
                        {
                            **_ok(202, "Verification", "signup.created accepted"),
                            **_ok(200, "CancelResult", "signup.canceled / user.deleted done"),
                        },
                        [
                            "invalid-json",
                            "invalid-signature",
                            "request-timeout",
                            "too-large",
                            "unsupported-media-type",
                            "validation",
                            "unknown-event",
                            "channel-unavailable",
                            "rate-limited",
                            "unavailable",
                        ],
                    ),
                }
            },
            "/v1/verifications/{id}": {
                "get": {
                    "summary": "Get a verification",
                    "security": [{"apiKey": []}],
                    "parameters": [_ID],
                    "responses": _responses(
                        _ok(200, "Verification", "the verification"), _API_ERRORS
                    ),
                }
            },
            "/v1/verifications/{id}/check": {
                "post": {
                    "summary": "Check a code",
                    "security": [{"apiKey": []}],
                    "parameters": [_ID],
                    "requestBody": _json_body("CheckBody"),
                    "responses": _responses(
                        _ok(200, "CheckResult", "the outcome"),
                        [*_API_ERRORS, *_JSON_BODY_ERRORS, "validation"],
                    ),
                }
            },
            "/v1/verifications/{id}/resend": {
                "post": {
                    "summary": "Send a new code (the old one stops working)",
                    "security": [{"apiKey": []}],
                    "parameters": [_ID],
                    "requestBody": _json_body("ResendBody", required=False),
                    "responses": _responses(
                        _ok(202, "Verification", "a new code is on its way"),
                        [
                            *_API_ERRORS,
                            *_JSON_BODY_ERRORS,
                            "validation",
                            "conflict",
                            "channel-unavailable",
                            "rate-limited",
                        ],
                    ),
                }
            },
            "/v1/verifications/{id}/cancel": {
                "post": {
                    "summary": "Cancel a pending verification",
                    "security": [{"apiKey": []}],
                    "parameters": [_ID],
                    "responses": _responses(
                        _ok(200, "Verification", "canceled"), [*_API_ERRORS, "conflict"]
                    ),
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: Redis and the broker",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
            "/telegram/webhook": {
                "post": {
                    "summary": "Telegram Bot API updates (only with a bot token and secret)",
                    "description": "Telegram posts updates here with the "
                    "`X-Telegram-Bot-Api-Secret-Token` header; the path is "
                    "`TIDINGS_TELEGRAM__WEBHOOK_PATH`. Each update is handled at most once; "
                    "malformed updates and Telegram's refusals are answered 200.",
                    "responses": {
                        "200": {"description": "handled (or ignored: seen before, malformed)"},
                        "401": {"description": "wrong or missing secret token"},
                        "503": {"description": "Redis unavailable before handling; retried"},
                    },
                }
            },
            "/unsubscribe/{token}": {
                "get": {
                    "parameters": [_TOKEN],
                    "summary": "Email announcements: an unsubscribe page (changes nothing)",
                    "responses": {
                        "200": {"description": "page"},
                        "404": {"description": "bad link"},
                    },
                },
                "post": {
                    "parameters": [_TOKEN],
                    "summary": "Email announcements: unsubscribe (RFC 8058 one-click)",
                    "responses": {
                        "200": {"description": "unsubscribed"},
                        "404": {"description": "bad link"},
                    },
                },
            },
            "/v/{token}": {
                "get": {
                    "parameters": [_TOKEN],
                    "summary": "Magic link: a confirm page for people (changes nothing)",
                    "description": "HTML in the verification's language. Mail scanners that "
                    "fetch links cannot approve anything: approval needs the page's button.",
                    "responses": {
                        "200": {"description": "confirm page"},
                        "404": {"description": "not a valid link (or replaced by a newer one)"},
                        "410": {"description": "used, expired or closed"},
                        "429": {"description": "too many requests from this IP"},
                    },
                },
                "post": {
                    "parameters": [_TOKEN],
                    "summary": "Magic link: approve the verification",
                    "description": "Approves atomically (once), then redirects to the site's "
                    "return URL with `verification_id` and `status=approved`; without a return "
                    "URL, a confirmation page.",
                    "responses": {
                        "303": {"description": "approved; back to the site"},
                        "200": {"description": "approved (the site has no return URL)"},
                        "404": {"description": "not a valid link"},
                        "410": {"description": "used, expired or closed"},
                        "429": {"description": "too many requests from this IP"},
                    },
                },
            },
        },
    }


_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}

_env = Environment(
    loader=PackageLoader("webhooks", "templates"), autoescape=select_autoescape(default=True)
)


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The machine-readable API description."""
    return web.json_response(openapi_document())


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """A human-readable page of the same description."""
    html = _env.get_template("docs.html").render(
        doc=openapi_document(), problems=sorted(PROBLEMS.items(), key=lambda p: p[1][0])
    )
    return web.Response(text=html, content_type="text/html")
