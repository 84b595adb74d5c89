"""Jinja2 templates per locale and site turned into ``multipart/alternative`` messages."""

from __future__ import annotations

import binascii
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid
from functools import lru_cache
from typing import Any

from jinja2 import Template

from config.branding import BrandingSettings, resolve_brand
from config.settings import EmailSettings, Settings
from config.sites import SUPPORTED_LOCALES, SiteConfig
from config.templates import TemplateSet, build_templates
from tasks.email.addresses import wire_address
from tasks.email.stencils import Stencil, shape, stencil
from verification.codes import random_hex

# SMTP wants CRLF line ends on the wire.
CRLF = "\r\n"
# Stencils kept per renderer: sites x locales x templates x shapes stays far below.
_MAX_STENCILS = 4096


@lru_cache(maxsize=1024)
def _header(value: str) -> str:
    """A header value on one line; non-ASCII as RFC 2047 encoded words."""
    # Cached: subjects repeat per site and locale, and encoding one costs tens of us.
    value = " ".join(value.splitlines())
    return value if value.isascii() else Header(value, "utf-8").encode(linesep=CRLF)


@lru_cache(maxsize=2)
def _date_at(second: int) -> str:
    return formatdate(second, localtime=True)


def _date() -> str:
    """The Date header's value for now (local time), worked out once a second."""
    return _date_at(int(time.time()))


def _base64(body: str) -> str:
    """A part's text as base64 lines of 76 characters (RFC 2045) with CRLF between them."""
    # One b2a_base64 call, then cut: base64.encodebytes calls it once per line.
    data = binascii.b2a_base64(body.encode(), newline=False).decode("ascii")
    return CRLF.join([data[i : i + 76] for i in range(0, len(data), 76)])


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A finished message: its wire form plus what the outbox and the logs need.

    ``to`` is the address as the person gave it; ``envelope_to`` its wire form (A-label
    domain). ``smtputf8``: the message needs the SMTPUTF8 extension (a non-ASCII local part).
    """

    to: str
    envelope_from: str
    subject: str
    message_id: str
    text: str
    html: str
    raw: bytes
    envelope_to: str = ""
    smtputf8: bool = False
    # The From header as a person reads it ("Acme Shop <codes@acme.example>").
    sender: str = ""


@dataclass(frozen=True, slots=True)
class _Sender:
    """One site's sender and template variables, worked out once per process."""

    header: str  # the From header on the wire
    readable: str
    envelope_from: str
    domain: str
    brand: dict[str, str]


def _sender(email: EmailSettings, branding: BrandingSettings, site: SiteConfig | None) -> _Sender:
    brand = resolve_brand(branding, site)
    own = site.branding if site is not None else None
    name = (own and own.from_name) or email.from_name or brand.name
    # Settings keep the sender's local part ASCII, so it reaches every server.
    address = wire_address((own and own.from_address) or email.from_address).address
    _, _, domain = address.rpartition("@")
    return _Sender(
        # The display name becomes RFC 2047 encoded words, the address stays outside them.
        header=formataddr((name, address), "utf-8"),
        readable=f"{name} <{address}>" if name else address,
        envelope_from=address,
        domain=domain or "localhost",
        brand=brand.context(),
    )


class EmailRenderer:
    """Renders a named template set (``code``, …) in a person's language, per site."""

    def __init__(
        self,
        settings: EmailSettings,
        templates: TemplateSet | None = None,
        *,
        branding: BrandingSettings | None = None,
        sites: Iterable[SiteConfig] = (),
    ) -> None:
        self._settings = settings
        self._templates = templates or build_templates("email", None)
        branding = branding or BrandingSettings()
        self._default = _sender(settings, branding, None)
        self._senders = {site.id: _sender(settings, branding, site) for site in sites}
        # (template, locale, site, shape) -> the three parts' stencils, or None: Jinja.
        self._stencils: dict[tuple[Any, ...], tuple[Stencil, Stencil, Stencil] | None] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> EmailRenderer:
        """The renderer of a worker: every site's branding and the override folder."""
        ids = [site.id for site in settings.sites]
        return cls(
            settings.email,
            build_templates("email", settings.templates_dir, ids),
            branding=settings.branding,
            sites=settings.sites,
        )

    def render(
        self,
        template: str,
        locale: str,
        to: str,
        context: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        site: str | None = None,
    ) -> RenderedEmail:
        """Build the message for ``site`` (``None``: no site's); unknown locales fall back to English.

        ``context`` comes on top of the brand's variables (``site_name``, ``footer``,
        ``colour``, ``signature``).

        The MIME structure is fixed (two UTF-8 parts, base64), so it is written directly:
        the ``email`` package's ``EmailMessage`` cost 2 ms per message and its ``email.mime``
        classes 0.6 ms, the largest share of a worker's time in the delivery benchmark.
        Tests parse every message with the ``email`` package.
        """
        lang = locale if locale in SUPPORTED_LOCALES else "en"
        sender = self._senders.get(site, self._default) if site is not None else self._default
        subject, text, html = self._parts(template, lang, site, sender, context)
        subject = subject.strip()
        message_id = make_msgid(domain=sender.domain)
        recipient = wire_address(to)
        fields = {
            "MIME-Version": "1.0",
            "Subject": subject,
            "From": sender.header,
            "Date": _date(),
            "Message-ID": message_id,
            "Auto-Submitted": "auto-generated",
            **(headers or {}),
        }
        boundary = f"=_tidings_{random_hex(12)}"
        lines = [f"{name}: {_header(value)}" for name, value in fields.items()]
        # Never an encoded word over an address (RFC 2047 section 5): ASCII with A-labels, or
        # UTF-8 as RFC 6532 allows once SMTPUTF8 carries the message.
        lines.append(f"To: {recipient.address}")
        lines += [f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
        for subtype, body in (("plain", text), ("html", html)):
            lines += [
                f"--{boundary}",
                f'Content-Type: text/{subtype}; charset="utf-8"',
                "Content-Transfer-Encoding: base64",
                "",
                _base64(body),
            ]
        lines += [f"--{boundary}--", ""]
        return RenderedEmail(
            to=to,
            envelope_from=sender.envelope_from,
            subject=subject,
            message_id=message_id,
            text=text,
            html=html,
            raw=CRLF.join(lines).encode(),
            envelope_to=recipient.address,
            smtputf8=recipient.smtputf8,
            sender=sender.readable,
        )

    def _parts(
        self, template: str, lang: str, site: str | None, sender: _Sender, context: dict[str, Any]
    ) -> tuple[str, str, str]:
        """Subject, text and HTML of a message: from its stencils, else from Jinja."""
        key = shape(context)
        if key is not None:
            cache_key = (template, lang, site, key)
            if cache_key in self._stencils:
                cut = self._stencils[cache_key]
            else:
                cut = self._cut(template, lang, site, sender, context)
                if len(self._stencils) < _MAX_STENCILS:
                    self._stencils[cache_key] = cut
            if cut is not None:
                subject, text, html = cut
                return subject.fill(context), text.fill(context), html.fill(context)
        variables = {**sender.brand, **context}
        return (
            self._template(template, lang, "subject", site).render(variables),
            self._template(template, lang, "txt", site).render(variables),
            self._template(template, lang, "html", site).render(variables),
        )

    def _template(self, template: str, lang: str, kind: str, site: str | None) -> Template:
        return self._templates.get(f"{lang}/{template}.{kind}.j2", site)

    def _cut(
        self, template: str, lang: str, site: str | None, sender: _Sender, context: dict[str, Any]
    ) -> tuple[Stencil, Stencil, Stencil] | None:
        """Stencils of the three parts, if all three take them and match Jinja's output."""
        cut = []
        for kind in ("subject", "txt", "html"):
            compiled = self._template(template, lang, kind, site)
            made = stencil(compiled, sender.brand, context)
            # The first message of each shape checks the stencil against Jinja itself.
            if made is None or made.fill(context) != compiled.render({**sender.brand, **context}):
                return None
            cut.append(made)
        return cut[0], cut[1], cut[2]
