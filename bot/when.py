"""Times for ``/remind <when> <text>`` and ``/broadcast_at <when> <text>``, in English and Chinese.

``parse_when`` reads the longest time expression at the start of a command's argument and
returns the moment in UTC plus the rest of the message. Wall-clock forms (``tomorrow 9:00``,
``明天上午9点``, ``2026-12-01 18:00``) are read in the person's time zone; durations (``10m``,
``2小时30分``) are exact elapsed time from ``now``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

#: How far ahead a time may be.
MAX_AHEAD = timedelta(days=366)

Reason = Literal[
    "unreadable", "no_clock", "past", "too_far", "not_positive", "bad_date", "bad_time", "bad_zone"
]


@dataclass(frozen=True, slots=True)
class Parsed:
    """A time read from a command and the message after it."""

    at: datetime  # aware, UTC
    text: str  # the rest of the message, stripped; may be empty


def _lang(lang: str) -> Literal["en", "zh"]:
    return "zh" if lang.strip().lower().startswith("zh") else "en"


_REASONS: dict[Reason, dict[str, str]] = {
    "unreadable": {"en": "I could not read a time in that.", "zh": "无法识别其中的时间。"},
    "no_clock": {
        "en": "Please add a time of day, like tomorrow 9:00.",
        "zh": "请加上具体时刻，例如 明天 9:00。",
    },
    "past": {"en": "{when} has already passed.", "zh": "{when}已经过去了。"},
    "too_far": {"en": "{when} is more than a year ahead.", "zh": "{when}距今超过一年。"},
    "not_positive": {
        "en": "The delay must be longer than zero.",
        "zh": "时长必须大于零。",
    },
    "bad_date": {"en": "There is no such date.", "zh": "没有这个日期。"},
    "bad_time": {"en": "There is no such time of day.", "zh": "没有这个时刻。"},
    "bad_zone": {"en": "I do not know that time zone.", "zh": "无法识别该时区。"},
}
_TRY = {"en": "Try:", "zh": "可以这样写："}
_ZONE_EXAMPLES = {
    "en": "Europe/Berlin, America/New_York, Asia/Shanghai, UTC+8",
    "zh": "Asia/Shanghai、Europe/Berlin、America/New_York、UTC+8、北京",
}
# Sample messages per command, so each command's error shows its own kind of use.
_SAMPLES: dict[str, dict[str, tuple[str, str, str]]] = {
    "remind": {
        "en": ("take the cake out", "call Anna", "pay the rent"),
        "zh": ("把蛋糕拿出来", "给安娜打电话", "交房租"),
    },
    "broadcast_at": {
        "en": (
            "We restart in 10 minutes",
            "Good morning!",
            "The sale starts now",
        ),
        "zh": ("系统将在 10 分钟后重启", "早上好！", "促销现在开始"),
    },
}


class WhenError(ValueError):
    """Why the input is not a time, with an example of the right form (message per language)."""

    def __init__(
        self,
        reason: Reason,
        *,
        command: str = "remind",
        lang: str = "en",
        at: datetime | None = None,
        tz: ZoneInfo | None = None,
        now: datetime | None = None,
    ) -> None:
        self.reason: Reason = reason
        self.command = command
        self.at = at
        self.tz = tz
        self.now = now
        super().__init__(self.message(lang))

    def message(self, lang: str) -> str:
        """A short reason and examples of the right form, in ``lang`` (``en`` or ``zh``)."""
        lang = _lang(lang)
        when = {"en": "That time", "zh": "该时间"}[lang]
        if self.at is not None and self.tz is not None:
            when = describe(self.at, self.tz, lang, now=self.now)
        reason = _REASONS[self.reason][lang].format(when=when)
        space = " " if lang == "en" else ""  # Chinese sentences run on without spaces
        if self.reason == "bad_zone":
            return f"{reason}{space}{_TRY[lang]}{space}{_ZONE_EXAMPLES[lang]}"
        return f"{reason}{space}{_TRY[lang]}\n" + "\n".join(self._examples(lang))

    def _examples(self, lang: Literal["en", "zh"]) -> list[str]:
        samples = _SAMPLES.get(self.command, {"en": ("…",) * 3, "zh": ("…",) * 3})[lang]
        # A date a month or two ahead, so the example is never in the past.
        today = (self.now or datetime.now(UTC)).date()
        day = (today + timedelta(days=45)).replace(day=1).isoformat()
        forms = ("10m", "tomorrow 9:00") if lang == "en" else ("10分钟", "明天 9:00")
        return [
            f"/{self.command} {forms[0]} {samples[0]}",
            f"/{self.command} {forms[1]} {samples[1]}",
            f"/{self.command} {day} 18:00 {samples[2]}",
        ]


# --- Describing times ---------------------------------------------------------------------

_WEEKDAYS_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def zone_label(tz: ZoneInfo) -> str:
    """The zone's name as people read it: ``Europe/Berlin``, ``UTC``, ``UTC+8`` (not ``Etc/GMT-8``)."""
    key = tz.key or ""
    if key in {"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Etc/Zulu", "Zulu", "Etc/UCT", "UCT"}:
        return "UTC"
    if m := re.fullmatch(r"Etc/GMT([+-])(\d+)", key):
        # POSIX-style Etc names count west as positive: Etc/GMT-8 is UTC+8.
        return f"UTC{'-' if m[1] == '+' else '+'}{int(m[2])}"
    return key or str(tz)


def describe(at: datetime, tz: ZoneInfo, lang: str, *, now: datetime | None = None) -> str:
    """``at`` as the person's wall clock: ``Tue 1 Dec 18:00 (Europe/Berlin)`` / ``12月1日 周二 18:00（Asia/Shanghai）``.

    With ``now``, the year is shown when it differs from the current one.
    """
    if at.tzinfo is None:
        raise ValueError("describe() needs an aware datetime")
    local = at.astimezone(tz)
    show_year = now is not None and now.astimezone(tz).year != local.year
    clock = f"{local.hour:02d}:{local.minute:02d}"
    label = zone_label(tz)
    if _lang(lang) == "zh":
        year = f"{local.year}年" if show_year else ""
        return (
            f"{year}{local.month}月{local.day}日 {_WEEKDAYS_ZH[local.weekday()]} {clock}（{label}）"
        )
    year = f" {local.year}" if show_year else ""
    weekday, month = _WEEKDAYS_EN[local.weekday()], _MONTHS_EN[local.month - 1]
    return f"{weekday} {local.day} {month}{year} {clock} ({label})"


# --- Time zones ---------------------------------------------------------------------------

# Offsets that are not whole hours have no Etc/ zone; these zones keep them all year.
_ODD_OFFSETS = {
    -570: "Pacific/Marquesas",
    210: "Asia/Tehran",
    270: "Asia/Kabul",
    330: "Asia/Kolkata",
    345: "Asia/Kathmandu",
    390: "Asia/Yangon",
    525: "Australia/Eucla",
    570: "Australia/Darwin",
}
_ALIASES = {
    "beijing": "Asia/Shanghai",
    "china": "Asia/Shanghai",
    "北京": "Asia/Shanghai",
    "上海": "Asia/Shanghai",
    "中国": "Asia/Shanghai",
    "北京时间": "Asia/Shanghai",
    "香港": "Asia/Hong_Kong",
    "台北": "Asia/Taipei",
    "东京": "Asia/Tokyo",
    "首尔": "Asia/Seoul",
    "新加坡": "Asia/Singapore",
    "伦敦": "Europe/London",
    "巴黎": "Europe/Paris",
    "柏林": "Europe/Berlin",
    "莫斯科": "Europe/Moscow",
    "纽约": "America/New_York",
    "洛杉矶": "America/Los_Angeles",
    "悉尼": "Australia/Sydney",
    "india": "Asia/Kolkata",
}
_OFFSET = re.compile(r"(?:utc|gmt)?\s*([+\-\u2212])\s*([0-9]{1,2})(?::?([0-9]{2}))?", re.IGNORECASE)
# Full-width digits, colon and space as typed on Chinese keyboards; one char for one char,
# so positions in the translated text are positions in the original.
_WIDE = str.maketrans({0xFF10 + i: str(i) for i in range(10)} | {0xFF1A: ":", 0x3000: " "})


@cache
def _zone_names() -> tuple[dict[str, str], dict[str, str]]:
    """IANA keys by case-folded key, and by case-folded city (``new york`` → America/New_York)."""
    keys = sorted(available_timezones(), key=lambda k: (k.count("/"), k))
    by_key = {k.casefold(): k for k in keys}
    by_city: dict[str, str] = {}
    for k in reversed(keys):  # the shortest, alphabetically first key wins a shared city
        if "/" in k:
            by_city[k.rsplit("/", 1)[1].replace("_", " ").casefold()] = k
    return by_key, by_city


def parse_timezone(name: str) -> ZoneInfo:
    """A zone from an IANA name, a UTC offset (``+8``, ``UTC+08:00``, ``GMT-5``) or a city.

    Whole-hour offsets become ``Etc/GMT∓N`` zones (no daylight saving); a few half-hour
    offsets map to a zone that keeps them all year. Raises :class:`WhenError` (``bad_zone``).
    """
    text = " ".join(name.translate(_WIDE).split())
    if not text:
        raise WhenError("bad_zone")
    if text.casefold() in {"utc", "gmt", "z", "utc0", "gmt0"}:
        return ZoneInfo("UTC")
    if m := _OFFSET.fullmatch(text):
        if int(m[3] or 0) > 59:
            raise WhenError("bad_zone")
        minutes = int(m[2]) * 60 + int(m[3] or 0)
        minutes = -minutes if m[1] != "+" else minutes
        if minutes == 0:
            return ZoneInfo("UTC")
        if minutes % 60 == 0 and -12 * 60 <= minutes <= 14 * 60:
            return ZoneInfo(f"Etc/GMT{-minutes // 60:+d}")
        if minutes in _ODD_OFFSETS:
            return ZoneInfo(_ODD_OFFSETS[minutes])
        raise WhenError("bad_zone")
    by_key, by_city = _zone_names()
    folded = text.casefold()
    key = (
        _ALIASES.get(folded)
        or by_key.get(folded.replace(" ", "_"))
        or by_city.get(folded.replace("_", " "))
    )
    if key is None:
        raise WhenError("bad_zone")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # pragma: no cover - tz db gone
        raise WhenError("bad_zone") from exc


# --- Grammar ------------------------------------------------------------------------------

_CN = "零\u3007一二两三四五六七八九十"
_INT = rf"(?:[0-9]{{1,2}}|[{_CN}]{{1,3}})"  # an hour, minute, day or month
# After the expression: anything but a letter or digit glued to a Latin/digit end (so "10mx"
# is not "10m"), while Chinese needs no space ("明天9点开会").
_END = r"(?:(?<![0-9A-Za-z])|(?![0-9A-Za-z]))"

_UNITS: dict[str, int] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds", "秒", "秒钟"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes", "分钟", "分"), 60),
    **dict.fromkeys(("刻钟",), 900),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours", "小时", "钟头"), 3600),
    **dict.fromkeys(("d", "day", "days", "天"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks", "周", "星期", "礼拜"), 604800),
}
# Longest first so "minutes" is not read as "m" + "inutes".
_UNIT = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_WORD_UNIT = "seconds?|minutes?|hours?|days?|weeks?"
_COMPONENT = (
    rf"(?:(?P<num>[0-9]+(?:\.[0-9]+)?|[{_CN}]{{1,3}})\s*(?:个\s*)?(?P<half1>半\s*)?(?:个\s*)?"
    rf"(?P<unit>{_UNIT})(?![a-z])(?P<half2>半)?"
    rf"|(?P<half3>半)\s*(?:个\s*)?(?P<unit3>小时|钟头|分钟)"
    rf"|(?P<half4>half\s+)?an?\s+(?P<unit4>{_WORD_UNIT})(?![a-z]))"
)
_COMPONENT_RE = re.compile(_COMPONENT, re.IGNORECASE)
_PLAIN_COMPONENT = re.sub(r"\(\?P<\w+>", "(?:", _COMPONENT)
_DURATION = re.compile(
    rf"(?P<sign>-\s*)?(?:in\s+|再?过\s*)?"
    rf"(?P<parts>{_PLAIN_COMPONENT}(?:\s*(?:,\s*|and\s+)?{_PLAIN_COMPONENT})*)"
    rf"(?:\s+from\s+now|\s*(?:以后|之后|后))?{_END}",
    re.IGNORECASE,
)

_PERIOD = r"(?P<period>凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里)"
_CLOCK_CORE = (
    rf"(?:(?P<zh_h>{_INT})\s*(?:点钟?|时)"
    # Minutes stick to 点 ("9点30"), so "9点 3个文件" stays 9:00.
    rf"(?:(?P<zh_half>半)|(?P<zh_q>[一三])刻|整|零?(?P<zh_m>{_INT})分?)?"
    r"|(?P<c_h>[0-9]{1,2}):(?P<c_m>[0-9]{2})(?::(?P<c_s>[0-9]{2}))?(?:\s*(?P<c_ap>[ap])\.?m\.?)?"
    r"|(?P<a_h>[0-9]{1,2})\s*(?P<a_ap>[ap])\.?m\.?"
    r"|(?P<noon>noon|midday)"
    r"|(?P<l_h>[0-9]{1,2}))"
)
_CLOCK = rf"(?:{_PERIOD}\s*)?{_CLOCK_CORE}"
_DAYS = {
    "day after tomorrow": (2, None),
    "tomorrow": (1, None),
    "tmrw": (1, None),
    "tmr": (1, None),
    "tonight": (0, "晚上"),
    "today": (0, None),
    "大后天": (3, None),
    "后天": (2, None),
    "明天": (1, None),
    "明日": (1, None),
    "今天": (0, None),
    "今日": (0, None),
    "今晚": (0, "晚上"),
    "明晚": (1, "晚上"),
    "今早": (0, "早上"),
    "明早": (1, "早上"),
}
_DAY = "|".join(re.escape(d).replace(r"\ ", r"\s+") for d in _DAYS)
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
)
_WEEKDAY = "monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun"
_AT = r"(?:at\s+)?"

_DAY_FORM = re.compile(rf"(?P<day>{_DAY})\s*{_AT}{_CLOCK}{_END}", re.IGNORECASE)
_BARE_FORM = re.compile(rf"(?:(?P<at>at)\s+)?{_CLOCK}{_END}", re.IGNORECASE)
_ISO_FORM = re.compile(
    rf"(?P<y>[0-9]{{4}})(?P<sep>[-/.])(?P<mo>[0-9]{{1,2}})(?P=sep)(?P<d>[0-9]{{1,2}})"
    rf"(?:\s*T\s*|\s+{_AT}){_CLOCK}(?P<off>Z|[+-][0-9]{{2}}(?::?[0-9]{{2}})?)?{_END}",
    re.IGNORECASE,
)
_MD_FORM = re.compile(
    rf"(?P<mo>[0-9]{{1,2}})[-/](?P<d>[0-9]{{1,2}})(?:\s*T\s*|\s+{_AT}){_CLOCK}{_END}",
    re.IGNORECASE,
)
_ZH_DATE_FORM = re.compile(
    rf"(?:(?P<y>[0-9]{{4}})\s*年\s*)?(?P<mo>{_INT})\s*月\s*(?P<d>{_INT})\s*[日号號]\s*{_AT}{_CLOCK}{_END}",
    re.IGNORECASE,
)
_EN_DATE_FORM = re.compile(
    rf"(?:(?:{_WEEKDAY})\.?,?\s+)?"
    rf"(?:(?P<d>[0-9]{{1,2}})(?:st|nd|rd|th)?\s+(?P<mon>{_MONTHS})\.?"
    rf"|(?P<mon2>{_MONTHS})\.?\s+(?P<d2>[0-9]{{1,2}})(?:st|nd|rd|th)?)"
    rf"(?:,?\s+(?P<y>[0-9]{{4}}))?,?\s+{_AT}{_CLOCK}{_END}",
    re.IGNORECASE,
)
# A day or a date with no time of day after it, to say what is missing.
_NO_CLOCK = re.compile(
    rf"(?:{_DAY}|[0-9]{{4}}[-/.][0-9]{{1,2}}[-/.][0-9]{{1,2}}|[0-9]{{1,2}}[-/][0-9]{{1,2}}"
    rf"|(?:[0-9]{{4}}\s*年\s*)?{_INT}\s*月\s*{_INT}\s*[日号號])"
    rf"(?:\s*(?:{_PERIOD}))?{_END}",
    re.IGNORECASE,
)
# Separators people put between the time and the message.
_LEAD = re.compile(r"(?:[\s,，:：;；、]|[-\u2013\u2014](?=\s))+")


def _int(s: str) -> int | None:
    """An integer in Arabic digits or Chinese numerals up to 99 (``十五``, ``二十``, ``零五``)."""
    if s.isascii():
        return int(s) if s.isdigit() else None
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"\u3007": 0, "两": 2}
    s = s.lstrip("零\u3007") or "零"
    if "十" in s:
        tens, _, ones = s.partition("十")
        if len(tens) > 1 or len(ones) > 1 or (tens and tens not in digits):
            return None
        if ones and ones not in digits:
            return None
        return (digits[tens] if tens else 1) * 10 + (digits[ones] if ones else 0)
    return digits.get(s) if len(s) == 1 else None


@dataclass(frozen=True, slots=True)
class _Context:
    now: datetime  # UTC
    local: datetime  # now on the person's wall clock
    tz: ZoneInfo
    command: str
    lang: str

    def error(self, reason: Reason, at: datetime | None = None) -> WhenError:
        return WhenError(
            reason, command=self.command, lang=self.lang, at=at, tz=self.tz, now=self.now
        )

    def wall(self, day: date, hour: int, minute: int, second: int = 0) -> datetime:
        """The UTC moment of a wall-clock time on ``day`` in the person's zone."""
        naive = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=self.tz)
        # fold=0: an ambiguous (fall-back) time is its first occurrence, and a nonexistent
        # (spring-forward) time is read with the offset before the gap, which lands it the
        # gap's length later (02:30 → 03:30).
        first = naive.replace(fold=0).astimezone(UTC)
        second_pass = naive.replace(fold=1).astimezone(UTC)
        # Between the two passes of an ambiguous time, the second one is the one still ahead.
        return second_pass if first <= self.now < second_pass else first

    def check(self, at: datetime) -> datetime:
        if at <= self.now:
            raise self.error("past", at)
        if at - self.now > MAX_AHEAD:
            raise self.error("too_far", at)
        return at


@dataclass(frozen=True, slots=True)
class _Clock:
    hour: int
    minute: int
    second: int
    day_offset: int  # 1 for "midnight at the end of the day" (晚上12点)
    loose: bool  # a bare number ("tomorrow 9"), only trusted after English words


def _clock(m: re.Match[str], ctx: _Context, implied: str | None = None) -> _Clock:
    """The time of day in ``m``'s clock groups, with 上午/下午/am/pm applied."""
    hour: int | None
    minute: int | None
    second, ampm, loose = 0, None, False
    if m["zh_h"] is not None:
        hour, minute = _int(m["zh_h"]), _zh_minute(m)
    elif m["c_h"] is not None:
        hour, minute, second = int(m["c_h"]), int(m["c_m"]), int(m["c_s"] or 0)
        ampm = m["c_ap"]
    elif m["a_h"] is not None:
        hour, minute, ampm = int(m["a_h"]), 0, m["a_ap"]
    elif m["noon"] is not None:
        hour, minute = 12, 0
    else:
        hour, minute, loose = int(m["l_h"]), 0, True
    if hour is None or minute is None or minute > 59 or second > 59:
        raise ctx.error("bad_time")
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise ctx.error("bad_time")
        hour, day_offset = hour % 12 + (12 if ampm.lower() == "p" else 0), 0
    else:
        hour, day_offset = _in_period(hour, m["period"] or implied)
    if hour > 23:
        raise ctx.error("bad_time")
    return _Clock(hour, minute, second, day_offset, loose)


def _zh_minute(m: re.Match[str]) -> int | None:
    """The minutes after 点: 半, 一刻/三刻, a number, or none."""
    if m["zh_half"]:
        return 30
    if m["zh_q"]:
        return 15 if m["zh_q"] == "一" else 45
    return _int(m["zh_m"]) if m["zh_m"] is not None else 0


def _in_period(hour: int, period: str | None) -> tuple[int, int]:
    """The 24-hour hour and day offset of ``hour`` said with 下午, 晚上, etc."""
    if period in {"傍晚", "晚上", "夜里"} and hour <= 12:
        # 晚上12点 is the midnight that ends the day.
        return (0, 1) if hour == 12 else (hour + 12, 0)
    # 中午1点 is 13:00, while 中午11点/12点 stay.
    if (period == "下午" and hour < 12) or (period == "中午" and hour <= 3):
        return hour + 12, 0
    if period == "凌晨" and hour == 12:
        return 0, 0
    return hour, 0


def _duration(m: re.Match[str], ctx: _Context) -> datetime | None:
    seconds = Decimal(0)
    for part in _COMPONENT_RE.finditer(m["parts"]):
        if part["unit"] is not None:
            raw = part["num"]
            if raw.isascii() and len(raw.split(".")[0]) > 9:
                raise ctx.error("too_far")  # before Decimal arithmetic on absurd numbers
            value = Decimal(raw) if raw.isascii() else _int(raw)
            if value is None:
                return None  # not a Chinese number after all
            number = Decimal(value)
            if part["half1"] or part["half2"]:
                number += Decimal("0.5")
            seconds += number * _UNITS[part["unit"].lower()]
        elif part["unit3"] is not None:
            seconds += Decimal("0.5") * _UNITS[part["unit3"]]
        else:
            number = Decimal("0.5") if part["half4"] else Decimal(1)
            seconds += number * _UNITS[part["unit4"].lower()]
    if m["sign"] or seconds <= 0:
        raise ctx.error("not_positive")
    if seconds > Decimal(MAX_AHEAD.total_seconds()):
        # Name the moment when it is still a date (a few years), not for "99999999d".
        near = seconds < 100 * 366 * 86400
        at = ctx.now + timedelta(seconds=int(seconds)) if near else None
        raise ctx.error("too_far", at)
    return ctx.now + timedelta(microseconds=int(seconds * 1_000_000))


def _day_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    word = " ".join(m["day"].lower().split())
    offset, implied = _DAYS[word]
    clock = _clock(m, ctx, implied)
    if clock.loose and not word.isascii():
        return None  # "今天3个人" is not 03:00
    day = ctx.local.date() + timedelta(days=offset + clock.day_offset)
    return ctx.check(ctx.wall(day, clock.hour, clock.minute, clock.second))


def _bare_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    clock = _clock(m, ctx)
    if clock.loose and not m["at"]:
        return None  # "/remind 5 things" has no time in it
    day = ctx.local.date() + timedelta(days=clock.day_offset)
    at = ctx.wall(day, clock.hour, clock.minute, clock.second)
    if at <= ctx.now:  # already gone today: the next one
        at = ctx.wall(day + timedelta(days=1), clock.hour, clock.minute, clock.second)
    return ctx.check(at)


def _on_date(
    ctx: _Context, m: re.Match[str], year: int | None, month: int | None, day: int | None
) -> datetime | None:
    """The moment on an explicit date; without a year, the next such date."""
    clock = _clock(m, ctx)
    if clock.loose:
        return None
    if month is None or day is None:
        raise ctx.error("bad_date")
    years = [year] if year is not None else [ctx.local.year, ctx.local.year + 1]
    valid = False
    for y in years:
        try:
            when = date(y, month, day) + timedelta(days=clock.day_offset)
        except ValueError:
            continue
        valid = True
        offset = m.groupdict().get("off")
        if offset:
            # An explicit offset (ISO 8601) wins over the person's zone.
            iso = f"{when.isoformat()}T{clock.hour:02d}:{clock.minute:02d}:{clock.second:02d}"
            at = datetime.fromisoformat(iso + ("+00:00" if offset.upper() == "Z" else offset))
            at = at.astimezone(UTC)
        else:
            at = ctx.wall(when, clock.hour, clock.minute, clock.second)
        if year is None and at <= ctx.now:
            continue
        return ctx.check(at)
    if not valid:
        raise ctx.error("bad_date")
    return None  # pragma: no cover - next year's date is always ahead


def _iso_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    return _on_date(ctx, m, int(m["y"]), int(m["mo"]), int(m["d"]))


def _md_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    return _on_date(ctx, m, None, int(m["mo"]), int(m["d"]))


def _zh_date_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    year = int(m["y"]) if m["y"] else None
    return _on_date(ctx, m, year, _int(m["mo"]), _int(m["d"]))


def _en_date_form(m: re.Match[str], ctx: _Context) -> datetime | None:
    name = (m["mon"] or m["mon2"]).lower()[:3]
    month = [mon.lower() for mon in _MONTHS_EN].index(name) + 1
    year = int(m["y"]) if m["y"] else None
    return _on_date(ctx, m, year, month, int(m["d"] or m["d2"]))


_FORMS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], _Context], datetime | None]], ...] = (
    (_ISO_FORM, _iso_form),
    (_ZH_DATE_FORM, _zh_date_form),
    (_EN_DATE_FORM, _en_date_form),
    (_MD_FORM, _md_form),
    (_DAY_FORM, _day_form),
    (_DURATION, _duration),
    (_BARE_FORM, _bare_form),
)


def parse_when(
    text: str, now: datetime, tz: ZoneInfo, lang: str = "en", *, command: str = "remind"
) -> Parsed:
    """Read ``<when> <text>`` from a command's argument.

    ``now`` must be aware; ``tz`` is the person's zone, used for wall-clock forms. The
    longest time expression at the start wins; the rest (stripped) is the message. Raises
    :class:`WhenError` for unreadable, past, too distant or non-positive times; its
    ``message(lang)`` shows examples for ``/command``.
    """
    if now.tzinfo is None:
        raise ValueError("parse_when() needs an aware 'now'")
    now_utc = now.astimezone(UTC)
    ctx = _Context(now_utc, now_utc.astimezone(tz), tz, command, lang)
    source = text.strip()
    wide = source.translate(_WIDE)
    matches = [(m, build, i) for i, (form, build) in enumerate(_FORMS) if (m := form.match(wide))]
    matches.sort(key=lambda item: (-item[0].end(), item[2]))
    for m, build, _ in matches:
        at = build(m, ctx)
        if at is not None:
            rest = source[m.end() :]
            lead = _LEAD.match(rest)
            return Parsed(at=at, text=rest[lead.end() if lead else 0 :].strip())
    raise ctx.error("no_clock" if _NO_CLOCK.match(wide) else "unreadable")
