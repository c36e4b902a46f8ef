"""Shared fixtures: a real SQLite file and a PostgreSQL database of this test run's own."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True, scope="session")
def _outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run every test from a directory of the run's own, not from the checkout.

    Without LEADHOOK_SECRET_KEY, a PostgreSQL database's key file is `./leadhook.key` in the
    working directory: the tests that build a container on PostgreSQL left one in the
    checkout, which a `leadhook serve` run there later would have taken as its key (a
    new-user trial found it)."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(here)


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


@pytest.fixture(scope="session")
def session_postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database shared by this test run (see `empty_session_postgres`)."""
    from leadhook.adapters.db import migrate
    from leadhook.adapters.db.engine import make_engine

    url = create_postgres_database()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def empty_session_postgres(session_postgres_url: str) -> str:
    """`session_postgres_url`, every table emptied: a fresh database at the cost of a TRUNCATE."""
    from leadhook.adapters.db.tables import metadata

    engine = create_engine(session_postgres_url)
    with engine.begin() as conn:
        names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    return session_postgres_url


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


# ---- seeded databases: prepared once per run, then restored for each test ------------------


class SeededDatabases:
    """Databases prepared once per test run (migrated, seeded) and restored before each test.

    SQLite: the prepared file is copied to a new file per test. PostgreSQL: one database per
    preparation, emptied with TRUNCATE and refilled with the prepared rows before each test,
    because creating a database costs a quarter of a second and a restore a few milliseconds.
    """

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._made: dict[tuple[str, str], tuple[str, Any, dict[str, list[dict[str, Any]]]]] = {}
        self._count = 0

    def restore(self, backend: str, name: str, prepare: Callable[[str], Any]) -> tuple[str, Any]:
        """Return the URL of a database just as `prepare(url)` left it, and what it returned."""
        from leadhook.adapters.db.tables import metadata

        if (backend, name) not in self._made:
            if backend == "sqlite":
                url = f"sqlite:///{self._workdir}/{name}.db"
            else:
                url = create_postgres_database(prefix="leadhook_seeded")
            result = prepare(url)
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = {
                    table.name: [dict(r) for r in conn.execute(table.select()).mappings()]
                    for table in metadata.sorted_tables
                }
                if backend == "sqlite":
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
            self._made[(backend, name)] = (url, result, rows)
        url, result, rows = self._made[(backend, name)]
        if backend == "sqlite":
            self._count += 1
            copy = f"{self._workdir}/{name}-{self._count}.db"
            shutil.copyfile(make_url(url).database or "", copy)
            key_file = Path(f"{make_url(url).database}.key")  # the secret key goes with it
            if key_file.exists():
                shutil.copyfile(key_file, f"{copy}.key")
            return f"sqlite:///{copy}", result
        engine = create_engine(url)
        with engine.begin() as conn:
            names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
            for table in metadata.sorted_tables:
                if rows[table.name]:
                    conn.execute(table.insert(), rows[table.name])
        engine.dispose()
        return url, result

    def close(self) -> None:
        """Drop the PostgreSQL databases."""
        for (backend, _), (url, _, _) in self._made.items():
            if backend != "sqlite":
                drop_postgres_database(url)


@pytest.fixture(scope="session")
def seeded_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededDatabases]:
    """The per-run prepared databases that `SeededDatabases.restore` hands out."""
    databases = SeededDatabases(tmp_path_factory.mktemp("seeded"))
    yield databases
    databases.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn, by name, for fixtures that make their database themselves."""
    if request.param == "postgresql":
        _postgres_or_skip()
    name: str = request.param
    return name
