"""Shared fixtures: a real SQLite file and a PostgreSQL database of this test run's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    """The server URL tests create their databases on (`LEADHOOK_TEST_POSTGRES_URL`)."""
    return os.environ.get("LEADHOOK_TEST_POSTGRES_URL", DEFAULT_PG)


def _postgres_or_skip() -> str:
    url = postgres_admin_url()
    try:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL unreachable at {url}: {exc.__class__.__name__}: {exc}"[:300]
        if os.environ.get("LEADHOOK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LEADHOOK_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return url


def create_postgres_database(prefix: str = "leadhook_test") -> str:
    """Create a fresh database on the test server and return its URL."""
    admin = _postgres_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by `create_postgres_database` (closing its connections)."""
    name = make_url(url).database
    engine = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    """A new SQLite file for one test."""
    return f"sqlite:///{tmp_path}/leadhook.db"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: pytest.TempPathFactory) -> Iterator[str]:
    """Each storage backend in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/leadhook.db"
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)
