"""No secret in an error text or a log line: statement parameters are hidden by the engine,
and the log formatter redacts webhook secrets and API keys whatever quotes them."""

from __future__ import annotations

import logging
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import make_engine
from leadhook.cli.logs import KeyValueFormatter

SECRET = "whsec_c2VjcmV0LW5ldmVyLWluLWEtbG9nLWxpbmUtZXZlcg=="
API_KEY = "lh_" + "k" * 43


def test_a_failed_statement_does_not_carry_its_parameters(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        insert = text("INSERT INTO key_check (id, token) VALUES (7, :token)")
        with engine.begin() as conn:
            conn.execute(insert, {"token": SECRET})
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(insert, {"token": SECRET + API_KEY})  # a constraint failure
        message = str(caught.value)
        assert "parameters hidden" in message
        assert SECRET not in message and API_KEY not in message
    finally:
        engine.dispose()


def test_the_log_formatter_redacts_secrets_in_messages_fields_and_tracebacks() -> None:
    try:
        raise RuntimeError(f"driver said: bad value {SECRET!r} for key {API_KEY}")
    except RuntimeError:
        record = logging.LogRecord(
            "leadhook.api", logging.ERROR, __file__, 1, "failed with %s", (SECRET,), sys.exc_info()
        )
    record.key = API_KEY
    line = KeyValueFormatter().format(record)
    assert "whsec_" not in line and API_KEY not in line
    assert "[redacted]" in line and "Traceback" in line


def test_a_log_line_quoting_a_huge_input_is_clipped() -> None:
    record = logging.LogRecord(
        "leadhook.api", logging.ERROR, __file__, 1, "bad %s", ("z" * 100_000,), None
    )
    line = KeyValueFormatter().format(record)
    assert len(line) < 2100 and line.endswith("(100004 characters)")
