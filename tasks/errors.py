"""How a provider says a send failed."""

from __future__ import annotations


class DeliveryError(Exception):
    """A send failed. ``retryable`` says whether trying again later may succeed.

    ``reason`` is shown on the verification; providers keep addresses and codes out of it.
    ``maybe_sent``: the request may have reached the provider (a timeout after it was
    written), so the message may yet arrive; it is not retried, and the verification stays
    open for the code it may carry.
    """

    def __init__(self, reason: str, *, retryable: bool, maybe_sent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable and not maybe_sent
        self.maybe_sent = maybe_sent
