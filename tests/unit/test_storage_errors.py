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
from leadhook.domain.errors import SecretKeyUnavailableError


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


def test_a_secret_keys_outage_ends_only_when_the_keys_open_the_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A behaviour reads no secret: its success said nothing about the key, yet logged the
    # database "available again", and the next refused secret read a new outage (a review).
    caplog.set_level(logging.INFO, logger="leadhook.api")
    outages = OutageLog()
    wrong_key = SecretKeyUnavailableError("LEADHOOK_SECRET_KEY no longer opens them")
    for _ in range(4):
        outages.failed(503, "the secret keys", wrong_key)
        outages.answered()  # a behaviour went through
    assert outages.key_since is not None and outages.since is None
    # A database outage meanwhile is its own, logged and ended on its own.
    outages.failed(503, "the database is unavailable", psycopg.OperationalError("refused"))
    outages.answered()
    outages.key_opens()
    outages.key_opens()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("database unavailable: answering 503")
    assert "SecretKeyUnavailableError" in lines[0]
    assert "OperationalError" in lines[1] and "available again" in lines[2]
    assert lines[3].startswith("the secret keys open the webhook secrets again")
    assert "4 requests were refused" in lines[3]


def test_the_writer_knows_a_lost_connection_from_a_failed_statement(tmp_path: Path) -> None:
    # psycopg raised "the connection is lost" (no SQLSTATE) from a pipeline while the
    # connection's status still read as fine: the writer then answered 503 on a healthy
    # database instead of running the group again on a new connection (one run in three
    # of tests/e2e/test_faults_postgres.py).
    from leadhook.adapters.db.writer import _lost

    lost = psycopg.OperationalError("the connection is lost")
    assert _lost(lost)
    assert _lost(sa_exc.OperationalError("INSERT …", {}, lost))  # SQLAlchemy's wrapper
    assert _lost(psycopg.errors.AdminShutdown("terminating connection"))  # 57P01
    assert not _lost(psycopg.errors.LockNotAvailable("lock timeout"))  # 55P03: the statement
    assert not _lost(psycopg.errors.QueryCanceled("canceling statement"))  # 57014: a stop
    assert not _lost(psycopg.errors.DeadlockDetected("deadlock"))
    assert not _lost(_sqlite_error(tmp_path, "SELEC 1"))
    assert not _lost(RuntimeError("the transaction failed on the server: not committed"))
