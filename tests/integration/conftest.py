"""Integration fixtures: a container over a SQLite file, or over this session's PostgreSQL database.

The PostgreSQL database is created once per test session (`leadhook_test_<random>` on the server
of `LEADHOOK_TEST_POSTGRES_URL`), emptied before each test and dropped at the end. When the server
is unreachable those tests skip with the reason, or fail if `LEADHOOK_REQUIRE_POSTGRES=1`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from queue_support import empty_database

from leadhook.bootstrap import Container, build
from leadhook.settings import Settings


@pytest.fixture(scope="session")
def queue_pg_url(session_postgres_url: str) -> str:
    """The migrated PostgreSQL database of this test session (tests/conftest.py)."""
    return session_postgres_url


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
