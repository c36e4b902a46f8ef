"""LEADHOOK_LOG_FORMAT: one line a record as text or JSON off a terminal, redacted and clipped."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
import typer

from leadhook.cli.logs import JsonFormatter, KeyValueFormatter, configure_logging

SECRET = "whsec_" + "A" * 43
TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _record(msg: str = "delivery attempt failed", exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            info = sys.exc_info()
    record = logging.LogRecord("leadhook.dispatcher", logging.WARNING, __file__, 1, msg, (), info)
    record.created = 1796531872.1234
    record.delivery_id = "d1"
    record.attempt = 3
    record.next_in = "3.99261s"
    return record


def test_text_is_one_line_with_an_iso_utc_time_and_the_fields_before_a_traceback() -> None:
    line = KeyValueFormatter(TEXT).format(_record())
    assert line == (
        "2026-12-06T04:37:52.123Z WARNING leadhook.dispatcher delivery attempt failed"
        " delivery_id=d1 attempt=3 next_in=3.99261s"
    )
    first, *rest = KeyValueFormatter(TEXT).format(_record(exc=True)).split("\n")
    assert first.endswith("next_in=3.99261s") and rest[0] == "Traceback (most recent call last):"
    assert SECRET not in "\n".join(rest)


def test_json_is_one_object_a_line_with_the_fields_typed_and_secrets_redacted() -> None:
    line = JsonFormatter().format(_record(f"failed for {SECRET}", exc=True))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["time"] == "2026-12-06T04:37:52.123Z"
    assert (doc["level"], doc["logger"]) == ("WARNING", "leadhook.dispatcher")
    assert (doc["delivery_id"], doc["attempt"], doc["next_in"]) == ("d1", 3, "3.99261s")
    assert SECRET not in line and "[redacted]" in doc["message"]
    assert doc["exception"].startswith("Traceback") and "RuntimeError" in doc["exception"]
    huge = json.loads(JsonFormatter().format(_record("x" * 100_000)))
    assert len(huge["message"]) < 2100


@pytest.fixture(autouse=True)
def _loggers_kept() -> Iterator[None]:
    # configure_logging sets the loggers up for a process: put them back for the next tests.
    kept = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in ("leadhook", "uvicorn")
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in kept.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("text", KeyValueFormatter), ("json", JsonFormatter), ("", KeyValueFormatter)],
)
def test_the_format_is_chosen_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, fmt: str, kind: type[logging.Formatter]
) -> None:
    monkeypatch.setenv("LEADHOOK_LOG_FORMAT", fmt)  # "" is auto: pytest's stderr is no terminal
    configure_logging("info")
    (handler,) = logging.getLogger("leadhook").handlers
    assert type(handler) is logging.StreamHandler and type(handler.formatter) is kind
    assert logging.getLogger("uvicorn").handlers == [handler]


def test_an_unknown_format_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADHOOK_LOG_FORMAT", "xml")
    with pytest.raises(typer.Exit) as exited:
        configure_logging("info")
    assert exited.value.exit_code == 2


def test_a_line_break_in_a_message_or_a_field_stays_on_the_records_line() -> None:
    record = _record("first\nsecond")
    record.detail = "a\r\nb"
    line = KeyValueFormatter(TEXT, one_line=True).format(record)
    assert "\n" not in line and "\r" not in line
    assert line.endswith("first\\nsecond delivery_id=d1 attempt=3 next_in=3.99261s detail=a\\r\\nb")
    # A message's own last line break (uvicorn's "Exception in ASGI application\n") is dropped.
    trailing = KeyValueFormatter(TEXT, one_line=True).format(_record("in ASGI application\n"))
    assert "application delivery_id=d1" in trailing and "\\n" not in trailing


def test_json_writes_lists_and_objects_as_json_and_what_json_cannot_write_as_text() -> None:
    record = _record()
    record.purged = {"events": 3, "key": SECRET}
    record.ratio = float("nan")
    record.when = object()
    record.stack_info = "Stack (most recent call last):\n  here"
    doc = json.loads(JsonFormatter().format(record))  # (written with allow_nan=False)
    assert doc["purged"] == {"events": 3, "key": "[redacted]"}
    assert doc["ratio"] == "nan" and doc["when"].startswith("<object")
    assert doc["stack"].startswith("Stack")
