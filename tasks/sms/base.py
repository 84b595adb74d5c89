"""What every SMS provider implements (a Twilio or Aliyun provider would, too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One text to one phone.

    Template providers (Ronglian) send ``purpose``'s approved template filled from
    ``params``; free-text providers send ``text``, rendered from the same parameters.
    """

    to: str  # E.164, e.g. +8613800138000
    purpose: str  # "verification", …
    params: dict[str, str]  # code, minutes, domain, site_name
    text: str


class SmsSender(Protocol):
    """Sends SMS; raises :class:`tasks.errors.DeliveryError` on failure.

    A provider must raise ``retryable=False`` when a request may have reached the provider
    and its outcome is unknown: retrying could send the person a second text.
    """

    async def send(self, message: SmsMessage) -> str:
        """Send ``message``; return the provider's message id."""

    async def close(self) -> None:
        """Release connections."""
