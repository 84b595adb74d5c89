"""Magic links: ``GET /v/{token}`` shows a confirm page, ``POST`` approves and redirects.

A GET never approves: mail scanners and link previews fetch every link in a message,
and must not use up a person's link. The person confirms with a button (a POST).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from yarl import URL

from config.branding import resolve_brand
from config.settings import Settings
from config.sites import SiteConfig, normalise_locale
from config.templates import TemplateSet, build_templates
from verification.service import LinkState
from webhooks import keys

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()


class PageRenderer:
    """The link page (``pages/link.html``) with each site's templates and brand."""

    def __init__(self, settings: Settings) -> None:
        ids = [site.id for site in settings.sites]
        self._templates: TemplateSet = build_templates("pages", settings.templates_dir, ids)
        self._default = resolve_brand(settings.branding, None).context()
        self._brands = {
            site.id: resolve_brand(settings.branding, site).context() for site in settings.sites
        }

    def render(self, site: SiteConfig | None, **context: Any) -> str:
        """The page for ``site`` (``None``: no site's, such as an unknown link)."""
        brand = self._brands.get(site.id, self._default) if site else self._default
        return self._templates.get("link.html", site.id if site else None).render(
            {**brand, **context}
        )


# One per app, built on its first page: the override folder was checked, every template
# compiled, when the settings were loaded, so this cannot fail on a person's request.
_renderers: weakref.WeakKeyDictionary[web.Application, PageRenderer] = weakref.WeakKeyDictionary()


def _renderer(app: web.Application) -> PageRenderer:
    renderer = _renderers.get(app)
    if renderer is None:
        renderer = _renderers[app] = PageRenderer(app[keys.SETTINGS])
    return renderer


# What each state says, per language. ``status`` is the page's HTTP status.
_PAGES: dict[str, dict[str, Any]] = {
    "pending": {
        "status": 200,
        "en": (
            "Confirm your email address",
            "Press the button to confirm your email address for {site}.",
        ),
        "zh": ("确认您的邮箱地址", "请点击下方按钮，确认您在{site}的邮箱地址。"),
    },
    "approved": {
        "status": 200,
        "en": (
            "Email address confirmed",
            "Your email address for {site} is confirmed. You can close this page.",
        ),
        "zh": ("邮箱地址已确认", "您在{site}的邮箱地址已确认，可以关闭此页面。"),
    },
    "used": {
        "status": 410,
        "en": (
            "This link has already been used",
            "Your email address for {site} is already confirmed; there is nothing more to do.",
        ),
        "zh": ("此链接已被使用", "您在{site}的邮箱地址已经确认，无需再次操作。"),
    },
    "expired": {
        "status": 410,
        "en": (
            "This link has expired",
            "Links work for a limited time. Ask {site} to send you a new one.",
        ),
        "zh": ("此链接已过期", "链接仅在限定时间内有效，请在{site}重新获取。"),
    },
    "closed": {
        "status": 410,
        "en": (
            "This link is no longer valid",
            "This verification was closed. Ask {site} to send you a new link if you still need one.",
        ),
        "zh": ("此链接已失效", "此次验证已结束。如仍需验证，请在{site}重新获取链接。"),
    },
    "invalid": {
        "status": 404,
        "en": (
            "This link is not valid",
            "It may have been replaced by a newer one: use the link in the most recent email.",
        ),
        "zh": ("此链接无效", "它可能已被新的链接取代，请使用最新邮件中的链接。"),
    },
    "unsubscribe": {
        "status": 200,
        "en": ("Unsubscribe", "Stop receiving announcements by email at this address?"),
        "zh": ("退订", "确定不再通过此邮箱接收通知吗？"),
    },
    "unsubscribed": {
        "status": 200,
        "en": ("You are unsubscribed", "This address will not receive announcements any more."),
        "zh": ("已退订", "此邮箱将不再收到通知。"),
    },
    "limited": {
        "status": 429,
        "en": ("Too many attempts", "Please wait a minute and try again."),
        "zh": ("尝试次数过多", "请稍等一分钟后再试。"),
    },
    "unavailable": {
        "status": 503,
        "en": (
            "Temporarily unavailable",
            "We could not check your link just now. Please try again in a moment.",
        ),
        "zh": ("服务暂时不可用", "暂时无法验证您的链接，请稍后再试。"),
    },
}
_BUTTON = {"en": "Confirm", "zh": "确认"}
_UNSUBSCRIBE_BUTTON = {"en": "Unsubscribe", "zh": "退订"}
_CONTINUE = {"en": "Continue to {site}", "zh": "返回{site}"}
# No caching (the answer changes once used), no referrer (the URL holds the token), no
# framing (a framed button could be clicked by trickery), no indexing.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


def _client_ip(request: web.Request) -> str:
    if request.app[keys.SETTINGS].http.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        # The last hop is the one our own proxy appended; earlier ones are the client's say.
        if hops := [hop.strip() for hop in forwarded.split(",") if hop.strip()]:
            return hops[-1]
    return request.remote or "unknown"


async def _within_limit(request: web.Request) -> bool:
    """Per-IP requests per minute on the public pages (a fixed one-minute window)."""
    settings = request.app[keys.SETTINGS]
    limit = settings.http.page_requests_per_minute
    key = request.app[keys.REDIS_KEYS].page_ip_minute(_client_ip(request))
    async with request.app[keys.REDIS].pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=60, nx=True)  # the window starts with its first request
        pipe.incr(key)  # keeps the TTL
        _, count = await pipe.execute()
    return int(count) <= limit


def _page(
    request: web.Request,
    state: str,
    locale: str,
    site: SiteConfig | None,
    *,
    form: bool = False,
    button: dict[str, str] = _BUTTON,
) -> web.Response:
    kind = state if state in _PAGES else "closed"
    lang = locale or normalise_locale(request.headers.get("Accept-Language", "").split(",")[0])
    page = _PAGES[kind]
    title, text = page[lang]
    name = site.display_name if site else ("the site" if lang == "en" else "网站")
    continue_url = str(site.return_url) if site and site.return_url and kind != "pending" else None
    html = _renderer(request.app).render(
        site,
        lang="zh-CN" if lang == "zh" else "en",
        title=title,
        text=text.format(site=name),
        button=button[lang] if form else None,
        continue_url=continue_url,
        continue_text=_CONTINUE[lang].format(site=name),
    )
    headers = dict(_HEADERS)
    if kind in ("limited", "unavailable"):
        headers["Retry-After"] = "60" if kind == "limited" else "5"
    return web.Response(text=html, status=page["status"], content_type="text/html", headers=headers)


def _redirect(site: SiteConfig, verification_id: str) -> web.Response:
    """303 to the site's return URL, telling it which verification is now approved."""
    target = URL(str(site.return_url)).update_query(
        verification_id=verification_id, status="approved"
    )
    return web.Response(status=303, headers={**_HEADERS, "Location": str(target)})


async def _link(request: web.Request, *, use: bool) -> web.Response:
    token = request.match_info["token"]
    try:
        if not await _within_limit(request):
            return _page(request, "limited", "", None)
        state: LinkState = await request.app[keys.SERVICE].link(token, use=use)
    except (RedisConnectionError, RedisTimeoutError, OSError):
        logger.warning("link page could not reach Redis")
        return _page(request, "unavailable", "", None)
    site = request.app[keys.SITES].get(state.site) if state.site else None
    locale = normalise_locale(state.locale) if state.locale else ""
    if state.state == "approved":
        vid = f"ver_{token.partition('.')[0]}"
        logger.info("verification approved by link", extra={"verification": vid})
        if site is not None and site.return_url is not None:
            return _redirect(site, vid)
    if state.state == "not_found":
        return _page(request, "invalid", locale, site)
    return _page(request, state.state, locale, site, form=state.open)


@routes.get("/v/{token}")
async def show_link(request: web.Request) -> web.Response:
    """The confirm page (or why the link no longer works); changes nothing."""
    return await _link(request, use=False)


@routes.post("/v/{token}")
async def use_link(request: web.Request) -> web.Response:
    """Approve the verification the link belongs to, then go back to the site."""
    return await _link(request, use=True)


async def _unsubscribe(request: web.Request, *, use: bool) -> web.Response:
    token = request.match_info["token"]
    # Ours are base64url; other text could not be compared in constant time anyway.
    address = request.app[keys.SERVICE].unsubscribed_address(token) if token.isascii() else None
    if address is None:
        return _page(request, "invalid", "", None)
    if not use:
        return _page(request, "unsubscribe", "", None, form=True, button=_UNSUBSCRIBE_BUTTON)
    try:
        await request.app[keys.BROADCASTS].unsubscribe_mail(address)
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return _page(request, "unavailable", "", None)
    logger.info("email subscriber unsubscribed")
    return _page(request, "unsubscribed", "", None)


@routes.get("/unsubscribe/{token}")
async def show_unsubscribe(request: web.Request) -> web.Response:
    """Ask before unsubscribing (a GET may be a mail scanner)."""
    return await _unsubscribe(request, use=False)


@routes.post("/unsubscribe/{token}")
async def use_unsubscribe(request: web.Request) -> web.Response:
    """Unsubscribe: the page's button, or a mail client's RFC 8058 one-click POST."""
    return await _unsubscribe(request, use=True)
