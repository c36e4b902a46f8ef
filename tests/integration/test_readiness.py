"""The readiness port's SQL adapter (`GET /readyz`), on both backends and on no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from leadhook.adapters.db.engine import make_engine
from leadhook.adapters.db.health import SqlReadiness
from leadhook.bootstrap import Container


def test_a_reachable_database_answers_its_kind(container: Container) -> None:
    assert container.readiness.check() == container.engine.dialect.name


def test_an_unreachable_database_raises_the_drivers_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory: no connection opens
    try:
        with pytest.raises(OperationalError):
            SqlReadiness(engine).check()
    finally:
        engine.dispose()
