"""E2E delivery fixtures: a webhook receiver on 127.0.0.1 and the API over a real database.

`stack` is the whole path over a SQLite file; a test parametrized with `ON_EVERY_BACKEND`
(delivery_support) gets it over this session's PostgreSQL database too. That database is
created once per session, emptied before each test and dropped at the end; when the server is
unreachable those tests skip with the reason, or fail if `LEADHOOK_REQUIRE_POSTGRES=1`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from delivery_support import Receiver, Stack, make_stack
from test_cli import start  # noqa: F401  (the fixture that runs `leadhook` processes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Any, receiver: Receiver) -> Iterator[Stack]:
    """The whole path over a SQLite file (or, parametrized, PostgreSQL); dispatchers started by
    the test are stopped after it."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/e2e.db"
    else:
        url = request.getfixturevalue("empty_session_postgres")
    s = make_stack(url, receiver)
    yield s
    s.stop_dispatchers()
    s.client.close()
    s.container.close()
