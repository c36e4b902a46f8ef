"""Integration fixtures: a container over a SQLite file, or over this session's PostgreSQL database.

The PostgreSQL database is created once per test session (`leadhook_test_<random>` on the server
of `LEADHOOK_TEST_POSTGRES_URL`), emptied before each test and dropped at the end. When the server
is unreachable those tests skip with the reason, or fail if `LEADHOOK_REQUIRE_POSTGRES=1`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from queue_support import empty_database
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import make_engine
from leadhook.bootstrap import Container, build
from leadhook.settings import Settings

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin_url() -> str:
    return os.environ.get("LEADHOOK_TEST_POSTGRES_URL", DEFAULT_PG)


def _unreachable(url: str) -> str | None:
    try:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable at {url}: {type(exc).__name__}: {exc}"[:300]
    return None


@pytest.fixture(scope="session")
def queue_pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test session."""
    admin = _admin_url()
    reason = _unreachable(admin)
    if reason is not None:
        if os.environ.get("LEADHOOK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LEADHOOK_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = f"leadhook_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    db = make_engine(url)
    migrate.upgrade(db)
    db.dispose()
    yield url
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def queue_db(request: pytest.FixtureRequest, tmp_path: pytest.TempPathFactory) -> str:
    """An empty, migrated database of each backend in turn."""
    return empty_database(request.param, request, tmp_path)


@pytest.fixture
def container(queue_db: str) -> Iterator[Container]:
    """A container over `queue_db` that may send to loopback receivers."""
    c = build(Settings(database_url=queue_db, allow_private_targets=True), run_migrations=False)
    yield c
    c.close()
