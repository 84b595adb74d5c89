"""The public API sites call with ``Authorization: Bearer <API key>``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from config.sites import SiteConfig
from verification.errors import ChannelUnavailable, NotFound, NotPending, RateLimited
from webhooks import keys
from webhooks.bodies import read_json
from webhooks.problems import Problem
from webhooks.schemas import CheckBody, ResendBody, field_errors

routes = web.RouteTableDef()


def _site(request: web.Request) -> SiteConfig:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    site = request.app[keys.SITES].by_api_key(token.strip()) if scheme.lower() == "bearer" else None
    if site is None:
        raise Problem(
            "unauthorized",
            "send 'Authorization: Bearer <API key>' with one of your site's keys",
            headers={"WWW-Authenticate": 'Bearer realm="tidings"'},
        )
    return site


async def _json(request: web.Request, model: type[Any], *, optional: bool = False) -> Any:
    data = await read_json(request, optional=optional)
    if data is None and optional:
        return model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = f"{errors[0]['field']}: {errors[0]['message']}"
        raise Problem("validation", detail, errors=errors) from None


def _translate(exc: Exception) -> Problem:
    if isinstance(exc, NotFound):
        return Problem("not-found", "no such verification")
    if isinstance(exc, NotPending):
        return Problem("conflict", str(exc), extra={"verification_status": exc.status})
    if isinstance(exc, RateLimited):
        return Problem("rate-limited", str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ChannelUnavailable):
        return Problem(
            "channel-unavailable", str(exc), errors=[{"field": "channel", "message": str(exc)}]
        )
    raise exc


@routes.get("/v1/verifications/{id}")
async def get_verification(request: web.Request) -> web.Response:
    """The verification resource."""
    site = _site(request)
    try:
        resource = await request.app[keys.SERVICE].get(site, request.match_info["id"])
    except NotFound as exc:
        raise _translate(exc) from None
    return web.json_response(resource)


@routes.post("/v1/verifications/{id}/check")
async def check(request: web.Request) -> web.Response:
    """Check a code: ``{"valid", "status", "attempts_left"}``."""
    site = _site(request)
    body: CheckBody = await _json(request, CheckBody)
    try:
        result = await request.app[keys.SERVICE].check(site, request.match_info["id"], body.code)
    except NotFound as exc:
        raise _translate(exc) from None
    return web.json_response(
        {"valid": result.valid, "status": result.status, "attempts_left": result.attempts_left}
    )


@routes.post("/v1/verifications/{id}/resend")
async def resend(request: web.Request) -> web.Response:
    """Send a new code; the previous one stops working."""
    site = _site(request)
    body: ResendBody = await _json(request, ResendBody, optional=True)
    try:
        resource = await request.app[keys.SERVICE].resend(
            site, request.match_info["id"], body.channel
        )
    except (NotFound, NotPending, RateLimited, ChannelUnavailable) as exc:
        raise _translate(exc) from None
    return web.json_response(resource, status=202)


@routes.post("/v1/verifications/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Cancel a pending verification."""
    site = _site(request)
    try:
        resource = await request.app[keys.SERVICE].cancel(site, request.match_info["id"])
    except (NotFound, NotPending) as exc:
        raise _translate(exc) from None
    return web.json_response(resource)
