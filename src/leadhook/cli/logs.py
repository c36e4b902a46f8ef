"""Logging of the long-running commands (`serve`, `worker`): to stderr, redacted, clipped.

`LEADHOOK_LOG_FORMAT` picks how a record is written: `text`, one line a record (an ISO 8601
UTC time, the level, the logger, the message and its `key=value` fields; a traceback follows
on its own lines), for files, pipes and log shippers; `json`, one JSON object a line; `auto`
(the default), Rich's columns on a terminal and `text` anywhere else (Rich wrapped a record
at 80 columns into a file, splitting values and leaving out repeated times).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from rich.logging import RichHandler

from leadhook.cli.common import LOG_LEVELS, errors, fail

LOG_FORMATS = ("auto", "text", "json")


class KeyValueFormatter(logging.Formatter):
    """Append a record's structured fields (`extra=`) to its message as `key=value`.

    The whole line, traceback included, is redacted: a webhook secret or an API key quoted
    by any library's error text never reaches the log.
    """

    STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        """Format the message, then its extra fields, with secrets redacted."""
        from leadhook.services.redaction import redact

        fields = _fields(record)
        line = super().format(record)
        head, newline, rest = line.partition("\n")  # the fields before a traceback
        line = head + "".join(f" {k}={v}" for k, v in fields.items()) + newline + rest
        return _clip_lines(redact(line))  # redacted whole first: no secret cut in two

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time in ISO 8601, UTC, to the millisecond (`2026-12-06T04:57:52.123Z`)."""
        return _iso(record.created)


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in KeyValueFormatter.STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object a record: `time`, `level`, `logger`, `message`, its `extra=` fields
    (as given, or as text when JSON has no form for them) and `exception`; redacted, each text
    clipped to `MAX_LOG_LINE`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        from leadhook.services.redaction import redact

        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _clip(redact(record.getMessage())),
        }
        for key, value in _fields(record).items():
            if not (value is None or isinstance(value, bool | int | float)):
                value = _clip(redact(str(value)))
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = _clip_lines(redact(self.formatException(record.exc_info)))
        return json.dumps(doc, ensure_ascii=False, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LOG_LINE else f"{text[:MAX_LOG_LINE]}… ({len(text)} characters)"


MAX_LOG_LINE = 2000
"""Characters kept of one line of a log record: an error quoting a 100 KB input stays short."""


def _clip_lines(text: str) -> str:
    if len(text) <= MAX_LOG_LINE:
        return text
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE else f"{line[:MAX_LOG_LINE]}… ({len(line)} characters)"
        for line in text.split("\n")
    )


def configure_logging(level: str) -> None:
    """Send leadhook's and uvicorn's logs to stderr, as `LEADHOOK_LOG_FORMAT` says."""
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}", 2)
    fmt = os.environ.get("LEADHOOK_LOG_FORMAT", "").strip().lower() or "auto"
    if fmt not in LOG_FORMATS:
        fail(f"LEADHOOK_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}", 2)
    if fmt == "auto":
        fmt = "rich" if sys.stderr.isatty() else "text"
    handler: logging.Handler
    if fmt == "rich":
        handler = RichHandler(console=errors, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(KeyValueFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
    for name in ("leadhook", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
