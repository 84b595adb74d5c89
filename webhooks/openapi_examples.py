"""Request and response examples for ``/openapi.json``, shaped as the server really answers.

``tests/test_openapi_examples.py`` validates every one against its schema.
"""

from __future__ import annotations

from typing import Any

VID = "ver_3f9c2a7d5e1b4c8a9f0e6d2b7a1c5e83"
_HEAD = VID.removeprefix("ver_")
_CREATED = "2026-11-23T10:00:00+00:00"
_EXPIRES = "2026-11-23T10:10:00+00:00"


def _delivery(status: str, channel: str = "email") -> dict[str, Any]:
    sent = status == "sent"
    return {
        "id": f"dlv_{_HEAD}_9a3f01bc",
        "channel": channel,
        "status": status,
        "attempts": 1 if sent else 0,
        "provider_id": "<20261123100001.1a2b3c@tidings.example>" if sent else None,
        "error": None,
        "created_at": _CREATED,
        "finished_at": "2026-11-23T10:00:01+00:00" if sent else None,
        "next_attempt_at": _CREATED if status == "queued" else None,
    }


def verification(**changes: Any) -> dict[str, Any]:
    """A verification resource as the API answers it; ``changes`` override fields."""
    resource: dict[str, Any] = {
        "id": VID,
        "object": "verification",
        "site": "shop",
        "user_id": "u-1842",
        "channel": "email",
        "destination": "a***@example.com",
        "status": "pending",
        "attempts_left": 5,
        "sends": 1,
        "locale": "en",
        "created_at": _CREATED,
        "expires_at": _EXPIRES,
        "metadata": {"plan": "pro"},
        "deliveries": [_delivery("sent")],
        "telegram_link": None,
    }
    resource.update(changes)
    return resource


def example(summary: str, value: Any) -> dict[str, Any]:
    """An OpenAPI Example Object."""
    return {"summary": summary, "value": value}


SIGNUP_BODIES = {
    "email": example(
        "A code by email",
        {
            "type": "signup.created",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {
                "user_id": "u-1842",
                "email": "alice@example.com",
                "channel": "email",
                "locale": "en",
                "remind_after": 86400,
                "metadata": {"plan": "pro"},
                "subscribe": True,
            },
        },
    ),
    "sms": example(
        "A code by SMS (Ronglian)",
        {
            "type": "signup.created",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {"user_id": "u-1843", "phone": "+8613812345678", "channel": "sms"},
        },
    ),
    "telegram": example(
        "Verification in Telegram (answer has telegram_link)",
        {
            "type": "signup.created",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {"user_id": "u-1844", "channel": "telegram", "locale": "zh-CN"},
        },
    ),
    "link": example(
        "A magic link by email",
        {
            "type": "signup.created",
            "timestamp": "2026-11-23T10:00:00Z",
            "data": {"user_id": "u-1845", "email": "bob@example.com", "channel": "link"},
        },
    ),
    "canceled": example(
        "The person abandoned the signup",
        {
            "type": "signup.canceled",
            "timestamp": "2026-11-23T10:05:00Z",
            "data": {"user_id": "u-1842"},
        },
    ),
    "deleted": example(
        "The account was deleted",
        {
            "type": "user.deleted",
            "timestamp": "2026-11-23T10:05:00Z",
            "data": {"user_id": "u-1842"},
        },
    ),
}

ACCEPTED = {
    "email": example(
        "Accepted; the email is queued", verification(deliveries=[_delivery("queued")])
    ),
    "telegram": example(
        "Accepted; send the person to telegram_link",
        verification(
            user_id="u-1844",
            channel="telegram",
            destination=None,
            locale="zh-CN",
            deliveries=[],
            sends=0,
            metadata=None,
            telegram_link=f"https://t.me/tidings_bot?start={_HEAD}Q2x4c1Zr8mN0pLwYb3Ez_A",
        ),
    ),
}

CANCELED_USER = {
    "canceled": example(
        "Pending verifications canceled", {"type": "signup.canceled", "canceled": [VID]}
    )
}

CHECK_BODY = {"code": example("The code the person typed", {"code": "482913"})}
CHECK_RESULTS = {
    "valid": example(
        "Right code: approved", {"valid": True, "status": "approved", "attempts_left": 4}
    ),
    "wrong": example("Wrong code", {"valid": False, "status": "pending", "attempts_left": 3}),
    "last": example(
        "Last wrong code", {"valid": False, "status": "max_attempts_reached", "attempts_left": 0}
    ),
}
RESEND_BODIES = {
    "same": example("Same channel (or send no body)", {}),
    "other": example("Switch to SMS", {"channel": "sms"}),
}
RESENT = {
    "resent": example(
        "A new code is on its way",
        verification(sends=2, deliveries=[_delivery("sent"), _delivery("queued")]),
    )
}
GOT = {
    "pending": example("Pending, code delivered", verification()),
    "approved": example("Approved", verification(status="approved", attempts_left=4)),
}
CANCELED = {"canceled": example("Canceled", verification(status="canceled"))}

#: slug → (detail, extra members) of a realistic problem document.
_PROBLEM_DETAILS: dict[str, tuple[str, dict[str, Any]]] = {
    "invalid-json": ("the body is not valid JSON", {}),
    "bad-request": ("the request is not valid HTTP/1.1", {}),
    "unauthorized": ("send 'Authorization: Bearer <API key>' with one of your site's keys", {}),
    "invalid-signature": ("no matching signature", {}),
    "not-found": ("no such verification", {}),
    "method-not-allowed": ("Method Not Allowed", {}),
    "request-timeout": ("the body must arrive within 15 seconds", {}),
    "conflict": ("verification is approved", {"verification_status": "approved"}),
    "too-large": ("bodies are limited to 65536 bytes", {}),
    "unsupported-media-type": ("send the body as Content-Type: application/json", {}),
    "validation": (
        "data.email: required for channel email",
        {"errors": [{"field": "data.email", "message": "required for channel email"}]},
    ),
    "unknown-event": (
        "type must be one of signup.created, signup.canceled, user.deleted",
        {"errors": [{"field": "type", "message": "unknown event type"}]},
    ),
    "channel-unavailable": (
        "channel 'sms' is not enabled for this site",
        {
            "errors": [
                {"field": "data.channel", "message": "channel 'sms' is not enabled for this site"}
            ]
        },
    ),
    "rate-limited": ("a code was sent moments ago; wait before asking for another", {}),
    "headers-too-large": ("a request line or header is too long", {}),
    "internal": ("an unexpected error occurred", {}),
    "unavailable": ("storage is unavailable; retry shortly", {}),
}


def problem(slug: str, status: int, title: str) -> dict[str, Any]:
    """The problem document the server answers for ``slug``."""
    detail, extra = _PROBLEM_DETAILS[slug]
    return {
        "type": f"/docs#problem-{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
