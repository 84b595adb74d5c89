"""Addresses as they go on the wire: IDN domains as A-labels, SMTPUTF8 only where needed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from tasks.errors import DeliveryError


@dataclass(frozen=True, slots=True)
class WireAddress:
    """An address ready for the envelope and the ``To:``/``From:`` headers.

    ``smtputf8``: the local part is not ASCII, so the address can only travel with the
    SMTPUTF8 extension (RFC 6531) and appears as UTF-8 in the headers (RFC 6532).
    """

    address: str
    smtputf8: bool


@lru_cache(maxsize=4096)
def wire_address(address: str) -> WireAddress:
    """``address`` with its domain as A-labels (an IDN domain's ASCII form, RFC 5890).

    Raises a final :class:`DeliveryError` for an address that cannot be sent at all; the
    reason never repeats the address.
    """
    if address.isascii():
        return WireAddress(address, smtputf8=False)
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        raise DeliveryError("the address cannot be sent by email", retryable=False) from None
    local = valid.local_part
    return WireAddress(f"{local}@{valid.ascii_domain}", smtputf8=not local.isascii())
