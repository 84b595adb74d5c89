"""Site declarations: who may post webhooks and call the API, and with which rules."""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator

from config.branding import SiteBranding


class Channel(StrEnum):
    """A way to reach a person."""

    EMAIL = "email"
    SMS = "sms"
    TELEGRAM = "telegram"
    LINK = "link"


#: Channels whose destination is an email address (a link travels by email).
EMAIL_CHANNELS = frozenset({Channel.EMAIL, Channel.LINK})

SUPPORTED_LOCALES = ("en", "zh")


def normalise_locale(value: str | None, default: str = "en") -> str:
    """Map a BCP 47 tag (``zh-CN``, ``zh_Hans``, ``en-GB``) to a supported locale."""
    if not value:
        return default
    lang = value.strip().lower().replace("_", "-").partition("-")[0]
    return lang if lang in SUPPORTED_LOCALES else default


class CodePolicy(BaseModel):
    """Rules for one-time codes; defaults follow Twilio Verify."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digits: Annotated[int, Field(ge=4, le=10)] = 6
    ttl_seconds: Annotated[int, Field(ge=60, le=86_400)] = 600
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    resend_cooldown_seconds: Annotated[int, Field(ge=0, le=3_600)] = 30
    sends_per_destination: Annotated[int, Field(ge=1, le=100)] = 5
    destination_window_seconds: Annotated[int, Field(ge=60, le=86_400)] = 600
    site_sends_per_hour: Annotated[int, Field(ge=1)] = 10_000


class CodePolicyOverrides(BaseModel):
    """Per-site changes to the global :class:`CodePolicy`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digits: Annotated[int, Field(ge=4, le=10)] | None = None
    ttl_seconds: Annotated[int, Field(ge=60, le=86_400)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None
    resend_cooldown_seconds: Annotated[int, Field(ge=0, le=3_600)] | None = None
    sends_per_destination: Annotated[int, Field(ge=1, le=100)] | None = None
    destination_window_seconds: Annotated[int, Field(ge=60, le=86_400)] | None = None
    site_sends_per_hour: Annotated[int, Field(ge=1)] | None = None

    def apply(self, base: CodePolicy) -> CodePolicy:
        """Return ``base`` with every field set here replaced."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class SiteConfig(BaseModel):
    """One third-party site."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: str = ""
    webhook_secrets: Annotated[list[SecretStr], Field(min_length=1)]
    api_keys: Annotated[list[SecretStr], Field(min_length=1)]
    channels: Annotated[list[Channel], Field(min_length=1)] = [Channel.EMAIL]
    callback_url: HttpUrl | None = None
    return_url: HttpUrl | None = None
    # Where people type codes, for the SMS "@domain #code" autofill line; defaults to the
    # return URL's host.
    domain: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")] | None = None
    default_locale: str = "en"
    codes: CodePolicyOverrides = CodePolicyOverrides()
    # Sender, footer and colour of this site's messages and pages ([sites.branding]).
    branding: SiteBranding = SiteBranding()

    @field_validator("webhook_secrets")
    @classmethod
    def _check_secrets(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for secret in secrets:
            raw = secret.get_secret_value()
            if not raw.startswith("whsec_"):
                raise ValueError("webhook secrets start with 'whsec_'")
            try:
                key = base64.b64decode(raw[len("whsec_") :], validate=True)
            except binascii.Error:
                raise ValueError("webhook secret is not valid base64 after 'whsec_'") from None
            if len(key) < 24:
                raise ValueError("webhook secret must hold at least 24 random bytes")
        return secrets

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 24 for key in keys):
            raise ValueError("API keys must be at least 24 characters long")
        return keys

    @field_validator("default_locale")
    @classmethod
    def _check_locale(cls, value: str) -> str:
        locale = normalise_locale(value, default="")
        if not locale:
            raise ValueError(f"supported locales are {', '.join(SUPPORTED_LOCALES)}")
        return locale

    @property
    def display_name(self) -> str:
        """The name people see in messages."""
        return self.name or self.id

    @property
    def code_domain(self) -> str | None:
        """The site's domain for origin-bound codes (``@shop.example #123456``)."""
        if self.domain:
            return self.domain
        return self.return_url.host if self.return_url else None


class SitesFile(BaseModel):
    """The TOML document named by ``TIDINGS_SITES_FILE``."""

    model_config = ConfigDict(extra="forbid")

    sites: list[SiteConfig] = []
