"""Development SMS provider: texts go to the dev outbox and the terminal, not to phones."""

from __future__ import annotations

import secrets

from tasks.outbox import DevOutbox
from tasks.sms.base import SmsMessage


class ConsoleSmsSender:
    """Keeps each text in the ``/dev/outbox`` list (next to emails) and prints it."""

    def __init__(self, outbox: DevOutbox) -> None:
        self._outbox = outbox

    async def send(self, message: SmsMessage) -> str:
        """Store ``message``; returns a made-up message id like a provider would."""
        message_id = f"console-{secrets.token_hex(8)}"
        entry = {
            "kind": "sms",
            "id": message_id,
            "to": message.to,
            "from": "console SMS",
            "subject": f"SMS ({message.purpose})",
            "text": message.text,
            "html": "",
        }
        await self._outbox.keep(entry, f"SMS to {message.to}", message.text)
        return message_id

    async def close(self) -> None:
        """Nothing to release."""
