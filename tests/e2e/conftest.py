"""E2E delivery fixtures: a webhook receiver on 127.0.0.1 and the API over a real database.

`stack` is the whole path over a SQLite file; a test parametrized with `ON_EVERY_BACKEND`
(delivery_support) gets it over this session's PostgreSQL database too. That database is
created once per session, emptied before each test and dropped at the end; when the server is
unreachable those tests skip with the reason, or fail if `LEADHOOK_REQUIRE_POSTGRES=1`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from delivery_support import Receiver, Stack, make_stack
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_cli import start  # noqa: F401  (the fixture that runs `leadhook` processes)

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import make_engine
from leadhook.adapters.db.tables import metadata

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def e2e_pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database shared by this session's delivery scenarios."""
    admin = os.environ.get("LEADHOOK_TEST_POSTGRES_URL", DEFAULT_PG)
    try:
        probe = create_engine(admin, isolation_level="AUTOCOMMIT")
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
        probe.dispose()
    except Exception as exc:
        reason = f"PostgreSQL unreachable at {admin}: {type(exc).__name__}: {exc}"[:300]
        if os.environ.get("LEADHOOK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LEADHOOK_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = f"leadhook_e2e_{uuid.uuid4().hex[:12]}"
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


def _emptied(url: str) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    return url


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Any, receiver: Receiver) -> Iterator[Stack]:
    """The whole path over a SQLite file (or, parametrized, PostgreSQL); dispatchers started by
    the test are stopped after it."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/e2e.db"
    else:
        url = _emptied(request.getfixturevalue("e2e_pg_url"))
    s = make_stack(url, receiver)
    yield s
    s.stop_dispatchers()
    s.client.close()
    s.container.close()
