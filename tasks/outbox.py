"""The development outbox: messages kept in Redis for ``/dev/outbox`` and printed."""

from __future__ import annotations

import json
import secrets
from typing import Any

from redis.asyncio import Redis

from verification.models import now_ms


class DevOutbox:
    """Where the dev providers (email and SMS) put what they would have sent."""

    def __init__(self, redis: Redis, key: str, *, echo: bool = True, keep: int = 200) -> None:
        self._redis = redis
        self._key = key
        self._echo = echo
        self._keep = keep

    async def keep(
        self, entry: dict[str, Any], headline: str, body: str, *, raw: bytes | None = None
    ) -> None:
        """Store ``entry`` (newest first, the last ``keep`` only) and print it.

        ``raw``: the message as it would have gone on the wire (every header), for the
        outbox's header view and ``.eml`` download.
        """
        # ``ref`` names the entry in URLs (message ids carry ``<``, ``@`` and ``>``).
        entry = {**entry, "at": now_ms(), "ref": secrets.token_hex(8)}
        if raw is not None:
            # Wire form is ASCII but for SMTPUTF8 headers, which are UTF-8.
            entry["raw"] = raw.decode("utf-8", errors="replace")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._key, json.dumps(entry, ensure_ascii=False))
            pipe.ltrim(self._key, 0, self._keep - 1)
            await pipe.execute()
        if self._echo:
            # The outbox is the dev stand-in for a mailbox or a phone: showing the code is
            # the point, and it is never configured in production.
            print(f"\n── outbox: {headline} ──\n{body.strip()}\n──────────────\n", flush=True)

    async def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first."""
        raw: list[str | bytes] = await self._redis.lrange(self._key, 0, limit - 1)
        return [json.loads(item) for item in raw]
