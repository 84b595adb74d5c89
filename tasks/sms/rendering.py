"""The text of an SMS, per purpose, locale and site, from Jinja2 templates."""

from __future__ import annotations

from collections.abc import Iterable

from config.branding import BrandingSettings, resolve_brand
from config.settings import Settings
from config.sites import SUPPORTED_LOCALES, SiteConfig
from config.templates import TemplateSet, build_templates
from tasks.sms.base import SmsMessage


class SmsRenderer:
    """Renders ``templates/<locale>/<purpose>.txt.j2`` into an :class:`SmsMessage`.

    The last line is the origin-bound one-time code (``@shop.example #123456``) that
    browsers and phones use to offer the code for autofill on that site only; template
    providers such as Ronglian need it in their approved template as well.

    Only the text comes from the templates: template providers (Ronglian) fill their own
    approved template, signature included, from ``params``, which stay as given.
    """

    def __init__(
        self,
        templates: TemplateSet | None = None,
        *,
        branding: BrandingSettings | None = None,
        sites: Iterable[SiteConfig] = (),
    ) -> None:
        self._templates = templates or build_templates("sms", None)
        branding = branding or BrandingSettings()
        self._default = resolve_brand(branding, None).context()
        self._brands = {site.id: resolve_brand(branding, site).context() for site in sites}

    @classmethod
    def for_settings(cls, settings: Settings) -> SmsRenderer:
        """The renderer of a worker: every site's branding and the override folder."""
        ids = [site.id for site in settings.sites]
        return cls(
            build_templates("sms", settings.templates_dir, ids),
            branding=settings.branding,
            sites=settings.sites,
        )

    def render(
        self,
        purpose: str,
        locale: str,
        to: str,
        params: dict[str, str],
        *,
        site: str | None = None,
    ) -> SmsMessage:
        """Build the message for ``to`` (E.164); unknown locales fall back to English."""
        lang = locale if locale in SUPPORTED_LOCALES else "en"
        brand = self._brands.get(site, self._default) if site is not None else self._default
        template = self._templates.get(f"{lang}/{purpose}.txt.j2", site)
        text = template.render({**brand, **params}).strip()
        return SmsMessage(to=to, purpose=purpose, params=params, text=text)
