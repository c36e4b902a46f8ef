"""Which storage errors are outages (503 / 507) and which are bugs (500), on the raw drivers
and on SQLAlchemy's wrappers alike; and an outage is logged once, not once per request."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from leadhook.api.problems import OutageLog, classify_storage_error


def _sqlite_error(tmp_path: Path, sql: str) -> sqlite3.Error:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


def test_a_locked_sqlite_file_is_503_raw_and_wrapped(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(tmp_path / "x.db", timeout=0.05)
    with pytest.raises(sqlite3.OperationalError) as caught:
        waiter.execute("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    raw = caught.value
    wrapped = sa_exc.OperationalError("INSERT", {}, raw)
    for error in (raw, wrapped):
        verdict = classify_storage_error(error)
        assert verdict is not None and verdict[0] == 503 and "locked" in verdict[1]


def test_a_bug_is_not_an_outage(tmp_path: Path) -> None:
    syntax = _sqlite_error(tmp_path, "SELEC 1")
    assert classify_storage_error(syntax) is None
    integrity = sa_exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))
    assert classify_storage_error(integrity) is None
    assert classify_storage_error(ValueError("x")) is None


def _status(error: BaseException) -> int | None:
    verdict = classify_storage_error(error)
    return None if verdict is None else verdict[0]


def test_postgresql_outages_and_a_full_disk() -> None:
    assert _status(psycopg.OperationalError("connection refused")) == 503
    shutdown = sa_exc.OperationalError("UPDATE", {}, psycopg.errors.AdminShutdown("terminating"))
    assert _status(shutdown) == 503
    full = sa_exc.OperationalError("INSERT", {}, psycopg.errors.DiskFull("no space"))
    assert _status(full) == 507
    assert _status(sa_exc.TimeoutError("QueuePool limit reached")) == 503


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="leadhook.api")
    outages = OutageLog()
    outages.answered()  # no outage: nothing to say
    for _ in range(50):
        outages.failed(503, "the database is unavailable", psycopg.OperationalError("refused"))
    outages.answered()
    outages.answered()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("database unavailable: answering 503")
    assert "50 requests were refused" in lines[1]
