"""How messages and pages look for a site: name, sender, footer, colour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict

if TYPE_CHECKING:
    from config.sites import SiteConfig

#: The button colour of the package's templates.
DEFAULT_COLOUR = "#1f6feb"


def _check_colour(value: str) -> str:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError("a #rrggbb hex colour, e.g. #1f6feb")
    return value.lower()


def _check_address(value: str) -> str:
    try:
        valid = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise ValueError("not a valid email address") from None
    if not valid.local_part.isascii():
        # Every server must take the sender, with SMTPUTF8 or without.
        raise ValueError("an address whose local part is ASCII")
    return value


HexColour = Annotated[str, AfterValidator(_check_colour)]
SenderAddress = Annotated[str, AfterValidator(_check_address)]


class BrandingSettings(BaseModel):
    """Defaults for every site (``TIDINGS_BRANDING__*``)."""

    model_config = ConfigDict(frozen=True)

    # Under every message; "{site}" becomes the site's display name. Empty: just the
    # site's display name (no advertising for Tidings unless an operator wants it).
    footer: str = ""
    colour: HexColour = DEFAULT_COLOUR


class SiteBranding(BaseModel):
    """One site's changes to :class:`BrandingSettings` and the email sender (``[sites.branding]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The From header; unset: TIDINGS_EMAIL__FROM_NAME, else the site's display name.
    from_name: str | None = None
    # The From header and the envelope sender; unset: TIDINGS_EMAIL__FROM_ADDRESS.
    from_address: SenderAddress | None = None
    footer: str | None = None
    colour: HexColour | None = None
    # Where the SMS text carries a signature (【Acme】); unset: the display name. Ronglian
    # attaches its own, approved with the provider-side template.
    sms_signature: str | None = None


@dataclass(frozen=True, slots=True)
class Brand:
    """What templates see of a site, resolved once per process."""

    name: str
    footer: str
    colour: str
    signature: str

    def context(self) -> dict[str, str]:
        """The template variables every message and page gets."""
        return {
            "site_name": self.name,
            "footer": self.footer,
            "colour": self.colour,
            "signature": self.signature,
        }


def resolve_brand(defaults: BrandingSettings, site: SiteConfig | None) -> Brand:
    """The brand of ``site`` (``None``: messages of no site, such as announcements)."""
    name = site.display_name if site is not None else ""
    own = site.branding if site is not None else SiteBranding()
    footer = own.footer if own.footer is not None else (defaults.footer or name)
    return Brand(
        name=name,
        footer=" ".join(footer.replace("{site}", name).split()),
        colour=own.colour or defaults.colour,
        signature=own.sms_signature or name,
    )
