"""Who the bot may write to, and what each chat chose (language)."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from verification.keys import Keys
from verification.models import now_ms


class Subscribers:
    """Telegram chats subscribed to announcements, in Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def subscribe(self, chat_id: int, user_id: int) -> None:
        """Add the chat (again); keeps its first subscription time."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._keys.subscribers, {str(chat_id): now_ms()}, nx=True)
            pipe.hset(self._keys.chat(chat_id), "user_id", str(user_id))
            await pipe.execute()

    async def unsubscribe(self, chat_id: int) -> bool:
        """Remove the chat; True if it was subscribed."""
        return bool(await self._redis.zrem(self._keys.subscribers, str(chat_id)))

    async def is_subscribed(self, chat_id: int) -> bool:
        """Whether announcements go to this chat."""
        return await self._redis.zscore(self._keys.subscribers, str(chat_id)) is not None

    async def count(self) -> int:
        """Number of subscribed chats."""
        return int(await self._redis.zcard(self._keys.subscribers))

    async def language(self, chat_id: int) -> str | None:
        """The language the person chose with /language, if any."""
        return cast(str | None, await self._redis.hget(self._keys.chat(chat_id), "language"))

    async def set_language(self, chat_id: int, language: str) -> None:
        """Remember the person's choice."""
        await self._redis.hset(self._keys.chat(chat_id), "language", language)

    async def timezone(self, chat_id: int) -> str | None:
        """The IANA zone (or UTC offset) the person set with /timezone."""
        return cast(str | None, await self._redis.hget(self._keys.chat(chat_id), "timezone"))

    async def set_timezone(self, chat_id: int, zone: str) -> None:
        """Remember the person's time zone."""
        await self._redis.hset(self._keys.chat(chat_id), "timezone", zone)

    async def await_contact(self, chat_id: int, verification_id: str, ttl_ms: int) -> None:
        """The chat is asked to share its phone for ``verification_id``."""
        await self._redis.set(self._keys.chat_pending(chat_id), verification_id, px=ttl_ms)

    async def awaited_contact(self, chat_id: int) -> str | None:
        """The verification a shared contact in this chat is for."""
        return cast(str | None, await self._redis.get(self._keys.chat_pending(chat_id)))

    async def contact_received(self, chat_id: int) -> None:
        """Nothing is awaited from the chat any more."""
        await self._redis.delete(self._keys.chat_pending(chat_id))
