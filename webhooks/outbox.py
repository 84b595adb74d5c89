"""``/dev/outbox``: messages captured in development, readable in a browser."""

from __future__ import annotations

import json
from typing import cast

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from verification.models import iso
from webhooks import keys

routes = web.RouteTableDef()

_env = Environment(
    loader=PackageLoader("webhooks", "templates"), autoescape=select_autoescape(default=True)
)


@routes.get("/dev/outbox")
async def outbox_page(request: web.Request) -> web.Response:
    """The newest captured messages first; ``?format=json`` for scripts."""
    redis = request.app[keys.REDIS]
    raw = cast(list[str], await redis.lrange(request.app[keys.REDIS_KEYS].outbox, 0, 99))
    entries = [json.loads(item) for item in raw]
    for entry in entries:
        entry["when"] = iso(entry.get("at"))
    if request.query.get("format") == "json":
        return web.json_response(entries)
    html = _env.get_template("outbox.html").render(entries=entries)
    return web.Response(text=html, content_type="text/html")
