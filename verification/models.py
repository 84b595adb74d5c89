"""The verification resource as sites see it."""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


def to_json(value: Any) -> str:
    """JSON text, through orjson (a fraction of the stdlib's time) where it can.

    orjson refuses integers beyond 64 bits, which a site's metadata may hold.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


class Status(StrEnum):
    """Lifecycle of a verification."""

    PENDING = "pending"
    APPROVED = "approved"
    CANCELED = "canceled"
    EXPIRED = "expired"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    """Outcome of one send."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


def now_ms() -> int:
    """Wall-clock time in milliseconds, the unit stored in Redis."""
    return time.time_ns() // 1_000_000


def iso(ms: str | int | None) -> str | None:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp (to the second)."""
    if ms in (None, "", "0", 0):
        return None
    return _iso_second(int(ms) // 1000)


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    # Answers made within a second share their timestamps: formatted once.
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def mask_email(address: str) -> str:
    """``alice@example.com`` → ``a***@example.com``."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def mask_destination(channel: str, destination: str) -> str | None:
    """Hide most of an address or number; None while there is none (Telegram, unlinked)."""
    if not destination:
        return None
    if destination.startswith("telegram:"):
        return f"telegram chat ****{destination[-2:]}"
    if "@" in destination:
        return mask_email(destination)
    return f"{destination[:3]}****{destination[-2:]}" if len(destination) > 6 else "****"


def stored_verification(verification_id: str, raw: dict[str, str]) -> dict[str, str]:
    """A verification's hash as read from Redis, with what is not stored filled in.

    Since 2026-12 the id (the key names it), the times that equal ``created_at`` when it
    is new (``updated_at``, ``last_send_at``) and an email that is the destination are
    left out. Empty stays empty (gone).
    """
    if not raw:
        return raw
    raw.setdefault("id", verification_id)
    created = raw.get("created_at", "")
    raw.setdefault("updated_at", created)
    raw.setdefault("last_send_at", created)
    if "email" not in raw and raw.get("channel") in ("email", "link"):
        raw["email"] = raw.get("destination", "")
    return raw


def delivery_field(delivery_id: str, name: str = "") -> str:
    """A delivery's field ``name`` in its verification's hash (``folded`` in ``_lib.lua``)."""
    return f"{delivery_id[-8:]}.{name}"


def delivery_fields(delivery_id: str, record: dict[str, str]) -> dict[str, str]:
    """A delivery's record as fields of its verification's hash."""
    return {delivery_field(delivery_id, name): value for name, value in record.items()}


def folded_delivery(v: dict[str, str], delivery_id: str) -> dict[str, str] | None:
    """A delivery's record from its verification's hash (:func:`delivery_field`).

    None when the hash holds none of its fields: a delivery of an earlier release, with a
    hash of its own.
    """
    prefix = delivery_field(delivery_id)
    d = {k[len(prefix) :]: value for k, value in v.items() if k.startswith(prefix)}
    if not d:
        return None
    d["id"] = delivery_id
    d.setdefault("purpose", "code")
    d.setdefault("attempts", "0")
    # A verification's first delivery: its number and time are the verification's.
    d.setdefault("send_no", "1")
    d.setdefault("created_at", v.get("created_at", ""))
    return d


def delivery_resource(d: dict[str, str]) -> dict[str, Any]:
    """One delivery as the API shows it."""
    return {
        "id": d["id"],
        "channel": d["channel"],
        "status": d["status"],
        "attempts": int(d.get("attempts", "0")),
        "provider_id": d.get("provider_id") or None,
        "error": d.get("error") or None,
        "created_at": iso(d.get("created_at")),
        "finished_at": iso(d.get("finished_at")),
        "next_attempt_at": iso(d.get("next_attempt_at")) if d["status"] == "queued" else None,
    }


def verification_resource(
    v: dict[str, str],
    deliveries: list[dict[str, str]],
    now: int,
    telegram_link: str | None = None,
) -> dict[str, Any]:
    """One verification as the API shows it; pending past expiry reads as expired."""
    status = v["status"]
    if status == Status.PENDING and int(v["expires_at"]) <= now:
        status = Status.EXPIRED
    return {
        "id": v["id"],
        "object": "verification",
        "site": v["site"],
        "user_id": v["user_id"],
        "channel": v["channel"],
        "destination": mask_destination(v["channel"], v["destination"]),
        "status": status,
        "attempts_left": int(v["attempts_left"]),
        "sends": int(v["sends"]),
        "locale": v["locale"],
        "created_at": iso(v["created_at"]),
        "expires_at": iso(v["expires_at"]),
        "metadata": json.loads(v.get("metadata") or "null"),
        "deliveries": [delivery_resource(d) for d in deliveries],
        "telegram_link": telegram_link,
    }
