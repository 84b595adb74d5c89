"""How a provider says a send failed."""

from __future__ import annotations


class DeliveryError(Exception):
    """A send failed. ``retryable`` says whether trying again later may succeed.

    ``reason`` is shown on the verification; providers keep addresses and codes out of it.
    """

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
