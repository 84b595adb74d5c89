"""``/dev/outbox``: messages captured in development, readable in a browser."""

from __future__ import annotations

import re
from email.parser import HeaderParser
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from config.settings import Settings
from tasks.outbox import DevOutbox
from verification.models import iso
from webhooks import keys

routes = web.RouteTableDef()

# Up to whitespace or a character that cannot end a URL in running text.
_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,;:!?)]}"


def linkify(text: str) -> Markup:
    """``text`` escaped, with every http(s) URL made a link (trailing punctuation left out)."""
    pieces: list[str] = []
    last = 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        start, end = match.start(), match.start() + len(url)
        pieces += [escape(text[last:start]), Markup('<a href="{0}">{0}</a>').format(url)]
        last = end
    pieces.append(escape(text[last:]))
    return Markup("").join(pieces)


_env = Environment(
    loader=PackageLoader("webhooks", "templates"), autoescape=select_autoescape(default=True)
)
_env.filters["linkify"] = linkify


def backends(settings: Settings) -> dict[str, str]:
    """Where email and SMS really go, in words, for the page's banner."""
    email = settings.email
    if email.backend == "outbox":
        email_note = "captured here, not sent"
    else:
        email_note = f"sent to the SMTP server {email.host}:{email.port}, not kept here"
    sms_note = {
        "console": "captured here, not sent",
        "ronglian": "sent to real phones through Ronglian, not kept here",
        "none": "off (no SMS provider configured)",
    }[settings.sms.provider]
    return {"email": email_note, "sms": sms_note}


def _headers(raw: str) -> list[tuple[str, str]]:
    message = HeaderParser(policy=default_policy).parsestr(raw, headersonly=True)
    return [(name, str(value)) for name, value in message.items()]


def _outbox(request: web.Request) -> DevOutbox:
    return DevOutbox(request.app[keys.REDIS], request.app[keys.REDIS_KEYS].outbox, echo=False)


@routes.get("/dev/outbox")
async def outbox_page(request: web.Request) -> web.Response:
    """The newest captured messages first; ``?format=json`` for scripts."""
    entries: list[dict[str, Any]] = await _outbox(request).entries()
    for entry in entries:
        entry["when"] = iso(entry.get("at"))
    if request.query.get("format") == "json":
        return web.json_response(entries)
    for entry in entries:
        entry["headers"] = _headers(entry["raw"]) if entry.get("raw") else []
    html = _env.get_template("outbox.html").render(
        entries=entries, backends=backends(request.app[keys.SETTINGS])
    )
    return web.Response(text=html, content_type="text/html")


@routes.get(r"/dev/outbox/{ref:[0-9a-f]{16}}.eml")
async def outbox_eml(request: web.Request) -> web.Response:
    """One captured email exactly as it would have been sent, for a mail client."""
    ref = request.match_info["ref"]
    entries = await _outbox(request).entries(limit=1_000)
    entry = next((e for e in entries if e.get("ref") == ref and e.get("raw")), None)
    if entry is None:
        raise web.HTTPNotFound(text="no such message in the outbox (it may have rotated out)")
    return web.Response(
        body=entry["raw"].encode("utf-8"),
        content_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{ref}.eml"'},
    )
