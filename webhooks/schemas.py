"""Request bodies, validated with pydantic; their JSON Schemas feed ``/openapi.json``."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from config.sites import Channel
from verification.phones import normalise_phone

SIGNUP_CREATED = "signup.created"
SIGNUP_CANCELED = "signup.canceled"
USER_DELETED = "user.deleted"
EVENT_TYPES = (SIGNUP_CREATED, SIGNUP_CANCELED, USER_DELETED)


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str:
    """email-validator's normalised domain, cached: signups share a few thousand domains."""
    return str(validate_email(f"postmaster@{domain}", check_deliverability=False).domain)


def normalise_email(address: str) -> str:
    """Validate and normalise an address with email-validator.

    The common case, a plain ASCII local part, only needs the (cached) domain check; anything
    else (quoted or internationalised local parts) goes through the full validation.
    """
    local, at, domain = address.rpartition("@")
    if at and len(address) <= 254 and len(local) <= 64 and _DOT_ATOM.match(local):
        return f"{local}@{_domain(domain)}"
    return str(validate_email(address, check_deliverability=False).normalized)


class Envelope(BaseModel):
    """Every inbound webhook: ``{"type", "timestamp", "data"}``."""

    type: str
    timestamp: datetime
    data: dict[str, Any]


class SignupCreated(BaseModel):
    """``data`` of ``signup.created``."""

    model_config = ConfigDict(extra="ignore")

    user_id: Annotated[str, Field(min_length=1, max_length=256)]
    email: str | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    channel: Channel
    locale: Annotated[str, Field(max_length=35)] | None = None
    remind_after: Annotated[int, Field(ge=60, le=30 * 86_400)] | None = None
    metadata: dict[str, Any] | None = None
    # Opt in to the site's email announcements (broadcasts) once the address is verified.
    subscribe: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_email(value)
        except EmailNotValidError as exc:
            raise ValueError(f"not a valid email address: {exc}") from None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        """E.164; national forms are read in the ``phone_region`` given as context."""
        if value is None:
            return None
        region = (info.context or {}).get("phone_region", "CN")
        return normalise_phone(value, region)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > 4_096:
            raise ValueError("metadata must serialise to at most 4096 bytes")
        return value


#: Which ``signup.created`` field each channel sends to.
DESTINATION_FIELD = {
    Channel.EMAIL: "email",
    Channel.LINK: "email",
    Channel.SMS: "phone",
}


class UserRef(BaseModel):
    """``data`` of ``signup.canceled`` and ``user.deleted``."""

    model_config = ConfigDict(extra="ignore")

    user_id: Annotated[str, Field(min_length=1, max_length=256)]


class CheckBody(BaseModel):
    """``POST /v1/verifications/{id}/check``."""

    code: Annotated[str, Field(pattern=r"^[0-9]{4,10}$")]


class ResendBody(BaseModel):
    """``POST /v1/verifications/{id}/resend``; the channel defaults to the current one."""

    channel: Channel | None = None


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as ``[{field, message}]`` without echoing the input.

    An error about the whole document (a JSON array instead of an object) names ``body``.
    """
    errors = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        field = f"{prefix}.{path}" if prefix and path else prefix or path or "body"
        message = error["msg"].removeprefix("Value error, ")
        errors.append({"field": field, "message": message})
    return errors
