"""Jinja2 templates per locale and site turned into ``multipart/alternative`` messages."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from config.branding import BrandingSettings, resolve_brand
from config.settings import EmailSettings, Settings
from config.sites import SUPPORTED_LOCALES, SiteConfig
from config.templates import TemplateSet, build_templates
from tasks.email.addresses import wire_address

# SMTP wants CRLF line ends on the wire.
CRLF = "\r\n"


def _header(value: str) -> str:
    """A header value on one line; non-ASCII as RFC 2047 encoded words."""
    value = " ".join(value.splitlines())
    return value if value.isascii() else Header(value, "utf-8").encode(linesep=CRLF)


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
        variables = {**sender.brand, **context}

        def part(kind: str) -> str:
            return self._templates.get(f"{lang}/{template}.{kind}.j2", site).render(variables)

        subject, text, html = part("subject").strip(), part("txt"), part("html")
        message_id = make_msgid(domain=sender.domain)
        recipient = wire_address(to)
        fields = {
            "MIME-Version": "1.0",
            "Subject": subject,
            "From": sender.header,
            "Date": formatdate(localtime=True),
            "Message-ID": message_id,
            "Auto-Submitted": "auto-generated",
            **(headers or {}),
        }
        boundary = f"=_tidings_{secrets.token_hex(12)}"
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
                base64.encodebytes(body.encode()).decode().rstrip("\n").replace("\n", CRLF),
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
