"""The files bundled under ``webhooks/static/`` (the Redoc viewer), served at ``/docs/assets/``."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from aiohttp import web

routes = web.RouteTableDef()

REDOC_VERSION = "2.5.4"
#: The version is in the name, so a year-long cache never serves an old viewer after an update.
REDOC_JS = f"redoc-{REDOC_VERSION}.standalone.js"
ASSETS_PATH = "/docs/assets/"

#: Public name → (file under ``webhooks/static/``, content type). The licence notices sit
#: beside the viewer because the viewer's first line points to them by relative name.
_FILES: dict[str, tuple[str, str]] = {
    REDOC_JS: ("redoc/redoc.standalone.js", "text/javascript"),
    f"{REDOC_JS}.LICENSE.txt": ("redoc/redoc.standalone.js.LICENSE.txt", "text/plain"),
}
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    content_type: str


@cache
def _asset(name: str) -> _Asset:
    """Read (on first use, not at import) and compress one bundled file."""
    path, content_type = _FILES[name]
    body = files("webhooks").joinpath("static", *path.split("/")).read_bytes()
    return _Asset(body, gzip.compress(body, compresslevel=9, mtime=0), content_type)


#: Public name → content type, for the API description.
ASSETS = {name: content_type for name, (_, content_type) in _FILES.items()}


def asset_url(name: str) -> str:
    """The URL path of a bundled file."""
    if name not in _FILES:
        raise KeyError(name)
    return ASSETS_PATH + name


async def bundled_asset(request: web.Request) -> web.Response:
    """A bundled file, gzipped when the client accepts it, cached by browsers for a year."""
    asset = _asset(request.path.removeprefix(ASSETS_PATH))
    headers = {"Cache-Control": _IMMUTABLE, "Vary": "Accept-Encoding"}
    body = asset.body
    # Compressed once per process rather than on every request (the viewer is 1.1 MB).
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(
        body=body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


# One fixed route per file: nothing else under the prefix can be asked for.
for _name in _FILES:
    routes.get(ASSETS_PATH + _name)(bundled_asset)
