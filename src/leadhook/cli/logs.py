"""Logging of the long-running commands (`serve`, `worker`): to stderr, redacted, clipped."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

from leadhook.cli.common import LOG_LEVELS, errors, fail


class KeyValueFormatter(logging.Formatter):
    """Append a record's structured fields (`extra=`) to its message as `key=value`.

    The whole line, traceback included, is redacted: a webhook secret or an API key quoted
    by any library's error text never reaches the log.
    """

    STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        """Format the message, then its extra fields, with secrets redacted."""
        from leadhook.services.redaction import redact

        fields = {k: v for k, v in vars(record).items() if k not in self.STANDARD}
        line = super().format(record) + "".join(f" {k}={v}" for k, v in fields.items())
        return _clip_lines(redact(line))  # redacted whole first: no secret cut in two


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
    """Send leadhook's and uvicorn's logs to stderr through Rich."""
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}", 2)
    handler = RichHandler(console=errors, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(KeyValueFormatter())
    for name in ("leadhook", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
