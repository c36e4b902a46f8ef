"""Alembic migrations build exactly the schema of `tables.metadata`, and come down again."""

from __future__ import annotations

import json
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
from leadhook.domain.lead import Lead

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
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
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


def test_automation_migration_backfills_clocks_and_duplicate_keys(engine: Engine) -> None:
    """Leads stored before 0004 get their reclaim clocks and duplicate keys, state included."""
    migrate.upgrade(engine, "0001")
    state = {
        "id": "L1",
        "mid": "t1",
        "version": 3,
        "business_type": "bt",
        "owner": "m1",
        "lead_pool": "market",
        "life_status": "baby_lead",
        "leads_status": None,
        "voided": False,
        "fields": {"mobile": "+86 138 0013 8000", "email": " Zhao@Example.COM"},
        "source": {},
        "team_members": [],
        "relations": [],
        "lead_omni_user_uuid": "",
        "created_at": 100,
        "updated_at": 300,
    }
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO leads (id, mid, version, owner, lead_pool, life_status, voided,"
                " state, created_at, updated_at) VALUES ('L1', 't1', 3, 'm1', 'market',"
                " 'baby_lead', false, :state, 100, 300)"
            ),
            {"state": json.dumps(state)},
        )
        for version, (kind, follow_up, at) in enumerate(
            [("object_create", 0, 100), ("object_add_notes", 1, 200), ("object_update", 0, 300)],
            start=1,
        ):
            conn.execute(
                text(
                    "INSERT INTO events (event_id, mid, entity_id, entity_version, event_type,"
                    " create_time, is_follow_up, payload) VALUES (:e, 't1', 'L1', :v, :k, :at,"
                    " :f, '{}')"
                ),
                {"e": f"E{version}", "v": version, "k": kind, "at": at, "f": follow_up},
            )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT owner_since, last_follow_up_at, mobile_key, email_key, state FROM leads")
        ).one()
    assert (row.owner_since, row.last_follow_up_at) == (300, 200)
    assert (row.mobile_key, row.email_key) == ("13800138000", "zhao@example.com")
    lead = Lead.from_json(json.loads(row.state))
    assert (lead.owner_since, lead.last_follow_up_at) == (300, 200)


def _leadhook(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `leadhook` command as an operator would, with no secret key in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "leadhook", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LEADHOOK_SECRET_KEY": ""},
        timeout=60,
    )


def test_a_database_lacking_what_its_revision_promises_is_refused(
    database_url: str, engine: Engine
) -> None:
    """Catches: a database migrated by a development build (whose history was re-chained
    since) recorded the head revision without one migration's columns; leadhook trusted the
    revision and answered 500 on every request."""
    from leadhook.bootstrap import build
    from leadhook.settings import Settings

    build(Settings(database_url=database_url)).close()  # migrated to head: accepted
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE subscriptions DROP COLUMN circuit_retry_at"))
    with pytest.raises(migrate.SchemaMismatchError, match=r"subscriptions\.circuit_retry_at"):
        build(Settings(database_url=database_url))
    cli = _leadhook("tenants", "keys", "list", "acme", "--database-url", database_url)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "lacks subscriptions.circuit_retry_at" in cli.stderr and "Traceback" not in cli.stderr


def test_a_database_a_newer_leadhook_migrated_is_refused_in_one_line(
    database_url: str, engine: Engine
) -> None:
    """Catches: code older than the database's schema (a rollback, a worker not yet upgraded)
    ended in a hundred lines of Alembic's traceback ("Can't locate revision")."""
    from leadhook.bootstrap import build
    from leadhook.settings import Settings

    build(Settings(database_url=database_url)).close()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(migrate.SchemaMismatchError, match="at migration 0099, which this"):
        build(Settings(database_url=database_url))
    cli = _leadhook("tenants", "list", "--database-url", database_url)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "a newer leadhook migrated it" in cli.stderr and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_a_listing_does_not_upgrade_and_0008_starts_the_horizons_at_the_last_purge(
    database_url: str, engine: Engine
) -> None:
    """Catches (an upgrade's review): the new version's `tenants list`, run to look before
    switching over, migrated the live database, and older processes then refused it on their
    next start; and purges made before 0008 kept no horizon, so an API without the retention
    setting still refused a purged `after`, and replay-missing sent purged deliveries again."""
    from leadhook.bootstrap import build
    from leadhook.settings import Settings

    build(Settings(database_url=database_url)).close()
    migrate.downgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO purge_counts (table_name, rows, last_purge_at)"
                " VALUES ('events', 3, 1700000000), ('deliveries', 9, 1700000100)"
            )
        )
    for command_line in (("tenants", "list"), ("deliveries", "list", "acme")):
        cli = _leadhook(*command_line, "--database-url", database_url)
        assert cli.returncode == 2, cli.stdout + cli.stderr
        assert "at migration 0007, older than this" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
    build(Settings(database_url=database_url)).close()  # a process starting migrates
    with engine.connect() as conn:
        horizons = dict(conn.execute(text("SELECT table_name, horizon FROM purge_counts")).all())
    assert horizons == {"events": 1700000000.0, "deliveries": 1700000100.0}
    cli = _leadhook("tenants", "list", "--database-url", database_url)
    assert cli.returncode == 0, cli.stdout + cli.stderr
