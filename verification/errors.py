"""What the verification core can refuse, in terms the web and bot layers translate."""

from __future__ import annotations

import math


class VerificationError(Exception):
    """Base class; messages are safe to show to the calling site."""


class NotFound(VerificationError):
    """No such verification for this site (also when it belongs to another site)."""


class NotPending(VerificationError):
    """The verification already reached a final status."""

    def __init__(self, status: str) -> None:
        super().__init__(f"verification is {status}")
        self.status = status


class RateLimited(VerificationError):
    """A limit was hit; ``retry_after`` is in whole seconds."""

    def __init__(self, scope: str, retry_after_ms: int) -> None:
        self.scope = scope
        self.retry_after = max(1, math.ceil(retry_after_ms / 1000))
        messages = {
            "cooldown": "a code was sent moments ago; wait before asking for another",
            "destination": "too many codes were sent to this destination recently",
            "site": "this site reached its hourly sending limit",
        }
        super().__init__(messages.get(scope, "rate limited"))


class ChannelUnavailable(VerificationError):
    """The channel is not allowed for the site or has no destination."""


class Refused(VerificationError):
    """An operator action that cannot be done; the message says why."""
