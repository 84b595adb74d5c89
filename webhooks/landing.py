"""``/``: what this service is, and where its docs, API description and probes are."""

from __future__ import annotations

from functools import cache

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from webhooks import keys

routes = web.RouteTableDef()

SUMMARY = (
    "Verification codes and magic links by email, SMS and Telegram, started by signed "
    "signup webhooks from your sites; reminders and broadcasts to the people who signed up."
)


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("webhooks", "templates"), autoescape=select_autoescape(default=True)
    )


def _links(dev: bool) -> list[dict[str, str]]:
    links = [
        {"rel": "docs", "href": "/docs", "title": "API reference"},
        {"rel": "openapi", "href": "/openapi.json", "title": "OpenAPI 3.1 description"},
        {"rel": "health", "href": "/healthz", "title": "Liveness probe"},
        {"rel": "ready", "href": "/readyz", "title": "Readiness probe (Redis and the broker)"},
    ]
    if dev:
        links.append({"rel": "outbox", "href": "/dev/outbox", "title": "Development outbox"})
    return links


def wants_json(accept: str) -> bool:
    """True when the client asked for JSON and not for HTML (browsers always ask for HTML)."""
    acceptable = set()
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        refused = any(p.replace(" ", "") in {"q=0", "q=0.0", "q=0.00", "q=0.000"} for p in params)
        if media and not refused:
            acceptable.add(media.lower())
    return "application/json" in acceptable and "text/html" not in acceptable


@routes.get("/")
async def landing(request: web.Request) -> web.Response:
    """A small HTML page, or the same links as JSON for ``Accept: application/json``."""
    links = _links(request.app[keys.SETTINGS].dev)
    # Caches must keep the HTML and the JSON answers apart.
    headers = {"Vary": "Accept"}
    if wants_json(request.headers.get("Accept", "")):
        document = {"name": "Tidings", "description": SUMMARY, "links": links}
        return web.json_response(document, headers=headers)
    html = _templates().get_template("landing.html").render(summary=SUMMARY, links=links)
    return web.Response(text=html, content_type="text/html", headers=headers)
