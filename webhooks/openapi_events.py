"""The OpenAPI 3.1 ``webhooks`` section: every event Tidings POSTs to a site's ``callback_url``.

The payload is what :meth:`verification.events.EventStore.payload` builds and
:mod:`tasks.callbacks` signs and sends.
"""

from __future__ import annotations

from typing import Any

from webhooks.openapi_examples import VID, example, verification

REF = "#/components/schemas/"

#: Event type → (summary, when it is sent).
EVENTS: dict[str, tuple[str, str]] = {
    "verification.approved": (
        "The person is verified",
        "The right code was checked, the magic link's button was pressed, or the person "
        "confirmed in Telegram (or shared a contact whose phone matches). A signup with "
        "`subscribe: true` is on the email announcement list from now on.",
    ),
    "verification.expired": (
        "The code or link ran out of time",
        "Nobody approved it before `expires_at` (10 minutes by default).",
    ),
    "verification.max_attempts_reached": (
        "Too many wrong codes",
        "The last allowed wrong code was checked (5 by default); the verification is closed.",
    ),
    "verification.canceled": (
        "The verification was canceled",
        "Your site canceled it (`POST /v1/verifications/{id}/cancel`, `signup.canceled`, "
        "`user.deleted`), or the person declined in Telegram.",
    ),
    "verification.failed": (
        "The code could not be delivered",
        "Every delivery failed for good (a refused address or number, a provider's final "
        "error); `deliveries` of `GET /v1/verifications/{id}` says why.",
    ),
}

_DELIVERY = (
    "Sent from a worker, signed with [Standard Webhooks](https://www.standardwebhooks.com/): "
    "verify `webhook-signature` over the raw body with your site's webhook secret (see "
    "*Receiving events* above). Answer any 2xx once you have stored it. Anything else, or no "
    "answer within 15 seconds, is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h "
    "with the **same** `webhook-id` (deduplicate on it); `410 Gone` stops retries for good."
)

_TIMESTAMP = {
    "type": "string",
    "format": "date-time",
    "description": "When the status changed (the same on every retry).",
}

_HEADERS = {
    "webhook-id": (
        "The event's id (`evt_…`), the same on every retry: deduplicate on it.",
        f"evt_{VID.removeprefix('ver_')}",
    ),
    "webhook-timestamp": (
        "Unix seconds of this attempt; refuse it if more than 5 minutes off.",
        "1795428120",
    ),
    "webhook-signature": (
        "`v1,<base64 HMAC-SHA256>` over `{webhook-id}.{webhook-timestamp}.{body}`, one per "
        "active secret of your site, space-separated (so rotating a secret needs no downtime).",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    ),
}


def event_schemas(verification_schema: dict[str, Any]) -> dict[str, Any]:
    """Component schemas of the event payloads, built on the API's verification schema."""
    properties = dict(verification_schema["properties"])
    del properties["deliveries"]
    data = {
        "type": "object",
        "description": "The verification as `GET /v1/verifications/{id}` shows it, without "
        "`deliveries`; `status` is the event's.",
        "required": ["id", "site", "status"],
        "properties": properties,
    }
    event = {
        "type": "object",
        "description": "Standard Webhooks payload: `{type, timestamp, data}`.",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "enum": list(EVENTS)},
            "timestamp": _TIMESTAMP,
            "data": {"$ref": REF + "EventVerification"},
        },
    }
    return {"EventVerification": data, "VerificationEvent": event}


def _payload_schema(event_type: str) -> dict[str, Any]:
    """``VerificationEvent`` with this event's type (spelled out: Redoc shows allOf poorly)."""
    return {
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "const": event_type},
            "timestamp": _TIMESTAMP,
            "data": {"$ref": REF + "EventVerification"},
        },
    }


def _operation(event_type: str) -> dict[str, Any]:
    summary, when = EVENTS[event_type]
    status = event_type.removeprefix("verification.")
    payload = {
        "type": event_type,
        "timestamp": "2026-11-23T10:02:00.000+00:00",
        "data": {
            key: value
            for key, value in verification(
                status=status, attempts_left=0 if status == "max_attempts_reached" else 4
            ).items()
            if key != "deliveries"
        },
    }
    return {
        "post": {
            "operationId": event_type.replace(".", "_"),
            "summary": f"{event_type}: {summary}",
            "description": f"{when}\n\n{_DELIVERY}",
            "tags": ["Events to your site"],
            "parameters": [
                {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "description": description,
                    "schema": {"type": "string"},
                    "example": value,
                }
                for name, (description, value) in _HEADERS.items()
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _payload_schema(event_type),
                        "examples": {status: example(summary, payload)},
                    }
                },
            },
            "responses": {
                "2XX": {"description": "Stored; Tidings will not send this event again."},
                "410": {"description": "Gone: stop sending this event, for good."},
                "default": {"description": "Anything else: retried with the same webhook-id."},
            },
        }
    }


def webhooks_section() -> dict[str, Any]:
    """The ``webhooks`` map of the OpenAPI document, one entry per event type."""
    return {event_type: _operation(event_type) for event_type in EVENTS}
