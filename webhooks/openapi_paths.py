"""The ``paths`` of ``/openapi.json``: every route the web app serves, with examples."""

from __future__ import annotations

from typing import Any

from webhooks import openapi_examples as ex
from webhooks.assets import ASSETS, asset_url
from webhooks.problems import PROBLEMS

REF = "#/components/schemas/"
_PROBLEM_JSON = "application/problem+json"

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The verification's id from the 202 answer.",
    "schema": {"type": "string"},
    "example": ex.VID,
}
_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
_API_ERRORS = ["unauthorized", "not-found", "unavailable"]
_JSON_BODY_ERRORS = ["invalid-json", "request-timeout", "too-large", "unsupported-media-type"]
_SIGNED_HEADERS = {
    "webhook-id": (
        "A unique id per event; a retry sends the same one.",
        "msg_2f1c9a7be04d6c35a1e8b902",
    ),
    "webhook-timestamp": ("Unix seconds, within 5 minutes of Tidings' clock.", "1795428000"),
    "webhook-signature": (
        "`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`; several "
        "space-separated signatures may be sent.",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
}


def _problems(slugs: list[str]) -> dict[str, Any]:
    """Responses for these problem types, grouped by status, one example per type."""
    responses: dict[str, Any] = {}
    for slug in slugs:
        status, title = PROBLEMS[slug]
        response = responses.setdefault(
            str(status),
            {
                "description": "",
                "content": {_PROBLEM_JSON: {"schema": {"$ref": REF + "Problem"}, "examples": {}}},
            },
        )
        response["description"] += ("; " if response["description"] else "") + (
            f"{title} ([`{slug}`](#problem-{slug}))"
        )
        response["content"][_PROBLEM_JSON]["examples"][slug] = ex.example(
            title, ex.problem(slug, status, title)
        )
    return responses


def _json(ref: str, examples: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF + ref}, "examples": examples}}


def _ok(status: int, ref: str, description: str, examples: dict[str, Any]) -> dict[str, Any]:
    return {str(status): {"description": description, "content": _json(ref, examples)}}


def _responses(ok: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    merged = dict(ok)
    for status, response in _problems(problems).items():
        if status in merged:  # a 200 and a problem never share a status; a 401 might
            merged[status]["description"] += "; " + response["description"]
        else:
            merged[status] = response
    return merged


def _curl(command: str) -> list[dict[str, str]]:
    return [{"lang": "Shell", "label": "curl", "source": command}]


def _api(method: str, path: str, body: str | None = None) -> list[dict[str, str]]:
    """A curl sample of a ``/v1`` call with the site's API key."""
    line = f'curl -s -X {method} "$TIDINGS_URL{path}" \\\n  -H "Authorization: Bearer $TIDINGS_API_KEY"'
    if body is not None:
        line += f" \\\n  -H 'content-type: application/json' -d '{body}'"
    return _curl(line)


_HTML_EXAMPLE = '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">…'
_METRICS_EXAMPLE = (
    "# HELP tidings_verifications_total Verification status changes.\n"
    "# TYPE tidings_verifications_total counter\n"
    'tidings_verifications_total{status="approved"} 42.0\n'
)


def _signup_webhook(samples: dict[str, str]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "receive_site_event",
            "tags": ["Signup webhooks"],
            "summary": "Post a signed site event (Standard Webhooks)",
            "description": (
                "`signup.created` starts a verification and answers it (202); `signup.canceled` "
                "and `user.deleted` cancel that user's pending verifications (200). Sign the "
                "body with any of the site's secrets (see *Signing signup webhooks*); Svix "
                "senders' `svix-id`, `svix-timestamp` and `svix-signature` are accepted "
                "instead. A repeated `webhook-id` returns the first answer and does nothing."
            ),
            "parameters": [
                {
                    "name": "site",
                    "in": "path",
                    "required": True,
                    "description": "Your site's id.",
                    "schema": {"type": "string"},
                    "example": "shop",
                },
                *(
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "description": description,
                        "schema": {"type": "string"},
                        "example": value,
                    }
                    for name, (description, value) in _SIGNED_HEADERS.items()
                ),
            ],
            "requestBody": {"required": True, "content": _json("Envelope", ex.SIGNUP_BODIES)},
            "responses": _responses(
                {
                    **_ok(202, "Verification", "`signup.created` accepted", ex.ACCEPTED),
                    **_ok(
                        200,
                        "CancelResult",
                        "`signup.canceled` / `user.deleted` done",
                        ex.CANCELED_USER,
                    ),
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
            "x-codeSamples": [
                {"lang": "Python", "source": samples["sign_signup_py"]},
                {"lang": "JavaScript", "source": samples["sign_signup_js"]},
                {
                    "lang": "Shell",
                    "label": "tidings CLI",
                    "source": "tidings signup --site demo --email you@example.com",
                },
            ],
        }
    }


def _verifications() -> dict[str, Any]:
    secured: dict[str, Any] = {
        "tags": ["Verifications"],
        "security": [{"apiKey": []}],
        "parameters": [_ID],
    }
    path = "/v1/verifications/$VID"
    return {
        "/v1/verifications/{id}": {
            "get": {
                **secured,
                "operationId": "get_verification",
                "summary": "Get a verification",
                "description": "Its status, attempts left and every delivery (queued, sent or "
                "failed, with the provider's id or the error).",
                "responses": _responses(
                    _ok(200, "Verification", "The verification", ex.GOT), _API_ERRORS
                ),
                "x-codeSamples": _curl(
                    f'curl -s "$TIDINGS_URL{path}" -H "Authorization: Bearer $TIDINGS_API_KEY"'
                ),
            }
        },
        "/v1/verifications/{id}/check": {
            "post": {
                **secured,
                "operationId": "check_code",
                "summary": "Check a code",
                "description": "`valid: true` approves the verification (once: a second check of "
                "the same code is not valid). Each wrong code uses an attempt; the last one ends "
                "the verification as `max_attempts_reached`.",
                "requestBody": {"required": True, "content": _json("CheckBody", ex.CHECK_BODY)},
                "responses": _responses(
                    _ok(200, "CheckResult", "The outcome", ex.CHECK_RESULTS),
                    [*_API_ERRORS, *_JSON_BODY_ERRORS, "validation"],
                ),
                "x-codeSamples": _api("POST", path + "/check", '{"code": "482913"}'),
            }
        },
        "/v1/verifications/{id}/resend": {
            "post": {
                **secured,
                "operationId": "resend_code",
                "summary": "Send a new code (the old one stops working)",
                "description": "Optionally by another channel the site allows and the signup "
                "has a destination for. Limited by the resend cooldown and per-destination caps.",
                "requestBody": {
                    "required": False,
                    "content": _json("ResendBody", ex.RESEND_BODIES),
                },
                "responses": _responses(
                    _ok(202, "Verification", "A new code is on its way", ex.RESENT),
                    [
                        *_API_ERRORS,
                        *_JSON_BODY_ERRORS,
                        "validation",
                        "conflict",
                        "channel-unavailable",
                        "rate-limited",
                    ],
                ),
                "x-codeSamples": _api("POST", path + "/resend", '{"channel": "sms"}'),
            }
        },
        "/v1/verifications/{id}/cancel": {
            "post": {
                **secured,
                "operationId": "cancel_verification",
                "summary": "Cancel a pending verification",
                "responses": _responses(
                    _ok(200, "Verification", "Canceled", ex.CANCELED), [*_API_ERRORS, "conflict"]
                ),
                "x-codeSamples": _api("POST", path + "/cancel"),
            }
        },
    }


def _pages() -> dict[str, Any]:
    tags = ["Pages for people"]
    return {
        "/v/{token}": {
            "get": {
                "tags": tags,
                "parameters": [_TOKEN],
                "summary": "Magic link: a confirm page (changes nothing)",
                "description": "HTML in the verification's language. Mail scanners that "
                "fetch links cannot approve anything: approval needs the page's button.",
                "responses": {
                    "200": {"description": "Confirm page"},
                    "404": {"description": "Not a valid link (or replaced by a newer one)"},
                    "410": {"description": "Used, expired or closed"},
                    "429": {"description": "Too many requests from this IP"},
                },
            },
            "post": {
                "tags": tags,
                "parameters": [_TOKEN],
                "summary": "Magic link: approve the verification",
                "description": "Approves atomically (once), then redirects to the site's "
                "return URL with `verification_id` and `status=approved`; without a return "
                "URL, a confirmation page.",
                "responses": {
                    "303": {"description": "Approved; back to the site"},
                    "200": {"description": "Approved (the site has no return URL)"},
                    "404": {"description": "Not a valid link"},
                    "410": {"description": "Used, expired or closed"},
                    "429": {"description": "Too many requests from this IP"},
                },
            },
        },
        "/unsubscribe/{token}": {
            "get": {
                "tags": tags,
                "parameters": [_TOKEN],
                "summary": "Email announcements: an unsubscribe page (changes nothing)",
                "description": "The `List-Unsubscribe` link of announcement and reminder "
                "emails, opened by a person: a page with a button.",
                "responses": {"200": {"description": "Page"}, "404": {"description": "Bad link"}},
            },
            "post": {
                "tags": tags,
                "parameters": [_TOKEN],
                "summary": "Email announcements: unsubscribe (RFC 8058 one-click)",
                "description": "What mail clients send for `List-Unsubscribe-Post: "
                "List-Unsubscribe=One-Click`, and the page's button.",
                "responses": {
                    "200": {"description": "Unsubscribed"},
                    "404": {"description": "Bad link"},
                },
            },
        },
    }


def _operations() -> dict[str, Any]:
    tags = ["Operations"]
    return {
        "/healthz": {
            "get": {
                "tags": tags,
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "The process is up",
                        "content": {"application/json": {"example": {"status": "ok"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": tags,
                "summary": "Readiness: Redis takes writes and the broker's stream exists",
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": {
                            "application/json": {
                                "example": {"status": "ok", "redis": True, "broker": True}
                            }
                        },
                    },
                    "503": {
                        "description": "Not ready (`Retry-After` when Redis is unreachable)",
                        "content": {
                            "application/json": {
                                "examples": {
                                    "redis": ex.example(
                                        "Redis unreachable",
                                        {"status": "unavailable", "redis": False},
                                    ),
                                    "starting": ex.example(
                                        "Broker stream not declared yet",
                                        {"status": "starting", "redis": True, "broker": False},
                                    ),
                                }
                            }
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": tags,
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": _METRICS_EXAMPLE,
                            }
                        },
                    }
                },
            }
        },
        "/telegram/webhook": {
            "post": {
                "tags": ["Telegram"],
                "summary": "Telegram Bot API updates (only with a bot token and secret)",
                "description": "Telegram posts updates here with the "
                "`X-Telegram-Bot-Api-Secret-Token` header; the path is "
                "`TIDINGS_TELEGRAM__WEBHOOK_PATH`. Each update is handled at most once; "
                "malformed updates and Telegram's refusals are answered 200.",
                "responses": {
                    "200": {"description": "Handled (or ignored: seen before, malformed)"},
                    "401": {"description": "Wrong or missing secret token"},
                    "503": {"description": "Redis unavailable before handling; retried"},
                },
            }
        },
    }


def _documentation() -> dict[str, Any]:
    tags = ["Documentation"]
    landing = {
        "name": "Tidings",
        "description": "…",
        "links": [{"rel": "docs", "href": "/docs", "title": "API reference"}],
    }
    return {
        "/": {
            "get": {
                "tags": tags,
                "summary": "Landing page",
                "description": "HTML for people; `Accept: application/json` (without "
                "`text/html`) answers the same links as JSON.",
                "responses": {
                    "200": {
                        "description": "The page, or its links",
                        "content": {
                            "text/html": {"schema": {"type": "string"}, "example": _HTML_EXAMPLE},
                            "application/json": {
                                "schema": {"$ref": REF + "Landing"},
                                "example": landing,
                            },
                        },
                    }
                },
            }
        },
        "/docs": {
            "get": {
                "tags": tags,
                "summary": "This reference",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {
                            "text/html": {"schema": {"type": "string"}, "example": _HTML_EXAMPLE}
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": tags,
                "summary": "This description (OpenAPI 3.1)",
                "responses": {
                    "200": {
                        "description": "The document",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object"},
                                "example": {"openapi": "3.1.0", "info": {"title": "Tidings"}},
                            }
                        },
                    }
                },
                "x-codeSamples": _curl('curl -s "$TIDINGS_URL/openapi.json"'),
            }
        },
        **{asset_url(name): _asset(media) for name, media in ASSETS.items()},
    }


def _asset(media_type: str) -> dict[str, Any]:
    first_line = {
        "text/javascript": "/*! For license information please see …",
        "text/plain": "/*!\n\tCopyright (c) 2018 Jed Watson. …",
    }[media_type]
    return {
        "get": {
            "tags": ["Documentation"],
            "summary": "A file of the bundled viewer (Redoc), cached for a year",
            "responses": {
                "200": {
                    "description": "The file (gzipped when the client accepts it)",
                    "content": {media_type: {"schema": {"type": "string"}, "example": first_line}},
                }
            },
        }
    }


def paths(samples: dict[str, str]) -> dict[str, Any]:
    """Every path, in the order the reference shows them."""
    return {
        "/webhooks/{site}": _signup_webhook(samples),
        **_verifications(),
        **_pages(),
        **_operations(),
        **_documentation(),
    }
