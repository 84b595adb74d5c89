"""A local Telegram Bot API server speaking the real wire protocol, for the real aiogram ``Bot``.

Usage::

    async with TelegramEmulator() as telegram:
        bot = telegram.bot()
        try:
            await bot.send_message(42, "hello")
        finally:
            await bot.session.close()
        assert telegram.sent[0].text == "hello"

Requests are ``POST`` (or ``GET``) ``/bot{token}/{method}`` with parameters in the query
string and/or an ``application/x-www-form-urlencoded``, ``multipart/form-data`` or JSON body.
In form bodies everything is a string: nested objects (``reply_markup``, ``entities``,
``allowed_updates``, …) are JSON text and booleans are ``"true"``/``"false"``; the emulator
decodes them into :attr:`ApiCall.params` (the strings as received stay in
:attr:`ApiCall.raw`). Method names are case-insensitive, as on Telegram.

Every answer is ``{"ok": true, "result": …}`` with a result valid for aiogram's models, or
``{"ok": false, "error_code": N, "description": …}`` (plus ``parameters.retry_after`` for
429) with HTTP status N. A token other than :attr:`TelegramEmulator.token` gets 401
``Unauthorized``; an unknown method 404 ``Not Found``.

Implemented methods: ``getMe``, ``sendMessage``, ``copyMessage``, ``sendPhoto``,
``sendDocument``, ``editMessageText``, ``deleteMessage``, ``answerCallbackQuery``,
``sendChatAction``, ``setWebhook``, ``deleteWebhook``, ``getWebhookInfo``,
``setMyCommands``, ``getMyCommands``, ``deleteMyCommands``, ``getUpdates``.

Long polling: :meth:`TelegramEmulator.queue_update` puts an update (from
:meth:`~TelegramEmulator.message_update` and friends) in the bot's queue, and ``getUpdates``
answers as Telegram does: ``offset`` confirms (drops) every update with a smaller
``update_id`` (a negative offset keeps only the last ``-offset`` ones), ``limit`` (1-100,
default 100) caps the answer, ``timeout`` holds the request up to that many seconds while
nothing is pending (default 0: answer at once), and ``allowed_updates`` (like
``setWebhook``'s, remembered until changed) decides which updates queued *afterwards* are
kept: by default every type but ``chat_member``, ``message_reaction`` and
``message_reaction_count``. While a webhook is set, ``getUpdates`` answers 409 ``Conflict:
can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook
first``; a second ``getUpdates`` ends a held one with 409 ``Conflict: terminated by other
getUpdates request; make sure that only one bot instance is running``. ``drop_pending_updates``
on ``setWebhook``/``deleteWebhook`` empties the queue, and ``getWebhookInfo`` counts it in
``pending_update_count``.

Scripted faults:

- :meth:`TelegramEmulator.block` -> any call whose ``chat_id`` is that chat answers 403
  ``Forbidden: bot was blocked by the user``.
- :meth:`TelegramEmulator.not_found` -> 400 ``Bad Request: chat not found`` (for ``chat_id``
  and ``from_chat_id``).
- :meth:`TelegramEmulator.fail_next` -> the next calls of one method (or of any method) get
  ``"429:<retry_after>"``, any HTTP status (``"500"``, ``"400"``, ``"400:<description>"``),
  ``"timeout"`` (held, never answered until :meth:`release`/:meth:`stop`) or ``"drop"``
  (connection closed without an answer).
- :meth:`TelegramEmulator.pause` -> calls of these methods wait (unanswered) until
  :meth:`~TelegramEmulator.resume`, then are answered as usual: puts calls from separate
  processes in a known order without sleeping.
- :meth:`TelegramEmulator.rate_limit` -> flood control: once ``per_second`` messages were
  accepted in the trailing second, sends answer 429 with ``retry_after``, and keep doing so
  until that many seconds have passed since the first 429 (a client that retries early is
  refused again and leaves extra 429s in :attr:`calls`).

A call answered with an error is recorded in :attr:`TelegramEmulator.calls` (with its status
and description) but never in :attr:`TelegramEmulator.sent`.

Limits, as Telegram's: a text over 4096 or a caption over 1024 UTF-16 code units (an emoji
outside the BMP counts 2) answers 400 ``Bad Request: message is too long`` / ``message caption
is too long``; ``callback_data`` over 64 bytes 400 ``BUTTON_DATA_INVALID``.

Descriptions for 401/403/404/429 and "chat not found", "message text is empty", "message is
too long", "message is not modified", "message to edit not found", "BUTTON_DATA_INVALID",
"BOT_COMMAND_INVALID" and the webhook HTTPS/port errors are Telegram's; the rest (missing
parameters, secret token characters) are plausible texts, not confirmed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

PATH = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[A-Za-z0-9_]+)/?$")
INTEGER = re.compile(r"^-?\d+$")
COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
WEBHOOK_PORTS = (80, 88, 443, 8443)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

# Form fields that are plain text even when they look like numbers, booleans or JSON.
TEXT_FIELDS = frozenset(
    {
        "text",
        "caption",
        "url",
        "secret_token",
        "callback_query_id",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
        "parse_mode",
        "language_code",
        "action",
        "photo",
        "document",
        "thumbnail",
        "certificate",
        "ip_address",
        "title",
        "description",
        "short_description",
        "name",
        "phone_number",
        "first_name",
        "last_name",
        "emoji",
        "data",
        "query",
    }
)
# Form fields that must hold JSON (a parse error is a 400, as on Telegram).
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "allowed_updates",
        "commands",
        "scope",
        "link_preview_options",
        "reply_parameters",
        "media",
    }
)
# Methods that deliver a message to ``chat_id`` (counted by :meth:`TelegramEmulator.rate_limit`).
SEND_METHODS = frozenset({"sendMessage", "copyMessage", "sendPhoto", "sendDocument"})
MARKUP_KINDS = frozenset({"inline_keyboard", "keyboard", "remove_keyboard", "force_reply"})
BUTTON_ACTIONS = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
BLOCKED = "Forbidden: bot was blocked by the user"
CHAT_NOT_FOUND = "Bad Request: chat not found"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a content and reply markup of the current message"
)
CHAT_MEMBER_STATUSES = ("member", "kicked", "left", "administrator")
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
POLL_TERMINATED = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
# Update types Telegram leaves out unless they are named in allowed_updates.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MAX_UPDATES = 100

ChatId = int | str


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a ``multipart/form-data`` request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class ApiCall:
    """One request to ``/bot{token}/{method}``, answered or not, and its outcome.

    Unpacks like the tuple ``(method, params, at)``.
    """

    method: str  # canonical name ("sendMessage") when known, else as in the URL
    params: dict[str, Any]  # decoded: ints, bools, parsed JSON objects
    at: float  # time.monotonic() on arrival
    raw: dict[str, Any]  # as received (form strings, or JSON values)
    files: dict[str, UploadedFile]
    http_method: str
    content_type: str
    token_ok: bool = True
    fault: str | None = None  # the scripted fail_next fault used on it, if any
    status: int | None = None  # the HTTP status answered; None while held (or dropped)
    result: Any = None  # the "result" of a successful answer
    description: str | None = None  # the "description" of an error answer
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        """Whether it was answered ``{"ok": true}``."""
        return self.status == 200

    def __iter__(self) -> Any:
        """``method, params, at = call``."""
        return iter((self.method, self.params, self.at))


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the emulator accepted (or an edit of one, in :attr:`TelegramEmulator.edits`)."""

    chat_id: ChatId  # as the client gave it (int, or "@channel")
    message_id: int
    method: str
    text: str | None  # the text; for a copy, the source's text when the emulator knows it
    reply_markup: dict[str, Any] | None  # parsed JSON, any keyboard kind
    at: float  # time.monotonic()
    params: dict[str, Any]
    caption: str | None = None
    from_chat_id: ChatId | None = None  # copyMessage only
    copied_message_id: int | None = None  # copyMessage only
    file: UploadedFile | str | None = None  # sendPhoto/sendDocument: upload, file_id or URL


@dataclass(slots=True)
class WebhookState:
    """What ``setWebhook``/``deleteWebhook`` left; ``url == ""`` means no webhook."""

    url: str = ""
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int | None = None
    ip_address: str | None = None
    drop_pending_updates: bool | None = None  # from the last setWebhook/deleteWebhook


class LocalAiohttpSession(AiohttpSession):
    """aiogram's ``AiohttpSession`` without the 250 ms pause in :meth:`close`.

    aiogram sleeps 0.25 s after closing so SSL connections can shut down; the emulator is
    plain HTTP on 127.0.0.1, and that pause would dominate a fast test suite.
    """

    async def close(self) -> None:
        """Close the underlying ``ClientSession`` at once."""
        if self._session is not None and not self._session.closed:
            await self._session.close()


class _ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


class _Hold(Exception):
    """Answer nothing until released (a ``"timeout"`` fault)."""


class _Drop(Exception):
    """Close the connection without answering (a ``"drop"`` fault)."""


def _parse_fault(fault: str) -> None:
    if fault in ("timeout", "drop"):
        return
    status, _, extra = fault.partition(":")
    if not re.fullmatch(r"[1-5]\d\d", status):
        raise ValueError(f"unknown fault {fault!r}")
    if status == "429" and extra and not extra.isdigit():
        raise ValueError(f"429 takes an integer retry_after: {fault!r}")


def _fault_error(fault: str) -> Exception:
    if fault == "timeout":
        return _Hold()
    if fault == "drop":
        return _Drop()
    code, _, extra = fault.partition(":")
    status = int(code)
    if status == 429:
        retry_after = int(extra or 1)
        return _ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
    return _ApiError(status, extra or DESCRIPTIONS.get(status, "Error"))


def _decode(key: str, value: Any) -> Any:
    """A form value as Telegram reads it (JSON fields parsed, ints, booleans)."""
    if not isinstance(value, str):
        return value
    if key in JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            if key == "reply_markup":
                raise _ApiError(
                    400, "Bad Request: can't parse reply keyboard markup JSON object"
                ) from None
            raise _ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    if key in TEXT_FIELDS:
        return value
    if value in ("true", "false"):
        return value == "true"
    if INTEGER.match(value):
        return int(value)
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _chat_key(chat_id: Any) -> ChatId:
    if isinstance(chat_id, str) and INTEGER.match(chat_id):
        return int(chat_id)
    return chat_id  # type: ignore[no-any-return]


def _utf16_len(text: str) -> int:
    """Length as Telegram counts it (and its entity offsets): UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class TelegramEmulator:
    """The Telegram Bot API on ``127.0.0.1`` and a random port, for one bot.

    ``token`` is the only accepted token; the bot's id is its digits. ``require_https_webhook``
    makes ``setWebhook`` refuse non-HTTPS URLs and ports other than 80/88/443/8443, as
    Telegram does.
    """

    def __init__(
        self,
        *,
        token: str = "123456:TEST-token",
        username: str = "tidings_test_bot",
        first_name: str = "Tidings Test",
        require_https_webhook: bool = True,
    ) -> None:
        """Configure the bot; nothing listens until :meth:`start`."""
        bot_id, colon, secret = token.partition(":")
        if not (bot_id.isdigit() and colon and secret):
            raise ValueError("a bot token looks like '123456:secret'")
        self.token = token
        self.bot_id = int(bot_id)
        self.username = username
        self.first_name = first_name
        self.require_https_webhook = require_https_webhook
        self._handlers: dict[str, tuple[str, Callable[[ApiCall], Any]]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "sendMessage": self._send_message,
                "copyMessage": self._copy_message,
                "sendPhoto": self._send_photo,
                "sendDocument": self._send_document,
                "editMessageText": self._edit_message_text,
                "deleteMessage": self._delete_message,
                "answerCallbackQuery": self._answer_callback_query,
                "sendChatAction": self._send_chat_action,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "getUpdates": self._get_updates,
            }.items()
        }
        self._release = asyncio.Event()
        self._updates_changed = asyncio.Event()
        self._poll_generation = 0  # the newest getUpdates; older held ones are terminated
        self._paused: dict[str, asyncio.Event] = {}
        self._closing = False
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._clear()

    def _clear(self) -> None:
        self.calls: list[ApiCall] = []
        self.sent: list[SentMessage] = []
        self.edits: list[SentMessage] = []
        self.deleted: list[tuple[ChatId, int]] = []
        self.webhook = WebhookState()
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._faults: dict[str | None, deque[str]] = {}
        self._blocked: dict[ChatId, str] = {}
        self._not_found: set[ChatId] = set()
        self._rate: tuple[int, int] | None = None
        self._send_times: deque[float] = deque()
        self._flood_until = 0.0
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._gone: set[tuple[int, int]] = set()
        self._last_message_id: dict[int, int] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._channels: dict[str, int] = {}
        self._update_id = 700_000_000
        self._query_id = 4_382_000_000_000_000_000
        self._updates: deque[dict[str, Any]] = deque()
        self._allowed_updates: list[str] | None = None  # the bot's setting; None: default

    # -- configuration -------------------------------------------------------------------

    def block(self, *chat_ids: ChatId, description: str = BLOCKED) -> None:
        """Calls to these chats answer 403 (``description="Forbidden: user is deactivated"``…)."""
        for chat_id in chat_ids:
            self._blocked[_chat_key(chat_id)] = description

    def unblock(self, *chat_ids: ChatId) -> None:
        """Undo :meth:`block`."""
        for chat_id in chat_ids:
            self._blocked.pop(_chat_key(chat_id), None)

    def not_found(self, *chat_ids: ChatId) -> None:
        """Calls naming these chats (``chat_id``/``from_chat_id``) answer 400 chat not found."""
        self._not_found.update(_chat_key(c) for c in chat_ids)

    def fail_next(self, method: str | None, *faults: str) -> None:
        """Script the answers to the next calls of ``method`` (any method if None), in order.

        Each fault is ``"429:<retry_after>"``, an HTTP status (``"500"``, ``"400"``) optionally
        with a description (``"400:Bad Request: message is too long"``), ``"timeout"`` or
        ``"drop"``. Faults for the named method are used before those for any method.
        """
        for fault in faults:
            _parse_fault(fault)
        key = method.lower() if method is not None else None
        self._faults.setdefault(key, deque()).extend(faults)

    @property
    def pending_faults(self) -> int:
        """Scripted :meth:`fail_next` faults not used yet."""
        return sum(len(q) for q in self._faults.values())

    def rate_limit(self, per_second: int | None = 30, retry_after: int = 1) -> None:
        """Answer sends with 429 past ``per_second`` accepted messages in 1 s (None: off)."""
        if per_second is not None and per_second < 1:
            raise ValueError("per_second must be at least 1")
        self._rate = None if per_second is None else (per_second, retry_after)
        self._flood_until = 0.0

    def pause(self, *methods: str) -> None:
        """Hold calls of these methods (case-insensitive) until :meth:`resume`.

        Held calls are in :attr:`calls` (``status`` None) and are answered normally once
        resumed, e.g. to let a process reach Telegram only after another one did.
        """
        for method in methods:
            self._paused.setdefault(method.lower(), asyncio.Event())

    def resume(self, *methods: str) -> None:
        """Answer the calls held by :meth:`pause` (all paused methods if none is named)."""
        for method in [m.lower() for m in methods] or list(self._paused):
            gate = self._paused.pop(method, None)
            if gate is not None:
                gate.set()

    def release(self) -> None:
        """Let calls held by a ``"timeout"`` fault finish (their client has usually gone)."""
        self._release.set()
        self._release = asyncio.Event()

    def reset(self) -> None:
        """Forget calls, messages, webhook, commands, queued updates and all scripted faults.

        Held and paused calls are released; a held ``getUpdates`` answers from the (now empty)
        queue when its timeout ends.
        """
        self.release()
        self.resume()
        self._clear()
        self._wake_pollers()

    def queue_update(self, update: dict[str, Any]) -> dict[str, Any] | None:
        """Queue ``update`` for ``getUpdates``, as Telegram does when something happens.

        ``update`` is usually from :meth:`message_update`, :meth:`callback_update`…; one without
        ``update_id`` gets the next one. Ids must increase in queue order (ValueError).
        Returns the queued update, or None when the bot's ``allowed_updates`` excludes its
        type (Telegram never creates it then). A held ``getUpdates`` answers at once.
        """
        update = dict(update)
        last = self._updates[-1]["update_id"] if self._updates else None
        if "update_id" not in update:
            update["update_id"] = self._next_update_id(None)
        elif not isinstance(update["update_id"], int):
            raise ValueError("update_id must be an integer")
        else:
            self._next_update_id(update["update_id"])
        if last is not None and update["update_id"] <= last:
            raise ValueError(
                f"update_id {update['update_id']} is not above the last queued one ({last})"
            )
        kinds = [key for key in update if key != "update_id"]
        if len(kinds) != 1:
            raise ValueError(f"an update holds exactly one event, not {kinds}")
        if not self._wanted(kinds[0]):
            return None
        self._updates.append(update)
        self._wake_pollers()
        return update

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Queued updates not confirmed yet (by an ``offset`` above their id), oldest first."""
        return list(self._updates)

    def _wanted(self, kind: str) -> bool:
        allowed = self._allowed_updates
        if not allowed:  # not set, or [] ("all but the opt-in types"), as on Telegram
            return kind not in OPT_IN_UPDATES
        return kind in allowed

    def _wake_pollers(self) -> None:
        self._updates_changed.set()
        self._updates_changed = asyncio.Event()

    # -- what tests read -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, for ``TelegramAPIServer.from_base``."""
        if self._port is None:
            raise RuntimeError("the Telegram emulator is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_server(self) -> TelegramAPIServer:
        """aiogram's server description for :attr:`url`."""
        return TelegramAPIServer.from_base(self.url)

    @property
    def me(self) -> dict[str, Any]:
        """The bot's ``User`` as ``getMe`` returns it."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def bot(self, *, token: str | None = None, timeout: float = 5.0, **kwargs: Any) -> Bot:
        """A real aiogram ``Bot`` talking to this emulator; close ``bot.session`` when done.

        ``timeout`` is the session's request timeout in seconds; ``kwargs`` go to ``Bot``
        (``default=DefaultBotProperties(...)``…). The session is a :class:`LocalAiohttpSession`
        (closing skips aiogram's 250 ms SSL grace pause).
        """
        session = LocalAiohttpSession(api=self.api_server, timeout=timeout)
        return Bot(token or self.token, session=session, **kwargs)

    def sent_to(self, chat_id: ChatId) -> list[SentMessage]:
        """Messages accepted for one chat, oldest first."""
        key = _chat_key(chat_id)
        return [m for m in self.sent if _chat_key(m.chat_id) == key]

    def calls_of(self, method: str) -> list[ApiCall]:
        """Calls of one method (case-insensitive), whatever their outcome."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    async def wait_for_sent(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        """Wait until at least ``count`` messages were accepted; AssertionError after ``timeout``."""
        await self._wait(lambda: len(self.sent) >= count, timeout, f"{count} sent message(s)")
        return self.sent

    async def wait_for_calls(
        self, count: int, method: str | None = None, timeout: float = 5.0
    ) -> list[ApiCall]:
        """Wait until at least ``count`` calls (of ``method`` if given) arrived, answered or not."""

        def matching() -> list[ApiCall]:
            return self.calls if method is None else self.calls_of(method)

        await self._wait(lambda: len(matching()) >= count, timeout, f"{count} {method} call(s)")
        return matching()

    async def wait_until(
        self, predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Wait until ``predicate()`` is truthy, re-checked after every request event.

        E.g. ``await telegram.wait_until(lambda: telegram.edits)``; AssertionError after
        ``timeout``.
        """
        await self._wait(lambda: bool(predicate()), timeout, what)

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if self._changed is None:
            raise RuntimeError("the Telegram emulator is not started")
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"Telegram emulator: timed out after {timeout}s waiting for {what} "
                    f"(calls {len(self.calls)}, sent {len(self.sent)})"
                ) from None

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # -- updates, as Telegram posts them to a webhook ------------------------------------------

    def user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """A ``User`` (remembered per id, so later updates and private chats reuse its names)."""
        known = self._users.setdefault(
            user_id, {"id": user_id, "is_bot": False, "first_name": "Test"}
        )
        for key, value in (
            ("first_name", first_name),
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
        ):
            if value is not None:
                known[key] = value
        return dict(known)

    def _next_update_id(self, update_id: int | None) -> int:
        if update_id is None:
            self._update_id += 1
            return self._update_id
        self._update_id = max(self._update_id, update_id)
        return update_id

    def _user_message(
        self, chat_id: int, user: dict[str, Any], message_id: int | None
    ) -> dict[str, Any]:
        chat = self._chat(chat_id)
        mid = self._new_message_id(chat["id"], message_id)
        return {"message_id": mid, "from": user, "chat": chat, "date": int(time.time())}

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self._messages[(message["chat"]["id"], message["message_id"])] = message
        return message

    def message_update(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        language_code: str | None = "en",
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        message_id: int | None = None,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``Update`` with a text message; a leading ``/command`` gets its entity."""
        user = self.user(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        message = self._user_message(chat_id, user, message_id)
        message["text"] = text
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
            ]
        return {"update_id": self._next_update_id(update_id), "message": self._store(message)}

    def contact_update(
        self,
        chat_id: int,
        user_id: int,
        phone_number: str,
        contact_user_id: int | None = None,
        *,
        with_user_id: bool = True,
        first_name: str | None = None,
        last_name: str | None = None,
        language_code: str | None = "en",
        message_id: int | None = None,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``Update`` with a shared contact (``contact_user_id`` defaults to the sender).

        ``phone_number`` is passed through as given: Telegram sends a user's own number as
        digits, often without ``+`` (``"79161234567"``), so test both forms.
        ``with_user_id=False`` omits ``contact.user_id`` (a contact card, not a Telegram user).
        """
        user = self.user(
            user_id, first_name=first_name, last_name=last_name, language_code=language_code
        )
        message = self._user_message(chat_id, user, message_id)
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": user["first_name"]}
        if "last_name" in user:
            contact["last_name"] = user["last_name"]
        if with_user_id:
            contact["user_id"] = user_id if contact_user_id is None else contact_user_id
        message["contact"] = contact
        return {"update_id": self._next_update_id(update_id), "message": self._store(message)}

    def _bot_message(self, chat_id: int, message_id: int | None, text: str) -> dict[str, Any]:
        """The bot's message ``message_id`` in the chat, made up (and remembered) if unknown."""
        chat = self._chat(chat_id)
        if message_id is not None and (found := self._messages.get((chat["id"], message_id))):
            return found
        mid = self._new_message_id(chat["id"], message_id)
        return self._store(
            {
                "message_id": mid,
                "from": self._bot_user(),
                "chat": chat,
                "date": int(time.time()),
                "text": text,
            }
        )

    def callback_update(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        message_id: int | None = None,
        *,
        message_text: str = "Choose:",
        language_code: str | None = "en",
        first_name: str | None = None,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``Update`` with a ``callback_query`` from a button under the bot's message.

        The message is the one the emulator sent (or edited) with that id, else a made-up bot
        message, remembered so ``editMessageText`` on it works.
        """
        user = self.user(user_id, first_name=first_name, language_code=language_code)
        message = self._bot_message(chat_id, message_id, message_text)
        self._query_id += 1
        query = {
            "id": str(self._query_id),
            "from": user,
            "message": message,
            "chat_instance": str(-(abs(hash((self.bot_id, chat_id))) % 10**18 + 10**18)),
            "data": data,
        }
        return {"update_id": self._next_update_id(update_id), "callback_query": query}

    def reply_update(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        reply_to_message_id: int | None = None,
        *,
        replied_text: str = "…",
        language_code: str | None = "en",
        first_name: str | None = None,
        message_id: int | None = None,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``Update`` with a text message replying to the bot's message.

        ``reply_to_message_id`` names a message the emulator knows (sent, copied, or from an
        earlier update); unknown or None makes up a bot message with ``replied_text``.
        """
        user = self.user(user_id, first_name=first_name, language_code=language_code)
        chat = self._chat(chat_id)
        replied = None
        if reply_to_message_id is not None:
            replied = self._messages.get((chat["id"], reply_to_message_id))
        if replied is None:
            replied = self._bot_message(chat_id, reply_to_message_id, replied_text)
        message = self._user_message(chat_id, user, message_id)
        message["text"] = text
        message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        return {"update_id": self._next_update_id(update_id), "message": self._store(message)}

    def my_chat_member_update(
        self,
        chat_id: int,
        user_id: int,
        new_status: str = "kicked",
        old_status: str | None = None,
        *,
        update_id: int | None = None,
    ) -> dict[str, Any]:
        """An ``Update`` with ``my_chat_member``: the bot's status changed (kicked = blocked).

        Statuses: member, kicked, left, administrator; ``old_status`` defaults to "member"
        (or "kicked" when the new status is "member", i.e. unblocked).
        """
        if old_status is None:
            old_status = "kicked" if new_status == "member" else "member"
        for status in (new_status, old_status):
            if status not in CHAT_MEMBER_STATUSES:
                raise ValueError(f"status must be one of {CHAT_MEMBER_STATUSES}, not {status!r}")
        event = {
            "chat": self._chat(chat_id),
            "from": self.user(user_id),
            "date": int(time.time()),
            "old_chat_member": self._chat_member(old_status),
            "new_chat_member": self._chat_member(new_status),
        }
        return {"update_id": self._next_update_id(update_id), "my_chat_member": event}

    def _chat_member(self, status: str) -> dict[str, Any]:
        member: dict[str, Any] = {"status": status, "user": self._bot_user()}
        if status == "kicked":
            member["until_date"] = 0
        elif status == "administrator":
            rights = [
                "can_be_edited",
                "is_anonymous",
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
                "can_send_welcome_messages",
            ]
            member.update(dict.fromkeys(rights, False))
        return member

    async def deliver(
        self,
        update: dict[str, Any],
        url: str | None = None,
        *,
        secret_token: str | None = None,
        timeout: float = 5.0,
    ) -> tuple[int, str]:
        """POST ``update`` as Telegram does to ``url`` (default: the webhook set); (status, body).

        Sends ``X-Telegram-Bot-Api-Secret-Token`` with ``secret_token`` or the webhook's one.
        A method returned in the webhook's response body (aiogram's "reply into webhook") is
        not executed: it shows up in the returned body, not in :attr:`sent`.
        """
        target = url or self.webhook.url
        if not target:
            raise RuntimeError("no webhook is set and no url was given")
        secret = secret_token if secret_token is not None else self.webhook.secret_token
        headers = {SECRET_HEADER: secret} if secret else {}
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.post(target, json=update, headers=headers) as response,
        ):
            return response.status, await response.text()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a random port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._updates_changed = asyncio.Event()
        self._closing = False
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Release held calls (a held ``getUpdates`` answers what is queued) and stop listening."""
        self._release.set()
        self.resume()
        self._closing = True
        self._wake_pollers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        await self.stop()

    # -- the endpoint ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = PATH.match(request.path)
        if match is None:
            return self._error(404, DESCRIPTIONS[404])
        name = match.group("method")
        canonical, handler = self._handlers.get(name.lower(), (name, None))
        call = ApiCall(
            method=canonical,
            params={},
            at=time.monotonic(),
            raw={},
            files={},
            http_method=request.method,
            content_type=request.content_type,
            token_ok=match.group("token") == self.token,
        )
        self.calls.append(call)
        try:
            try:
                await self._read(request, call)
            finally:
                await self._notify()
            if not call.token_ok:
                raise _ApiError(401, DESCRIPTIONS[401])
            gate = self._paused.get(canonical.lower())
            if gate is not None:
                await gate.wait()
            fault = self._take_fault(canonical)
            if fault is not None:
                call.fault = fault
                raise _fault_error(fault)
            if handler is None:
                raise _ApiError(404, DESCRIPTIONS[404])
            self._check_chats(call)
            if canonical in SEND_METHODS:
                self._check_flood()
            result = handler(call)
            if inspect.isawaitable(result):  # getUpdates, which may hold the request
                result = await result
        except _ApiError as error:
            call.status = error.status
            call.description = error.description
            call.retry_after = error.retry_after
            await self._notify()
            return self._error(error.status, error.description, error.retry_after)
        except _Hold:
            await self._release.wait()
            call.status = 504
            call.description = "released by the test"
            await self._notify()
            return self._error(504, DESCRIPTIONS[504])
        except _Drop:
            if request.transport is not None:
                request.transport.abort()
            await self._notify()
            return web.Response(status=500)
        call.status = 200
        call.result = result
        if canonical in SEND_METHODS:
            self._send_times.append(call.at)
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
        payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            payload["parameters"] = {"retry_after": retry_after}
        return web.json_response(payload, status=status)

    async def _read(self, request: web.Request, call: ApiCall) -> None:
        raw: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = await request.read()
            try:
                data = json.loads(body) if body else {}
            except ValueError:
                raise _ApiError(400, "Bad Request: can't parse JSON body") from None
            if not isinstance(data, dict):
                raise _ApiError(400, "Bad Request: JSON body must be an object")
            raw.update(data)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    call.files[key] = UploadedFile(
                        key, value.filename, value.content_type, value.file.read()
                    )
                else:
                    raw[key] = value
        call.raw = raw
        call.params = {key: _decode(key, value) for key, value in raw.items()}
        for key in ("chat_id", "from_chat_id"):
            if key in call.params:
                call.params[key] = _chat_key(call.params[key])

    def _take_fault(self, method: str) -> str | None:
        for key in (method.lower(), None):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    def _check_chats(self, call: ApiCall) -> None:
        chat_id = call.params.get("chat_id")
        from_chat_id = call.params.get("from_chat_id")
        for chat in (chat_id, from_chat_id):
            if isinstance(chat, int | str) and chat in self._not_found:
                raise _ApiError(400, CHAT_NOT_FOUND)
        if isinstance(chat_id, int | str) and chat_id in self._blocked:
            raise _ApiError(403, self._blocked[chat_id])

    def _check_flood(self) -> None:
        if self._rate is None:
            return
        per_second, retry_after = self._rate
        now = time.monotonic()
        if now < self._flood_until:
            wait = max(1, math.ceil(self._flood_until - now))
            raise _ApiError(429, f"Too Many Requests: retry after {wait}", wait)
        while self._send_times and self._send_times[0] <= now - 1.0:
            self._send_times.popleft()
        if len(self._send_times) >= per_second:
            self._flood_until = now + retry_after
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)

    # -- chats and messages ---------------------------------------------------------------------

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def _chat(self, chat_id: ChatId) -> dict[str, Any]:
        if isinstance(chat_id, str):
            name = chat_id.removeprefix("@")
            numeric = self._channels.setdefault(name, -1_001_000_000_000 - len(self._channels))
            return {"id": numeric, "type": "channel", "title": name, "username": name}
        if chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private"}
            user = self._users.get(chat_id, {"first_name": "Test"})
            for key in ("first_name", "last_name", "username"):
                if key in user:
                    chat[key] = user[key]
            return chat
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Test {kind} {chat_id}"}

    def _new_message_id(self, chat_id: int, wanted: int | None = None) -> int:
        last = self._last_message_id.get(chat_id, 0)
        mid = last + 1 if wanted is None else wanted
        self._last_message_id[chat_id] = max(last, mid)
        return mid

    @staticmethod
    def _require(call: ApiCall, key: str, description: str) -> Any:
        value = call.params.get(key)
        if value is None or value == "":
            raise _ApiError(400, description)
        return value

    def _require_chat(self, call: ApiCall, key: str = "chat_id") -> ChatId:
        chat_id = self._require(call, key, f"Bad Request: {key} is empty")
        if not isinstance(chat_id, int | str) or isinstance(chat_id, bool):
            raise _ApiError(400, CHAT_NOT_FOUND)
        if isinstance(chat_id, str) and not chat_id.startswith("@"):
            raise _ApiError(400, CHAT_NOT_FOUND)
        return chat_id

    @staticmethod
    def _markup(call: ApiCall) -> dict[str, Any] | None:
        markup = call.params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict) or not MARKUP_KINDS & markup.keys():
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _ApiError(400, "Bad Request: can't parse inline keyboard button")
                if not BUTTON_ACTIONS & button.keys():
                    raise _ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard",
                    )
                data = button.get("callback_data")
                if data is not None and len(str(data).encode()) > MAX_CALLBACK_DATA:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    @staticmethod
    def _text(call: ApiCall) -> str:
        text = call.params.get("text")
        if text is None or not str(text).strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        text = str(text)
        if _utf16_len(text) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        return text

    @staticmethod
    def _check_caption(caption: Any) -> None:
        if caption is not None and _utf16_len(str(caption)) > MAX_CAPTION:
            raise _ApiError(400, "Bad Request: message caption is too long")

    def _new_bot_message(
        self, chat_id: ChatId, call: ApiCall, markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        chat = self._chat(chat_id)
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat["id"]),
            "from": self._bot_user(),
            "chat": chat,
            "date": int(time.time()),
        }
        if chat["type"] == "channel":
            del message["from"]
            message["sender_chat"] = chat
        reply_to = call.params.get("reply_to_message_id")
        reply_parameters = call.params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
        if isinstance(reply_to, int) and (found := self._messages.get((chat["id"], reply_to))):
            message["reply_to_message"] = {
                k: v for k, v in found.items() if k != "reply_to_message"
            }
        # Message.reply_markup only ever carries an inline keyboard.
        if markup is not None and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return message

    def _accept(self, call: ApiCall, chat_id: ChatId, message_id: int, **fields: Any) -> None:
        self.sent.append(
            SentMessage(
                chat_id=chat_id,
                message_id=message_id,
                method=call.method,
                at=call.at,
                params=call.params,
                reply_markup=fields.pop("reply_markup", None),
                text=fields.pop("text", None),
                **fields,
            )
        )

    # -- methods --------------------------------------------------------------------------------

    def _get_me(self, call: ApiCall) -> dict[str, Any]:
        return self.me

    def _send_message(self, call: ApiCall) -> dict[str, Any]:
        chat_id = self._require_chat(call)
        text = self._text(call)
        markup = self._markup(call)
        message = self._new_bot_message(chat_id, call, markup)
        message["text"] = text
        entities = call.params.get("entities")
        if entities:
            message["entities"] = entities
        self._store(message)
        self._accept(call, chat_id, message["message_id"], text=text, reply_markup=markup)
        return message

    def _copy_message(self, call: ApiCall) -> dict[str, Any]:
        chat_id = self._require_chat(call)
        from_chat_id = self._require_chat(call, "from_chat_id")
        source_id = self._require(call, "message_id", "Bad Request: message_id is empty")
        markup = self._markup(call)
        source = self._messages.get((self._chat(from_chat_id)["id"], source_id))
        if (self._chat(from_chat_id)["id"], source_id) in self._gone:
            raise _ApiError(400, "Bad Request: message to copy not found")
        message = self._new_bot_message(chat_id, call, markup)
        text = None
        if source is not None:
            for key in ("text", "entities", "contact", "photo", "document"):
                if key in source:
                    message[key] = source[key]
            text = source.get("text")
        caption = call.params.get("caption")
        self._check_caption(caption)
        if caption is not None:
            message["caption"] = caption
        self._store(message)
        self._accept(
            call,
            chat_id,
            message["message_id"],
            text=text,
            reply_markup=markup,
            caption=caption,
            from_chat_id=from_chat_id,
            copied_message_id=source_id,
        )
        return {"message_id": message["message_id"]}

    def _send_file(self, call: ApiCall, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The new message (not stored yet) and the file's ``file_id``/… fields."""
        chat_id = self._require_chat(call)
        value = call.params.get(key)
        file: UploadedFile | str
        if isinstance(value, str) and value.startswith("attach://"):
            upload = call.files.get(value.removeprefix("attach://"))
            if upload is None:
                raise _ApiError(400, f"Bad Request: there is no {key} in the request")
            file = upload
        elif isinstance(value, str) and value:
            file = value
        else:
            raise _ApiError(400, f"Bad Request: there is no {key} in the request")
        caption = call.params.get("caption")
        self._check_caption(caption)
        markup = self._markup(call)
        message = self._new_bot_message(chat_id, call, markup)
        if caption:
            message["caption"] = str(caption)
        unique = f"{key}-{message['chat']['id']}-{message['message_id']}"
        info: dict[str, Any] = {"file_id": f"AgAC{unique}", "file_unique_id": unique}
        if isinstance(file, UploadedFile):
            info["file_size"] = len(file.data)
            if key == "document":
                info["file_name"] = file.filename
                info["mime_type"] = file.content_type
        elif not re.match(r"^https?://", file):
            info["file_id"] = file  # re-sending a known file_id keeps it
        self._accept(
            call, chat_id, message["message_id"], reply_markup=markup, caption=caption, file=file
        )
        return message, info

    def _send_photo(self, call: ApiCall) -> dict[str, Any]:
        message, info = self._send_file(call, "photo")
        small = {**info, "file_unique_id": info["file_unique_id"] + "s", "width": 90, "height": 90}
        message["photo"] = [small, {**info, "width": 800, "height": 600}]
        return self._store(message)

    def _send_document(self, call: ApiCall) -> dict[str, Any]:
        message, info = self._send_file(call, "document")
        message["document"] = info
        return self._store(message)

    def _edit_message_text(self, call: ApiCall) -> dict[str, Any] | bool:
        text = self._text(call)
        markup = self._markup(call)
        if call.params.get("inline_message_id"):
            self.edits.append(
                SentMessage(
                    chat_id="",
                    message_id=0,
                    method=call.method,
                    text=text,
                    reply_markup=markup,
                    at=call.at,
                    params=call.params,
                )
            )
            return True
        chat_id = self._require_chat(call)
        message_id = self._require(
            call, "message_id", "Bad Request: message identifier is not specified"
        )
        key = (self._chat(chat_id)["id"], message_id)
        message = self._messages.get(key)
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.get("from", {}).get("id", self.bot_id) != self.bot_id:
            raise _ApiError(400, "Bad Request: message can't be edited")
        inline = markup if markup is not None and "inline_keyboard" in markup else None
        if message.get("text") == text and message.get("reply_markup") == inline:
            raise _ApiError(400, NOT_MODIFIED)
        edited = {k: v for k, v in message.items() if k not in ("entities", "reply_markup")}
        edited.update(text=text, edit_date=int(time.time()))
        if call.params.get("entities"):
            edited["entities"] = call.params["entities"]
        if inline is not None:
            edited["reply_markup"] = inline
        self._messages[key] = edited
        self.edits.append(
            SentMessage(
                chat_id=chat_id,
                message_id=message_id,
                method=call.method,
                text=text,
                reply_markup=markup,
                at=call.at,
                params=call.params,
            )
        )
        return edited

    def _delete_message(self, call: ApiCall) -> bool:
        chat_id = self._require_chat(call)
        message_id = self._require(
            call, "message_id", "Bad Request: message identifier is not specified"
        )
        key = (self._chat(chat_id)["id"], message_id)
        if key in self._gone:
            raise _ApiError(400, "Bad Request: message to delete not found")
        self._messages.pop(key, None)
        self._gone.add(key)
        self.deleted.append((chat_id, message_id))
        return True

    def _answer_callback_query(self, call: ApiCall) -> bool:
        self._require(
            call,
            "callback_query_id",
            "Bad Request: query is too old and response timeout expired or query ID is invalid",
        )
        return True

    def _send_chat_action(self, call: ApiCall) -> bool:
        self._require_chat(call)
        self._require(call, "action", "Bad Request: action is empty")
        return True

    def _set_webhook(self, call: ApiCall) -> bool:
        url = call.params.get("url") or ""
        if not url:
            self.webhook = WebhookState(
                drop_pending_updates=call.params.get("drop_pending_updates")
            )
            self._drop_pending(call)
            return True
        if self.require_https_webhook:
            parts = urlsplit(str(url))
            if parts.scheme != "https":
                raise _ApiError(
                    400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                )
            if (parts.port or 443) not in WEBHOOK_PORTS:
                raise _ApiError(
                    400,
                    "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
                )
        secret = call.params.get("secret_token")
        if secret is not None and not SECRET_TOKEN.match(str(secret)):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        allowed = call.params.get("allowed_updates")
        if allowed is not None and not (
            isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)
        ):
            raise _ApiError(400, "Bad Request: can't parse allowed updates")
        max_connections = call.params.get("max_connections")
        if max_connections is not None and not (
            isinstance(max_connections, int) and 1 <= max_connections <= 100
        ):
            raise _ApiError(400, "Bad Request: bad webhook: max_connections must be 1-100")
        self.webhook = WebhookState(
            url=str(url),
            secret_token=None if secret is None else str(secret),
            allowed_updates=allowed,
            max_connections=max_connections,
            ip_address=call.params.get("ip_address"),
            drop_pending_updates=call.params.get("drop_pending_updates"),
        )
        if allowed is not None:
            self._allowed_updates = list(allowed)
        self._drop_pending(call)
        return True

    def _delete_webhook(self, call: ApiCall) -> bool:
        self.webhook = WebhookState(drop_pending_updates=call.params.get("drop_pending_updates"))
        self._drop_pending(call)
        return True

    def _drop_pending(self, call: ApiCall) -> None:
        if call.params.get("drop_pending_updates") is True:
            self._updates.clear()

    async def _get_updates(self, call: ApiCall) -> list[dict[str, Any]]:
        if self.webhook.url:
            raise _ApiError(409, WEBHOOK_ACTIVE)
        offset, limit, timeout = (call.params.get(k) for k in ("offset", "limit", "timeout"))
        for key, value in (("offset", offset), ("limit", limit), ("timeout", timeout)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _ApiError(400, f"Bad Request: {key} must be an integer")
        allowed = call.params.get("allowed_updates")
        if allowed is not None:
            if not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
                raise _ApiError(400, "Bad Request: can't parse allowed updates")
            self._allowed_updates = list(allowed)
        if offset is not None and offset < 0:
            # The last -offset updates; all the earlier ones are forgotten.
            while len(self._updates) > -offset:
                self._updates.popleft()
        elif offset:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        limit = MAX_UPDATES if limit is None else min(max(limit, 1), MAX_UPDATES)
        # A newer getUpdates ends this one (and this one ends any older one still held).
        self._poll_generation += 1
        mine = self._poll_generation
        self._wake_pollers()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout or 0, 0)
        while not self._updates and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._updates_changed.wait(), remaining)
            if mine != self._poll_generation:
                raise _ApiError(409, POLL_TERMINATED)
        return [dict(update) for update in list(self._updates)[:limit]]

    def _get_webhook_info(self, call: ApiCall) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook.url:
            info["max_connections"] = self.webhook.max_connections or 40
            if self.webhook.ip_address:
                info["ip_address"] = self.webhook.ip_address
            if self.webhook.allowed_updates is not None:
                info["allowed_updates"] = self.webhook.allowed_updates
        return info

    @staticmethod
    def _commands_key(call: ApiCall) -> tuple[str, str]:
        scope = call.params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(call.params.get("language_code") or "")

    def _set_my_commands(self, call: ApiCall) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not COMMAND.match(str(command.get("command"))):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise _ApiError(400, "Bad Request: command description is invalid")
        self.commands[self._commands_key(call)] = commands
        return True

    def _get_my_commands(self, call: ApiCall) -> list[dict[str, Any]]:
        return self.commands.get(self._commands_key(call), [])

    def _delete_my_commands(self, call: ApiCall) -> bool:
        self.commands.pop(self._commands_key(call), None)
        return True
