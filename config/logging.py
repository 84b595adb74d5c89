"""Structured logs carrying request and task ids, with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import NoReturn

import orjson

from config.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class ContextFilter(logging.Filter):
    """Stamp each record with the current request and task id."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach ids; never drops a record."""
        record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        return True


class RedactFilter(logging.Filter):
    """Replace any configured secret that slipped into a message with ``[redacted]``.

    A last line of defence: code paths never log secrets or codes on purpose.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        # A message shorter than every secret holds none (the access line's "request"):
        # no scan, however many sites' secrets there are.
        self._shortest = len(self._secrets[-1]) if self._secrets else 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub the formatted message in place."""
        if not self._secrets:
            return True
        message = record.getMessage()
        if len(message) < self._shortest:
            return True
        scrubbed = message
        for secret in self._secrets:
            scrubbed = scrubbed.replace(secret, "[redacted]")
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class RecordTemplate:
    """Records for one call site that logs on every request (the access line).

    ``logger.info(msg, extra=...)`` walks the stack for its caller and asks for the thread
    and process on every call, for attributes no formatter here prints (the access line
    cost ~40 us of a signup's ~370 us of web CPU at INFO; this template saves ~25 us). A
    template takes them once per process (again after a fork), naming where the template
    was made as the records' origin; each record is then the prototype's attributes, its
    time and its fields, in the order ``makeRecord`` gives them, handed to
    ``logger.handle`` (filters and handlers as usual).
    """

    def __init__(self, logger: logging.Logger, level: int, msg: str) -> None:
        self._logger = logger
        self._level = level
        self._msg = msg
        # Records name the code that made the template (not each call) as their origin.
        caller = sys._getframe(1)
        self._where = (caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name)
        self._pid = -1
        self._prototype: dict[str, object] = {}
        self._start = 0.0

    def log(self, fields: Mapping[str, object]) -> None:
        """Log the message with ``fields`` as its extra attributes, if the level is enabled."""
        if not self._logger.isEnabledFor(self._level):
            return
        if self._pid != os.getpid():
            self._prepare()
        prototype = self._prototype
        if not prototype.keys().isdisjoint(fields):
            # As makeRecord: extra fields must not overwrite the record's own attributes.
            raise KeyError(f"attempt to overwrite a LogRecord attribute in {sorted(fields)}")
        created = time.time()
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__.update(prototype)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.relativeCreated = (created - self._start) * 1000
        record.__dict__.update(fields)
        self._logger.handle(record)

    def _prepare(self) -> None:
        path, line, func = self._where
        record = self._logger.makeRecord(
            self._logger.name, self._level, path, line, self._msg, (), None, func
        )
        self._prototype = vars(record).copy()
        self._start = record.created - record.relativeCreated / 1000
        self._pid = os.getpid()


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self) -> None:
        super().__init__()
        # The timestamp's text up to the second, made once a second rather than per line.
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``."""
        fraction, whole = math.modf(created)
        micros = round(fraction * 1e6)  # rounded to the microsecond, as datetime does
        second = int(whole)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            at = datetime.fromtimestamp(second, UTC).replace(tzinfo=None)
            self._second, self._stamp = second, at.isoformat(timespec="seconds")
        return f"{self._stamp}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its extra fields."""
        entry: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception texts from SMTP or HTTP peers can carry addresses.
            entry["exc_type"] = record.exc_info[0].__name__
        # orjson: a fifteenth of the stdlib's time for a line like the access log's.
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # an integer beyond 64 bits
            return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for the terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Append extra fields and ids when present."""
        line = super().format(record)
        fields = [
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and value is not None
        ]
        return f"{line}  {' '.join(fields)}" if fields else line

    def formatException(self, ei: object) -> str:
        """Only the exception type, never its text."""
        return f"  ({ei[0].__name__})" if isinstance(ei, tuple) and ei[0] else ""


def secret_values(settings: Settings) -> list[str]:
    """Every secret string in ``settings``, for the redaction filter."""
    values = [s.get_secret_value() for site in settings.sites for s in site.webhook_secrets]
    values += [s.get_secret_value() for site in settings.sites for s in site.api_keys]
    if settings.secret_key is not None:
        values.append(settings.secret_key.get_secret_value())
    if settings.email.password is not None:
        values.append(settings.email.password.get_secret_value())
    values.append(settings.sms.ronglian.auth_token.get_secret_value())
    # Bot API URLs carry the token (/bot<token>/method), so network errors can too.
    for secret in (settings.telegram.token, settings.telegram.webhook_secret):
        if secret is not None:
            values.append(secret.get_secret_value())
    return values


def exit_with_error(message: str) -> NoReturn:
    """Stop a process before logging is set up: one JSON line on stderr, exit status 1."""
    entry = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "error",
        "logger": "tidings",
        "msg": message,
    }
    print(json.dumps(entry, ensure_ascii=False), file=sys.stderr)
    raise SystemExit(1)


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """An exception nothing caught: one log line with its type, not a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("tidings").critical("uncaught exception", exc_info=(kind, value, tb))


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log.format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(secret_values(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log.level)
    # aiohttp's access log repeats what our middleware logs, with query strings.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # One "Executing task" line per task costs more than it tells: outcomes are logged by
    # the tasks themselves, with the task id.
    logging.getLogger("taskiq.receiver.receiver").setLevel(logging.WARNING)
    # Start-up errors and crashes in the same format as everything else.
    sys.excepthook = _log_uncaught
