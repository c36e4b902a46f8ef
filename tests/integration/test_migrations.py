"""Alembic migrations build exactly the schema of `tables.metadata`, and come down again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import make_engine
from leadhook.adapters.db.tables import metadata

TABLES = set(metadata.tables)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _diffs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def _schema(engine: Engine) -> dict[str, Any]:
    """Describe every table: columns, keys, indexes (with their partial-index condition)."""
    insp = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(TABLES):
        indexes = {}
        for ix in insp.get_indexes(table):
            where = {
                k: str(v) for k, v in ix.get("dialect_options", {}).items() if k.endswith("_where")
            }
            indexes[ix["name"]] = (tuple(ix["column_names"]), bool(ix["unique"]), where)
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("autoincrement"))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            ),
            "indexes": indexes,
        }
    return out


def test_upgrade_builds_the_metadata_and_downgrade_removes_it(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert _diffs(engine) == []
    # The migrated schema is the one create_all makes, down to partial-index conditions.
    migrated = _schema(engine)
    indexes = migrated["deliveries"]["indexes"]
    assert set(indexes) >= {"ix_deliveries_due", "ix_deliveries_lead_order"}
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.begin() as conn:
        metadata.create_all(conn)
    assert _schema(engine) == migrated
    with engine.begin() as conn:
        metadata.drop_all(conn)
    # Up again after down: the migration runs on a database it ran on before.
    migrate.upgrade(engine)
    assert _diffs(engine) == []
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    migrate.upgrade(engine)  # at head already: nothing to do


def test_alembic_commands_with_a_url(database_url: str, engine: Engine) -> None:
    """`alembic upgrade head` / `alembic check` as a command, through env.py's URL branch."""
    cfg = migrate.alembic_config()
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    command.upgrade(cfg, "head")
    command.check(cfg)  # raises if autogenerate finds any difference with the metadata
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_processes_starting_together_migrate_once(database_url: str, engine: Engine) -> None:
    """`serve` and `worker` started at once both migrate on start: they take turns."""
    script = (
        "import sys\n"
        "from leadhook.adapters.db import engine, migrate\n"
        "migrate.upgrade(engine.make_engine(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _diffs(engine) == []
