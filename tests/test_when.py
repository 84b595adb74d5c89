"""The /remind and /broadcast_at time parser: every form, in English and Chinese, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.when import MAX_AHEAD, Parsed, WhenError, describe, parse_timezone, parse_when

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC_ZONE = ZoneInfo("UTC")

# Saturday 28 March 2026: Berlin 11:00 CET (the night before it springs forward),
# New York 06:00 EDT, Shanghai 18:00.
NOW = datetime(2026, 3, 28, 10, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def at(text: str, tz: ZoneInfo = BERLIN, now: datetime = NOW) -> datetime:
    return parse_when(text, now, tz).at


# --- Relative durations: exact elapsed time, whatever the zone -----------------------------

DURATIONS = [
    ("10m", timedelta(minutes=10)),
    ("2h30m", timedelta(hours=2, minutes=30)),
    ("2h 30m", timedelta(hours=2, minutes=30)),
    ("1h", timedelta(hours=1)),
    ("45s", timedelta(seconds=45)),
    ("1d", timedelta(days=1)),
    ("1d2h", timedelta(days=1, hours=2)),
    ("90m", timedelta(minutes=90)),
    ("1.5h", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)),
    ("in 10 minutes", timedelta(minutes=10)),
    ("in 2 hours", timedelta(hours=2)),
    ("in 1 hr", timedelta(hours=1)),
    ("3 hrs", timedelta(hours=3)),
    ("5 mins", timedelta(minutes=5)),
    ("1 min", timedelta(minutes=1)),
    ("1 minute", timedelta(minutes=1)),
    ("2 days", timedelta(days=2)),
    ("1 week", timedelta(weeks=1)),
    ("In 2 Hours", timedelta(hours=2)),
    ("in an hour", timedelta(hours=1)),
    ("in half an hour", timedelta(minutes=30)),
    ("a day", timedelta(days=1)),
    ("2 hours and 30 minutes", timedelta(hours=2, minutes=30)),
    ("10 minutes from now", timedelta(minutes=10)),
    ("10分钟", timedelta(minutes=10)),
    ("十分钟", timedelta(minutes=10)),
    ("2小时30分", timedelta(hours=2, minutes=30)),
    ("2小时30分钟", timedelta(hours=2, minutes=30)),
    ("两个小时", timedelta(hours=2)),
    ("半小时", timedelta(minutes=30)),
    ("半个小时后", timedelta(minutes=30)),
    ("一个半小时", timedelta(minutes=90)),
    ("1天", timedelta(days=1)),
    ("3天后", timedelta(days=3)),
    ("两天半", timedelta(days=2, hours=12)),
    ("10分钟后", timedelta(minutes=10)),
    ("过10分钟", timedelta(minutes=10)),
    ("一刻钟后", timedelta(minutes=15)),
    ("30秒", timedelta(seconds=30)),
    ("1周", timedelta(weeks=1)),
    ("\uff12小时", timedelta(hours=2)),  # full-width digits
    ("52w", timedelta(weeks=52)),
]


@pytest.mark.parametrize(("text", "delta"), DURATIONS)
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, SHANGHAI, UTC_ZONE], ids=str)
def test_durations_are_exact_elapsed_time(text: str, delta: timedelta, tz: ZoneInfo) -> None:
    assert parse_when(text, NOW, tz) == Parsed(at=NOW + delta, text="")


def test_a_day_across_spring_forward_is_24_hours_not_the_same_wall_clock() -> None:
    # 11:00 CET + 1d is 12:00 CEST: exact elapsed time, not "tomorrow 11:00".
    assert at("1d") == utc(2026, 3, 29, 10, 0)
    assert at("1d").astimezone(BERLIN).hour == 12


def test_durations_keep_the_precision_of_now() -> None:
    now = datetime(2026, 3, 28, 10, 0, 5, 123456, tzinfo=UTC)
    assert at("10m", now=now) == datetime(2026, 3, 28, 10, 10, 5, 123456, tzinfo=UTC)


def test_now_in_another_zone_is_the_same_instant() -> None:
    assert at("10m", now=NOW.astimezone(SHANGHAI)) == utc(2026, 3, 28, 10, 10)
    assert at("10m", now=NOW.astimezone(SHANGHAI)).tzinfo is UTC


# --- Wall-clock forms ----------------------------------------------------------------------

WALL_CLOCK = [
    # Berlin, now Sat 28 Mar 11:00 CET; Sunday 29 Mar is already CEST (+2).
    (BERLIN, "tomorrow 9:00", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "Tomorrow 9am", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "tomorrow at 9:00", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "tomorrow 9", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "tmrw 9:15", utc(2026, 3, 29, 7, 15)),
    (BERLIN, "tomorrow noon", utc(2026, 3, 29, 10, 0)),
    (BERLIN, "tomorrow 12am", utc(2026, 3, 28, 23, 0)),
    (BERLIN, "tomorrow 12pm", utc(2026, 3, 29, 10, 0)),
    (BERLIN, "today 18:30", utc(2026, 3, 28, 17, 30)),
    (BERLIN, "today 6:30 pm", utc(2026, 3, 28, 17, 30)),
    (BERLIN, "today 6:30 p.m.", utc(2026, 3, 28, 17, 30)),
    (BERLIN, "tonight 8", utc(2026, 3, 28, 19, 0)),
    (BERLIN, "tonight 11pm", utc(2026, 3, 28, 22, 0)),
    (BERLIN, "day after tomorrow 8:00", utc(2026, 3, 30, 6, 0)),
    (BERLIN, "明天 9:00", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "今天 18:30", utc(2026, 3, 28, 17, 30)),
    (BERLIN, "18:00", utc(2026, 3, 28, 17, 0)),  # still ahead today
    (BERLIN, "8:00", utc(2026, 3, 29, 6, 0)),  # gone today: tomorrow, in CEST
    (BERLIN, "at 9", utc(2026, 3, 29, 7, 0)),
    (BERLIN, "18:00:30", utc(2026, 3, 28, 17, 0, 30)),
    (BERLIN, "2026-12-01 18:00", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "2026-12-01T18:00", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "2026/12/01 18:00", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "2026-12-01 at 6pm", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "2026-07-01 18:00", utc(2026, 7, 1, 16, 0)),  # summer time
    (BERLIN, "12-01 18:00", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "Tue 1 Dec 18:00", utc(2026, 12, 1, 17, 0)),  # what describe() prints
    (BERLIN, "1 December 2026 at 18:00", utc(2026, 12, 1, 17, 0)),
    (BERLIN, "Dec 1st, 6pm", utc(2026, 12, 1, 17, 0)),
    # New York, now Sat 28 Mar 06:00 EDT (-4).
    (NEW_YORK, "tomorrow 9am", utc(2026, 3, 29, 13, 0)),
    (NEW_YORK, "6pm", utc(2026, 3, 28, 22, 0)),
    (NEW_YORK, "5:00", utc(2026, 3, 29, 9, 0)),
    (NEW_YORK, "2026-12-01 18:00", utc(2026, 12, 1, 23, 0)),  # EST (-5)
    (NEW_YORK, "12/01 18:00", utc(2026, 12, 1, 23, 0)),
    # Shanghai, now Sat 28 Mar 18:00 (+8).
    (SHANGHAI, "明天上午9点", utc(2026, 3, 29, 1, 0)),
    (SHANGHAI, "明天 上午 9:00", utc(2026, 3, 29, 1, 0)),
    (SHANGHAI, "明天9点半", utc(2026, 3, 29, 1, 30)),
    (SHANGHAI, "明天9点30", utc(2026, 3, 29, 1, 30)),
    (SHANGHAI, "明天9点零5分", utc(2026, 3, 29, 1, 5)),
    (SHANGHAI, "明天九点一刻", utc(2026, 3, 29, 1, 15)),
    (SHANGHAI, "明天下午3点", utc(2026, 3, 29, 7, 0)),
    (SHANGHAI, "明天中午12点", utc(2026, 3, 29, 4, 0)),
    (SHANGHAI, "明天中午1点", utc(2026, 3, 29, 5, 0)),
    (SHANGHAI, "明天凌晨3点", utc(2026, 3, 28, 19, 0)),
    (SHANGHAI, "今天 18:30", utc(2026, 3, 28, 10, 30)),
    (SHANGHAI, "今天晚上9点", utc(2026, 3, 28, 13, 0)),
    (SHANGHAI, "后天 8:00", utc(2026, 3, 30, 0, 0)),
    (SHANGHAI, "大后天8点", utc(2026, 3, 31, 0, 0)),
    (SHANGHAI, "今晚8点", utc(2026, 3, 28, 12, 0)),
    (SHANGHAI, "今晚12点", utc(2026, 3, 28, 16, 0)),  # the midnight that ends today
    (SHANGHAI, "明早8点", utc(2026, 3, 29, 0, 0)),
    (SHANGHAI, "明晚7点", utc(2026, 3, 29, 11, 0)),
    (SHANGHAI, "下午6点", utc(2026, 3, 29, 10, 0)),  # exactly now: the next one
    (SHANGHAI, "19点", utc(2026, 3, 28, 11, 0)),
    (SHANGHAI, "18时30分", utc(2026, 3, 28, 10, 30)),
    (SHANGHAI, "晚上7点", utc(2026, 3, 28, 11, 0)),
    (SHANGHAI, "上午9点", utc(2026, 3, 29, 1, 0)),
    (SHANGHAI, "\uff11\uff18\uff1a\uff13\uff10", utc(2026, 3, 28, 10, 30)),  # full-width
    (SHANGHAI, "2026年12月1日 18:00", utc(2026, 12, 1, 10, 0)),
    (SHANGHAI, "2026年12月1日18点", utc(2026, 12, 1, 10, 0)),
    (SHANGHAI, "12月1日 18点", utc(2026, 12, 1, 10, 0)),
    (SHANGHAI, "12月1号晚上8点", utc(2026, 12, 1, 12, 0)),
    (SHANGHAI, "十二月一日下午六点", utc(2026, 12, 1, 10, 0)),
    (SHANGHAI, "2026-12-01 下午6点", utc(2026, 12, 1, 10, 0)),
    # UTC.
    (UTC_ZONE, "12-01 18:00", utc(2026, 12, 1, 18, 0)),
    (UTC_ZONE, "12/01 18:00", utc(2026, 12, 1, 18, 0)),
    (UTC_ZONE, "01-15 09:00", utc(2027, 1, 15, 9, 0)),  # gone this year: next year's
    (UTC_ZONE, "03-28 09:00", utc(2027, 3, 28, 9, 0)),  # earlier today: a year on
    (UTC_ZONE, "03-28 11:00", utc(2026, 3, 28, 11, 0)),  # later today
    (UTC_ZONE, "1月15日 9点", utc(2027, 1, 15, 9, 0)),
    (UTC_ZONE, "noon", utc(2026, 3, 28, 12, 0)),
    (UTC_ZONE, "9am", utc(2026, 3, 29, 9, 0)),
    # An explicit ISO 8601 offset wins over the person's zone.
    (BERLIN, "2026-12-01T18:00Z", utc(2026, 12, 1, 18, 0)),
    (BERLIN, "2026-12-01T18:00+08:00", utc(2026, 12, 1, 10, 0)),
    (BERLIN, "2026-12-01T18:00:00-0500", utc(2026, 12, 1, 23, 0)),
]


@pytest.mark.parametrize(("tz", "text", "expected"), WALL_CLOCK, ids=str)
def test_wall_clock_forms(tz: ZoneInfo, text: str, expected: datetime) -> None:
    parsed = parse_when(text, NOW, tz)
    assert parsed == Parsed(at=expected, text="")
    assert parsed.at.tzinfo is UTC


# --- Daylight saving -----------------------------------------------------------------------

# Berlin springs forward at 02:00 CET on 29 Mar 2026 (02:00-03:00 does not exist) and
# falls back at 03:00 CEST on 25 Oct 2026 (02:00-03:00 happens twice).
DST = [
    # Nonexistent: shifted forward by the gap, 02:30 → 03:30 CEST.
    (BERLIN, NOW, "2026-03-29 02:30", utc(2026, 3, 29, 1, 30)),
    (BERLIN, NOW, "tomorrow 2:30", utc(2026, 3, 29, 1, 30)),
    (BERLIN, NOW, "明天凌晨2点30", utc(2026, 3, 29, 1, 30)),
    (BERLIN, NOW, "tomorrow 3:00", utc(2026, 3, 29, 1, 0)),
    (BERLIN, NOW, "tomorrow 1:59", utc(2026, 3, 29, 0, 59)),
    # Just after midnight on the change night.
    (BERLIN, utc(2026, 3, 28, 23, 30), "2:30", utc(2026, 3, 29, 1, 30)),
    (BERLIN, utc(2026, 3, 28, 23, 30), "4:00", utc(2026, 3, 29, 2, 0)),
    (BERLIN, utc(2026, 3, 28, 23, 30), "1h", utc(2026, 3, 29, 0, 30)),
    # Ambiguous: the first occurrence (CEST).
    (BERLIN, NOW, "2026-10-25 02:30", utc(2026, 10, 25, 0, 30)),
    (BERLIN, NOW, "10-25 02:30", utc(2026, 10, 25, 0, 30)),
    (BERLIN, NOW, "2026-10-25 03:30", utc(2026, 10, 25, 2, 30)),
    (BERLIN, NOW, "2026-10-26 02:30", utc(2026, 10, 26, 1, 30)),
    # During the first pass at 02:45 CEST, 02:30 is gone but comes again in CET.
    (BERLIN, utc(2026, 10, 25, 0, 45), "2:30", utc(2026, 10, 25, 1, 30)),
    (BERLIN, utc(2026, 10, 25, 0, 45), "today 2:30", utc(2026, 10, 25, 1, 30)),
    (BERLIN, utc(2026, 10, 25, 0, 45), "2:50", utc(2026, 10, 25, 0, 50)),
    (BERLIN, utc(2026, 10, 25, 0, 45), "tomorrow 2:30", utc(2026, 10, 26, 1, 30)),
    (BERLIN, utc(2026, 10, 25, 0, 45), "1h", utc(2026, 10, 25, 1, 45)),
    # The day before the fall back: tomorrow 9:00 is CET.
    (BERLIN, utc(2026, 10, 24, 12, 0), "tomorrow 9:00", utc(2026, 10, 25, 8, 0)),
    (BERLIN, utc(2026, 10, 24, 12, 0), "1d", utc(2026, 10, 25, 12, 0)),
    # New York: springs forward 8 Mar 2026 at 02:00 EST, falls back 1 Nov at 02:00 EDT.
    (NEW_YORK, utc(2026, 3, 1, 12, 0), "2026-03-08 02:30", utc(2026, 3, 8, 7, 30)),
    (NEW_YORK, utc(2026, 3, 7, 17, 0), "tomorrow 9am", utc(2026, 3, 8, 13, 0)),
    (NEW_YORK, NOW, "2026-11-01 01:30", utc(2026, 11, 1, 5, 30)),
]


@pytest.mark.parametrize(("tz", "now", "text", "expected"), DST, ids=str)
def test_daylight_saving(tz: ZoneInfo, now: datetime, text: str, expected: datetime) -> None:
    assert parse_when(text, now, tz).at == expected


# --- Text after the time -------------------------------------------------------------------

TEXTS = [
    ("10m take the cake out", utc(2026, 3, 28, 10, 10), "take the cake out"),
    ("  10m   take the cake out  ", utc(2026, 3, 28, 10, 10), "take the cake out"),
    ("tomorrow 9:00 call Anna", utc(2026, 3, 29, 7, 0), "call Anna"),
    ("tomorrow 9:00: call Anna", utc(2026, 3, 29, 7, 0), "call Anna"),
    ("tomorrow 9 call Anna", utc(2026, 3, 29, 7, 0), "call Anna"),
    ("10m - take it out", utc(2026, 3, 28, 10, 10), "take it out"),
    ("10m, 30 people", utc(2026, 3, 28, 10, 10), "30 people"),
    ("2h 30m 5 things", utc(2026, 3, 28, 12, 30), "5 things"),
    ("1h and then some", utc(2026, 3, 28, 11, 0), "and then some"),
    ("in 2 hours check the oven", utc(2026, 3, 28, 12, 0), "check the oven"),
    ("2026-12-01 18:00 05 items", utc(2026, 12, 1, 17, 0), "05 items"),
    ("10m line one\nline two", utc(2026, 3, 28, 10, 10), "line one\nline two"),
    ("10分钟后喝水", utc(2026, 3, 28, 10, 10), "喝水"),
    ("10分钟 喝水", utc(2026, 3, 28, 10, 10), "喝水"),
    ("半小时后提醒我开会", utc(2026, 3, 28, 10, 30), "提醒我开会"),
    ("明天上午9点开会", utc(2026, 3, 29, 7, 0), "开会"),
    ("明天9点，开会", utc(2026, 3, 29, 7, 0), "开会"),
    ("明天9点 3个文件", utc(2026, 3, 29, 7, 0), "3个文件"),  # minutes stick to 点
    ("明天9点30开会", utc(2026, 3, 29, 7, 30), "开会"),
    ("18：30　开会", utc(2026, 3, 28, 17, 30), "开会"),  # full-width colon and space
    ("10分钟后call Anna", utc(2026, 3, 28, 10, 10), "call Anna"),
    ("今晚8点看球", utc(2026, 3, 28, 19, 0), "看球"),
    ("10m", utc(2026, 3, 28, 10, 10), ""),
]


@pytest.mark.parametrize(("text", "expected", "rest"), TEXTS, ids=str)
def test_text_after_the_time(text: str, expected: datetime, rest: str) -> None:
    assert parse_when(text, NOW, BERLIN) == Parsed(at=expected, text=rest)


def test_longest_time_expression_wins() -> None:
    # "2026-12-01 18:00" is not "2026..." garbage, and "tomorrow 9:30" is not "tomorrow 9".
    assert parse_when("tomorrow 9:30 x", NOW, BERLIN) == Parsed(utc(2026, 3, 29, 7, 30), "x")
    assert parse_when("2h30m x", NOW, BERLIN) == Parsed(utc(2026, 3, 28, 12, 30), "x")
    assert parse_when("10 minutes x", NOW, BERLIN) == Parsed(utc(2026, 3, 28, 10, 10), "x")


# --- Rejections ----------------------------------------------------------------------------

REJECTED = [
    ("", "unreadable"),
    ("   ", "unreadable"),
    ("hello", "unreadable"),
    ("call Anna at 9", "unreadable"),
    ("5 things", "unreadable"),  # a bare number is not a time
    ("10mx", "unreadable"),
    ("10 meters", "unreadable"),
    ("6 apples", "unreadable"),
    ("今天3个人", "no_clock"),
    ("tomorrow call Anna", "no_clock"),
    ("tomorrow", "no_clock"),
    ("明天开会", "no_clock"),
    ("明天上午", "no_clock"),
    ("2026-12-01 call", "no_clock"),
    ("12月1日", "no_clock"),
    ("0m", "not_positive"),
    ("0分钟", "not_positive"),
    ("-5m", "not_positive"),
    ("2026-01-01 10:00", "past"),
    ("2026-03-28 10:59", "past"),  # one minute ago in Berlin
    ("2026-03-28 11:00", "past"),  # exactly now
    ("today 8:00", "past"),
    ("今天 8:00", "past"),
    ("today 6am", "past"),
    ("2027-12-01 10:00", "too_far"),
    ("2027-03-29 12:01", "too_far"),  # 366 days and a minute
    ("367d", "too_far"),
    ("53w", "too_far"),
    ("99999999999999999999m", "too_far"),
    ("2026-02-30 10:00", "bad_date"),
    ("13-01 10:00", "bad_date"),
    ("02-29 10:00", "bad_date"),  # neither 2026 nor 2027 is a leap year
    ("25:00", "bad_time"),
    ("18:60", "bad_time"),
    ("13pm", "bad_time"),
    ("tomorrow 0am", "bad_time"),
    ("明天25点", "bad_time"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED, ids=str)
def test_rejected(text: str, reason: str) -> None:
    with pytest.raises(WhenError) as caught:
        parse_when(text, NOW, BERLIN)
    assert caught.value.reason == reason


def test_a_year_ahead_is_the_limit() -> None:
    assert at("366d") == NOW + MAX_AHEAD
    assert at("2027-03-29 12:00") == NOW + MAX_AHEAD
    with pytest.raises(WhenError):
        at("366d 1s")


def test_unreadable_message_has_examples_in_both_languages() -> None:
    with pytest.raises(WhenError) as caught:
        parse_when("hello", NOW, BERLIN)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.message("en") == (
        "I could not read a time in that. Try:\n"
        "/remind 10m take the cake out\n"
        "/remind tomorrow 9:00 call Anna\n"
        "/remind 2026-05-01 18:00 pay the rent"
    )
    assert error.message("zh") == (
        "无法识别其中的时间。可以这样写：\n"
        "/remind 10分钟 把蛋糕拿出来\n"
        "/remind 明天 9:00 给安娜打电话\n"
        "/remind 2026-05-01 18:00 交房租"
    )
    assert error.message("zh-CN") == error.message("zh")
    assert error.message("de") == error.message("en")


def test_examples_parse_and_are_in_the_future() -> None:
    with pytest.raises(WhenError) as caught:
        parse_when("hello", NOW, BERLIN)
    for lang in ("en", "zh"):
        for line in caught.value.message(lang).splitlines()[1:]:
            argument = line.split(" ", 1)[1]
            assert parse_when(argument, NOW, BERLIN).text


def test_examples_name_the_command() -> None:
    with pytest.raises(WhenError) as caught:
        parse_when("soon", NOW, BERLIN, command="broadcast_at")
    for lang in ("en", "zh"):
        examples = caught.value.message(lang).splitlines()[1:]
        assert len(examples) == 3
        assert all(line.startswith("/broadcast_at ") for line in examples)
        assert "/remind" not in caught.value.message(lang)
    assert caught.value.message("en").splitlines()[1] == (
        "/broadcast_at 10m We restart in 10 minutes"
    )
    assert caught.value.message("zh").splitlines()[2] == "/broadcast_at 明天 9:00 早上好！"


def test_str_of_the_error_is_in_the_callers_language() -> None:
    with pytest.raises(WhenError, match="无法识别其中的时间"):
        parse_when("hello", NOW, BERLIN, "zh")
    with pytest.raises(WhenError, match="I could not read a time"):
        parse_when("hello", NOW, BERLIN)


REASON_MESSAGES = [
    (
        "2026-01-01 10:00",
        "Thu 1 Jan 10:00 (Europe/Berlin) has already passed.",
        "1月1日 周四 10:00（Europe/Berlin）已经过去了。",
    ),
    (
        "2027-12-01 10:00",
        "Wed 1 Dec 2027 10:00 (Europe/Berlin) is more than a year ahead.",
        "2027年12月1日 周三 10:00（Europe/Berlin）距今超过一年。",
    ),
    ("99999999999999999999m", "That time is more than a year ahead.", "该时间距今超过一年。"),
    ("0m", "The delay must be longer than zero.", "时长必须大于零。"),
    (
        "tomorrow call",
        "Please add a time of day, like tomorrow 9:00.",
        "请加上具体时刻，例如 明天 9:00。",
    ),
    ("2026-02-30 10:00", "There is no such date.", "没有这个日期。"),
    ("25:00", "There is no such time of day.", "没有这个时刻。"),
]


@pytest.mark.parametrize(("text", "en", "zh"), REASON_MESSAGES, ids=str)
def test_reason_messages(text: str, en: str, zh: str) -> None:
    with pytest.raises(WhenError) as caught:
        parse_when(text, NOW, BERLIN)
    english, chinese = caught.value.message("en"), caught.value.message("zh")
    assert english.startswith(f"{en} Try:\n/remind 10m ")
    assert chinese.startswith(f"{zh}可以这样写：\n/remind 10分钟 ")
    assert len(english.splitlines()) == len(chinese.splitlines()) == 4


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware") as caught:
        parse_when("10m", datetime(2026, 3, 28, 10, 0), BERLIN)
    assert not isinstance(caught.value, WhenError)


# --- Time zones ----------------------------------------------------------------------------

ZONES = [
    ("Europe/Berlin", "Europe/Berlin"),
    ("europe/berlin", "Europe/Berlin"),
    ("  America/New_York ", "America/New_York"),
    ("America/New York", "America/New_York"),
    ("new york", "America/New_York"),
    ("Berlin", "Europe/Berlin"),
    ("Tokyo", "Asia/Tokyo"),
    ("Asia/Shanghai", "Asia/Shanghai"),
    ("Beijing", "Asia/Shanghai"),
    ("北京", "Asia/Shanghai"),
    ("上海", "Asia/Shanghai"),
    ("UTC", "UTC"),
    ("utc", "UTC"),
    ("GMT", "UTC"),
    ("Z", "UTC"),
    ("+0", "UTC"),
    ("UTC+0", "UTC"),
    ("+8", "Etc/GMT-8"),
    ("+08", "Etc/GMT-8"),
    ("+0800", "Etc/GMT-8"),
    ("UTC+8", "Etc/GMT-8"),
    ("UTC+08:00", "Etc/GMT-8"),
    ("utc +8", "Etc/GMT-8"),
    ("GMT-5", "Etc/GMT+5"),
    ("-05:00", "Etc/GMT+5"),
    ("\u22125", "Etc/GMT+5"),  # a typographic minus
    ("UTC+14", "Etc/GMT-14"),
    ("UTC-12", "Etc/GMT+12"),
    ("UTC+5:30", "Asia/Kolkata"),
    ("+05:45", "Asia/Kathmandu"),
]


@pytest.mark.parametrize(("name", "key"), ZONES, ids=str)
def test_parse_timezone(name: str, key: str) -> None:
    assert parse_timezone(name).key == key


def test_offset_zones_have_fixed_offsets() -> None:
    winter, summer = utc(2026, 1, 15, 12, 0), utc(2026, 7, 15, 12, 0)
    for name, hours in [("+8", 8), ("GMT-5", -5), ("UTC+14", 14), ("\u22123", -3)]:
        zone = parse_timezone(name)
        assert winter.astimezone(zone).utcoffset() == timedelta(hours=hours)
        assert summer.astimezone(zone).utcoffset() == timedelta(hours=hours)
    kolkata = parse_timezone("UTC+05:30")
    assert winter.astimezone(kolkata).utcoffset() == timedelta(hours=5, minutes=30)


BAD_ZONES = [
    "",
    "Foo/Bar",
    "Mars",
    "Europe",
    "../../etc/passwd",
    "/etc/localtime",
    "+15",
    "-13",
    "+08:75",
    "+03:15",
    "CST",  # China, or the US Central? Ask for a name.
    "8",
]


@pytest.mark.parametrize("name", BAD_ZONES)
def test_bad_zones(name: str) -> None:
    with pytest.raises(WhenError) as caught:
        parse_timezone(name)
    assert caught.value.reason == "bad_zone"
    assert caught.value.message("en") == (
        "I do not know that time zone. Try: Europe/Berlin, America/New_York, Asia/Shanghai, UTC+8"
    )
    assert caught.value.message("zh") == (
        "无法识别该时区。可以这样写：Asia/Shanghai、Europe/Berlin、America/New_York、UTC+8、北京"
    )


def test_parsed_zones_work_with_parse_when() -> None:
    assert at("tomorrow 9:00", parse_timezone("UTC+8")) == utc(2026, 3, 29, 1, 0)
    assert at("tomorrow 9:00", parse_timezone("北京")) == utc(2026, 3, 29, 1, 0)
    assert at("tomorrow 9:00", parse_timezone("GMT-5")) == utc(2026, 3, 29, 14, 0)


# --- describe ------------------------------------------------------------------------------

DESCRIBED = [
    (utc(2026, 12, 1, 17, 0), BERLIN, "en", "Tue 1 Dec 18:00 (Europe/Berlin)"),
    (utc(2026, 12, 1, 10, 0), SHANGHAI, "zh", "12月1日 周二 18:00（Asia/Shanghai）"),
    (utc(2026, 12, 1, 10, 0), SHANGHAI, "zh-CN", "12月1日 周二 18:00（Asia/Shanghai）"),
    (utc(2026, 3, 29, 7, 0), BERLIN, "en", "Sun 29 Mar 09:00 (Europe/Berlin)"),
    (utc(2026, 3, 29, 7, 0), BERLIN, "zh", "3月29日 周日 09:00（Europe/Berlin）"),
    (utc(2026, 3, 29, 7, 0), NEW_YORK, "en", "Sun 29 Mar 03:00 (America/New_York)"),
    (utc(2026, 3, 28, 23, 30), BERLIN, "en", "Sun 29 Mar 00:30 (Europe/Berlin)"),
    (utc(2026, 3, 28, 23, 30), UTC_ZONE, "en", "Sat 28 Mar 23:30 (UTC)"),
    (utc(2026, 10, 25, 0, 30), BERLIN, "en", "Sun 25 Oct 02:30 (Europe/Berlin)"),
    (utc(2026, 10, 25, 1, 30), BERLIN, "en", "Sun 25 Oct 02:30 (Europe/Berlin)"),
    (utc(2026, 12, 1, 10, 0), parse_timezone("+8"), "en", "Tue 1 Dec 18:00 (UTC+8)"),
    (utc(2026, 12, 1, 23, 0), parse_timezone("GMT-5"), "zh", "12月1日 周二 18:00（UTC-5）"),
    (utc(2026, 12, 1, 10, 0, 59), SHANGHAI, "fr", "Tue 1 Dec 18:00 (Asia/Shanghai)"),
]


@pytest.mark.parametrize(("when", "tz", "lang", "expected"), DESCRIBED, ids=str)
def test_describe(when: datetime, tz: ZoneInfo, lang: str, expected: str) -> None:
    assert describe(when, tz, lang) == expected


def test_describe_shows_the_year_only_when_it_is_not_this_year() -> None:
    next_year = utc(2027, 1, 5, 8, 0)
    assert describe(next_year, BERLIN, "en", now=NOW) == "Tue 5 Jan 2027 09:00 (Europe/Berlin)"
    assert describe(next_year, BERLIN, "zh", now=NOW) == "2027年1月5日 周二 09:00（Europe/Berlin）"
    assert describe(utc(2026, 12, 1, 17, 0), BERLIN, "en", now=NOW) == (
        "Tue 1 Dec 18:00 (Europe/Berlin)"
    )
    # The year is the person's: 31 Dec 23:30 UTC is already next year in Shanghai.
    new_year = utc(2026, 12, 31, 23, 30)
    assert describe(new_year, SHANGHAI, "en", now=NOW) == "Fri 1 Jan 2027 07:30 (Asia/Shanghai)"
    assert describe(new_year, UTC_ZONE, "en", now=NOW) == "Thu 31 Dec 23:30 (UTC)"


def test_describe_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        describe(datetime(2026, 12, 1, 18, 0), BERLIN, "en")


def test_describe_round_trips_through_parse_when() -> None:
    parsed = parse_when("2026-12-01 18:00 x", NOW, BERLIN)
    shown = describe(parsed.at, BERLIN, "en").removesuffix(" (Europe/Berlin)")
    assert parse_when(shown, NOW, BERLIN).at == parsed.at
