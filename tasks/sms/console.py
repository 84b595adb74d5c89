"""Development SMS provider: texts go to the dev outbox and the terminal, not to phones."""

from __future__ import annotations

import json
import secrets

from redis.asyncio import Redis

from tasks.sms.base import SmsMessage
from verification.models import now_ms


class ConsoleSmsSender:
    """Keeps each text in the ``/dev/outbox`` list (next to emails) and prints it."""

    def __init__(self, redis: Redis, key: str, *, echo: bool = True, keep: int = 200) -> None:
        self._redis = redis
        self._key = key
        self._echo = echo
        self._keep = keep

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
            "at": now_ms(),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._key, json.dumps(entry, ensure_ascii=False))
            pipe.ltrim(self._key, 0, self._keep - 1)
            await pipe.execute()
        if self._echo:
            # The console provider is the dev stand-in for a phone: showing the code is
            # the point, and it is never configured in production.
            print(
                f"\n── outbox: SMS to {message.to} ──\n{message.text}\n──────────────\n", flush=True
            )
        return message_id

    async def close(self) -> None:
        """Nothing to release."""
