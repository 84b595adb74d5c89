"""``POST /webhooks/{site}``: signed signup events from third-party sites."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from config.sites import normalise_locale
from verification.errors import ChannelUnavailable, RateLimited
from verification.service import Signup
from webhooks import keys
from webhooks.bodies import parse_json, read_body, require_json
from webhooks.middleware import LOG_FIELDS
from webhooks.problems import Problem
from webhooks.registry import SignatureError
from webhooks.schemas import (
    DESTINATION_FIELD,
    EVENT_TYPES,
    SIGNUP_CREATED,
    Envelope,
    SignupCreated,
    UserRef,
    field_errors,
)

logger = logging.getLogger(__name__)

_MAX_WEBHOOK_ID = 256

Model = TypeVar("Model", bound=BaseModel)


def _parse(
    model: type[Model], data: Any, prefix: str, context: dict[str, Any] | None = None
) -> Model:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = field_errors(exc, prefix)
        detail = f"{errors[0]['field']}: {errors[0]['message']}"
        raise Problem("validation", detail, errors=errors) from None


async def receive(request: web.Request) -> web.Response:
    """Verify, parse and act on one site event."""
    app = request.app
    settings = app[keys.SETTINGS]
    site = app[keys.SITES].get(request.match_info["site"])
    require_json(request)
    http = settings.http
    body = await read_body(request, http.max_body_bytes, http.read_timeout_seconds)
    if site is None:
        # Same answer as a bad signature, so site ids cannot be probed.
        raise Problem("invalid-signature", "no matching signature")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        webhook_id = app[keys.SITES].verify(site.id, body, headers)
    except SignatureError as exc:
        raise Problem("invalid-signature", str(exc)) from None
    if (
        len(webhook_id) > _MAX_WEBHOOK_ID
        or not webhook_id.isascii()
        or not webhook_id.isprintable()
    ):
        raise Problem("validation", "webhook-id must be at most 256 printable characters")

    envelope = _parse(Envelope, parse_json(body), "")
    if envelope.type not in EVENT_TYPES:
        raise Problem(
            "unknown-event",
            f"type must be one of {', '.join(EVENT_TYPES)}",
            errors=[{"field": "type", "message": "unknown event type"}],
        )

    service = app[keys.SERVICE]
    if envelope.type == SIGNUP_CREATED:
        region = {"phone_region": settings.sms.default_region}
        data = _parse(SignupCreated, envelope.data, "data", region)
        try:
            service.ensure_channel(site, data.channel)
            needed = DESTINATION_FIELD.get(data.channel)
            if needed and getattr(data, needed) is None:
                message = f"required for channel {data.channel.value}"
                raise Problem(
                    "validation",
                    f"data.{needed}: {message}",
                    errors=[{"field": f"data.{needed}", "message": message}],
                )
            signup = Signup(
                user_id=data.user_id,
                channel=data.channel,
                email=data.email,
                phone=data.phone,
                locale=normalise_locale(data.locale, site.default_locale),
                remind_after=data.remind_after,
                metadata=data.metadata,
                subscribe=data.subscribe,
            )
            created = await service.create(site, webhook_id, signup)
        except ChannelUnavailable as exc:
            raise Problem(
                "channel-unavailable",
                str(exc),
                errors=[{"field": "data.channel", "message": str(exc)}],
            ) from None
        except RateLimited as exc:
            raise Problem(
                "rate-limited", str(exc), headers={"Retry-After": str(exc.retry_after)}
            ) from None
        request[LOG_FIELDS] = {
            "site": site.id,
            "verification": created.resource["id"],
            "replayed": created.replayed,
        }
        return web.Response(text=created.body, status=202, content_type="application/json")

    ref = _parse(UserRef, envelope.data, "data")
    answer = await service.replayed_answer(site, webhook_id)
    if answer is None:
        canceled = await service.cancel_user(site, ref.user_id)
        answer = {"type": envelope.type, "canceled": canceled}
        await service.remember_answer(site, webhook_id, answer)
    return web.json_response(answer, status=200)
