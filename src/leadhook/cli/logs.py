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
import math
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

    STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

    def __init__(self, fmt: str | None = None, *, one_line: bool = False) -> None:
        super().__init__(fmt)
        self.one_line = one_line

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message and its fields; with `one_line`, a line break in them written `\\n`."""
        # A message's own trailing line break (uvicorn's "Exception in ASGI application\n")
        # is not part of it: it would read as a literal "\n" at the end of the line.
        line = super().formatMessage(record).rstrip("\r\n")
        line += "".join(f" {k}={v}" for k, v in _fields(record).items())
        return line.replace("\r", "\\r").replace("\n", "\\n") if self.one_line else line

    def format(self, record: logging.LogRecord) -> str:
        """Format the message and its extra fields (then any traceback), secrets redacted."""
        from leadhook.services.redaction import redact

        return _clip_lines(redact(super().format(record)))  # redacted whole: no secret cut

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
    (numbers, booleans, lists and objects as JSON; anything else, and a number JSON cannot
    write such as NaN, as text), `exception` and `stack`; redacted, each text clipped to
    `MAX_LOG_LINE`."""

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
            doc.setdefault(key, _json_value(value))
        if record.exc_info:
            doc["exception"] = _clip_lines(redact(self.formatException(record.exc_info)))
        if record.stack_info:
            doc["stack"] = _clip_lines(redact(self.formatStack(record.stack_info)))
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)


def _json_value(value: Any) -> Any:
    """A field's value as JSON: as it is where JSON has the same, else its text; redacted."""
    from leadhook.services.redaction import redact

    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | dict):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # a value inside with no JSON form: the whole as text
            return _clip(redact(str(value)))
        if len(text) <= MAX_LOG_LINE:
            return json.loads(redact(text))  # "[redacted]" holds nothing JSON reads
    return _clip(redact(str(value)))


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
            else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", one_line=True)
        )
    for name in ("leadhook", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
