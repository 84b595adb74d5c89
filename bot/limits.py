"""Telegram's size limits, counted the way Telegram counts them.

Telegram measures text in UTF-16 code units (its entity offsets do too), so an emoji outside
the Basic Multilingual Plane counts twice. The bot sends plain text without ``parse_mode``,
so what is counted is exactly what is sent: no markup is removed first.
"""

from __future__ import annotations

#: A message's text, after entities are parsed.
MESSAGE_MAX = 4096
#: A photo's or document's caption.
CAPTION_MAX = 1024
#: An inline button's ``callback_data``, in bytes of UTF-8.
CALLBACK_DATA_MAX_BYTES = 64
_ELLIPSIS = "…"


def telegram_length(text: str) -> int:
    """The length of ``text`` as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def fits_message(text: str) -> bool:
    """Whether ``text`` can be sent as one message."""
    return telegram_length(text) <= MESSAGE_MAX


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` code units, ending in "…" when it was cut."""
    if telegram_length(text) <= limit:
        return text
    kept: list[str] = []
    used = telegram_length(_ELLIPSIS)
    for char in text:
        size = telegram_length(char)
        if used + size > limit:
            break
        kept.append(char)
        used += size
    return "".join(kept).rstrip() + _ELLIPSIS


def pages(header: str, lines: list[str], limit: int = MESSAGE_MAX) -> list[list[str]]:
    """``lines`` grouped into pages that each fit ``limit`` below ``header`` (one per line).

    Each line must fit by itself (callers shorten long items first).
    """
    grouped: list[list[str]] = []
    current: list[str] = []
    used = telegram_length(header)
    for line in lines:
        size = telegram_length(line) + 1  # its newline
        if current and used + size > limit:
            grouped.append(current)
            current, used = [], telegram_length(header)
        current.append(line)
        used += size
    if current:
        grouped.append(current)
    return grouped


def callback_data(value: str) -> str:
    """``value`` as a button's ``callback_data``; ValueError if Telegram would refuse it."""
    if len(value.encode()) > CALLBACK_DATA_MAX_BYTES:
        raise ValueError(f"callback data over {CALLBACK_DATA_MAX_BYTES} bytes")
    return value
