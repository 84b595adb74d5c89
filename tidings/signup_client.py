"""Posting a Standard-Webhooks-signed event, exactly as a third-party site would."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook


def signed_headers(secret: str, body: str, msg_id: str | None = None) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for ``body``."""
    msg_id = msg_id or f"msg_{secrets.token_hex(12)}"
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }


async def post_signup(
    base_url: str, site_id: str, secret: str, event: dict[str, Any]
) -> tuple[int, Any]:
    """POST ``event`` to ``/webhooks/{site_id}``; returns the status and the JSON answer."""
    body = json.dumps(event)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base_url.rstrip('/')}/webhooks/{site_id}",
            data=body.encode(),
            headers=signed_headers(secret, body),
        ) as response,
    ):
        return response.status, await response.json(content_type=None)
