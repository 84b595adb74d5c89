"""Reading JSON request bodies: the media type, a size and time limit, and strict, bounded JSON.

Every refusal is a :class:`Problem`, decided before any storage is touched: hostile bodies
(deep nesting, huge numbers, ``NaN``, unpaired surrogates) must cost little and store nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from webhooks import keys
from webhooks.problems import Problem

#: Deepest nesting of arrays and objects a body may have (the envelope itself is 2 deep).
MAX_DEPTH = 32
#: Longest number literal: beyond this no site means a number, and Python's own int-string
#: limit (4,300 digits) would answer an error of its own.
MAX_NUMBER_CHARS = 64


class _Refused:
    """A value the decoder met but must not keep; the walk turns it into a field error."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> int | _Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(f"numbers are limited to {MAX_NUMBER_CHARS} characters")
    return int(text)


def _parse_float(text: str) -> float | _Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(f"numbers are limited to {MAX_NUMBER_CHARS} characters")
    value = float(text)
    # 1e999 parses as infinity, which JSON cannot carry back out.
    return value if math.isfinite(value) else _Refused("number is out of range")


def _parse_constant(_: str) -> _Refused:
    return _Refused("NaN and Infinity are not JSON numbers")


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse(path: list[str], message: str) -> Problem:
    field = ".".join(path) or "body"
    return Problem(
        "validation", f"{field}: {message}", errors=[{"field": field, "message": message}]
    )


def _check(document: Any) -> None:
    """Walk the decoded document (iteratively: it may be deep) for what strict JSON refuses."""
    stack: list[tuple[Any, list[str]]] = [(document, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise Problem("invalid-json", f"JSON may be nested at most {MAX_DEPTH} levels deep")
        if isinstance(value, _Refused):
            raise _refuse(path, value.reason)
        if isinstance(value, str):
            if _has_surrogate(value):
                raise _refuse(path, "text contains an unpaired surrogate")
        elif isinstance(value, dict):
            for key, item in value.items():
                if _has_surrogate(key):
                    raise _refuse(path, "a key contains an unpaired surrogate")
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, str(i)]) for i, item in enumerate(value))


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether orjson's reading of a document is the strict one below, as it is for webhooks.

    orjson refuses NaN, lone surrogates and invalid UTF-8 itself; what it reads differently
    is numbers (an integer beyond 64 bits becomes a float, a float literal has no length
    limit), so any float, or nesting beyond ``MAX_DEPTH``, takes the strict path instead.
    Recursive (at most ``MAX_DEPTH`` deep): half the time of a walk with a stack.
    """
    items: Iterable[Any]
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return not isinstance(value, float)
    if depth >= MAX_DEPTH:
        return not items
    for item in items:
        if isinstance(item, (dict, list)):
            if not _plain(item, depth + 1):
                return False
        elif isinstance(item, float):
            return False
    return True


def parse_json(body: bytes) -> Any:
    """Strict JSON (RFC 8259 / I-JSON): bounded depth and numbers, no NaN, no lone surrogates.

    Syntax and depth errors are ``invalid-json`` (400); a value that is well-formed but
    refused is ``validation`` (422) naming its field, as in ``data.metadata.score``.
    """
    # The common body (no floats, shallow) is read by orjson, several times faster than the
    # strict decoder's Python hooks; anything else gets the strict decoder's answer.
    try:
        fast = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        if _plain(fast):
            return fast
    try:
        document = json.loads(
            body.decode("utf-8"),
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Problem("invalid-json", "the body is not valid JSON") from None
    except RecursionError:
        # The C decoder recurses per level; far deeper than MAX_DEPTH, so the same answer.
        raise Problem(
            "invalid-json", f"JSON may be nested at most {MAX_DEPTH} levels deep"
        ) from None
    _check(document)
    return document


def require_json(request: web.Request) -> None:
    """Refuse a body that is not declared ``application/json`` (or a ``+json`` type)."""
    media = request.content_type.lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise Problem("unsupported-media-type", "send the body as Content-Type: application/json")


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, refusing one over ``limit`` bytes or one that trickles in too slowly."""
    if request.content_length is not None and request.content_length > limit:
        raise Problem("too-large", f"bodies are limited to {limit} bytes")
    content = request.content
    if content.is_eof():
        # The whole body came with the head (as a small webhook does): nothing to wait
        # for, so no timer to arm.
        whole = await content.read()
        if len(whole) > limit:
            raise Problem("too-large", f"bodies are limited to {limit} bytes")
        return whole
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(16_384):
                body.extend(chunk)
                if len(body) > limit:
                    raise Problem("too-large", f"bodies are limited to {limit} bytes")
    except TimeoutError:
        raise Problem(
            "request-timeout",
            f"the body must arrive within {timeout:g} seconds",
            headers={"Connection": "close"},
        ) from None
    except (HttpProcessingError, ConnectionResetError):
        # Broken chunked encoding, or the client went away: its fault, not an internal error.
        raise Problem("bad-request", "the body could not be read") from None
    return bytes(body)


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON document, checked as above; ``None`` for an absent optional body."""
    if optional and not request.body_exists:
        return None
    require_json(request)
    http = request.app[keys.SETTINGS].http
    body = await read_body(request, http.max_body_bytes, http.read_timeout_seconds)
    if optional and not body.strip():
        return None
    return parse_json(body)
