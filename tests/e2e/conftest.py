"""E2E delivery fixtures: a webhook receiver on 127.0.0.1 and the API over a SQLite file."""

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
def stack(tmp_path: Any, receiver: Receiver) -> Iterator[Stack]:
    """The whole path over a SQLite file; dispatchers started by the test are stopped after it."""
    s = make_stack(f"sqlite:///{tmp_path}/e2e.db", receiver)
    yield s
    s.stop_dispatchers()
    s.client.close()
    s.container.close()
