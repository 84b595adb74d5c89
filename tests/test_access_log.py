"""The per-request fast paths: access records, JSON log lines and the JSON body reader."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from config.logging import JsonFormatter, RecordTemplate, RedactFilter
from webhooks.bodies import parse_json
from webhooks.problems import Problem

FIELDS = {"method": "POST", "path": "/webhooks/shop", "status": 202, "ms": 1.5, "site": "shop"}


def test_template_records_are_what_logger_info_makes(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tidings.test.access")
    template = RecordTemplate(logger, logging.INFO, "request")
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.info("request", extra=FIELDS)
    template.log(FIELDS)
    plain, fast = caplog.records
    assert list(vars(fast)) == list(vars(plain))
    where = {"pathname", "filename", "module", "lineno", "funcName"}
    timing = {"created", "msecs", "relativeCreated"}
    for key, value in vars(plain).items():
        if key not in where | timing:
            assert getattr(fast, key) == value, key
    assert fast.getMessage() == "request"
    assert abs(fast.created - plain.created) < 1
    assert abs(fast.relativeCreated - plain.relativeCreated) < 1000
    assert fast.msecs == int((fast.created - int(fast.created)) * 1000)
    formatter = JsonFormatter()
    one, two = json.loads(formatter.format(plain)), json.loads(formatter.format(fast))
    assert one.keys() == two.keys()
    assert {k: v for k, v in one.items() if k != "ts"} == {
        k: v for k, v in two.items() if k != "ts"
    }


def test_template_respects_the_level_and_refuses_to_overwrite(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tidings.test.quiet")
    template = RecordTemplate(logger, logging.INFO, "request")
    caplog.set_level(logging.WARNING, logger=logger.name)
    template.log(FIELDS)
    assert not caplog.records
    caplog.set_level(logging.INFO, logger=logger.name)
    with pytest.raises(KeyError):
        template.log({"lineno": 3})


@pytest.mark.parametrize(
    "created",
    [
        1_765_000_000.0,
        1_765_000_000.0004999,
        1_765_000_000.0005,
        1_765_000_000.9995,
        1_765_000_000.99999949,
        1_765_000_000.9999995,
        1_765_000_000.9999996,
        1_765_000_123.456789,
    ],
)
def test_log_timestamps_are_isoformat_to_the_millisecond(created: float) -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("x", logging.INFO, "p", 1, "m", (), None)
    record.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json.loads(formatter.format(record))["ts"] == expected
    # Again for the same second, from the cached prefix.
    assert json.loads(formatter.format(record))["ts"] == expected


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (
            b'{"a": 1, "b": [true, null, "x"], "c": {"d": -5}}',
            {"a": 1, "b": [True, None, "x"], "c": {"d": -5}},
        ),
        (b'{"big": 123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
        (b'{"neg": -9223372036854775809}', {"neg": -9223372036854775809}),
        (b'{"f": 1.5, "e": 1E2}', {"f": 1.5, "e": 100.0}),
        (b'{"a": 1, "a": 2}', {"a": 2}),
        (b"[" * 32 + b"]" * 32, json.loads(b"[" * 32 + b"]" * 32)),
    ],
)
def test_bodies_read_as_the_strict_decoder_reads_them(body: bytes, answer: object) -> None:
    assert parse_json(body) == answer
    assert type(parse_json(body)) is type(answer)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"n": ' + b"1" * 65 + b"}", 422),
        (b'{"n": 0.' + b"1" * 70 + b"}", 422),
        (b'{"n": 1e999}', 422),
        (b'{"n": NaN}', 422),
        (b'{"s": "\\ud800"}', 422),
        (b'{"s": "\xff"}', 400),
        (b"[" * 33 + b"1" + b"]" * 33, 400),
        (b"[" * 2000 + b"]" * 2000, 400),
        (b'{"a": 1} x', 400),
    ],
)
def test_bodies_refused_as_the_strict_decoder_refuses_them(body: bytes, status: int) -> None:
    with pytest.raises(Problem) as refused:
        parse_json(body)
    assert refused.value.status == status


def test_redaction_still_scrubs_messages_as_long_as_a_secret() -> None:
    redact = RedactFilter(["s3cret-value", "abcdefgh"])
    for message, expected in [
        ("request", "request"),
        ("abcdefgh", "[redacted]"),
        ("key s3cret-value and abcdefgh", "key [redacted] and [redacted]"),
    ]:
        record = logging.LogRecord("x", logging.INFO, "p", 1, message, (), None)
        assert redact.filter(record)
        assert record.getMessage() == expected
