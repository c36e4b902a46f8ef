"""Bring a database to the newest schema with Alembic (called by `serve` and `worker`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from leadhook import __version__

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works: it only has to be the same in every leadhook process.
_PG_MIGRATION_LOCK = 7_340_211
# Session-level (held across the migration's commits), PostgreSQL only: SQLite has one writer.
_LOCK = text("SELECT pg_advisory_lock(:k)").bindparams(k=_PG_MIGRATION_LOCK)
_UNLOCK = text("SELECT pg_advisory_unlock(:k)").bindparams(k=_PG_MIGRATION_LOCK)


def alembic_config() -> Config:
    """Return an Alembic config pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head", *, secret_box: Any = None) -> None:
    """Migrate the database to `revision`; concurrent callers on PostgreSQL take turns.

    `secret_box` (an `adapters.secretbox.SecretBox`) encrypts stored webhook secrets; the
    migration that does so refuses to run without it when there are secrets to encrypt.
    """
    cfg = alembic_config()
    if revision == "head" and _at_head(engine, cfg):
        # Read first: a database already up to date needs no write lock, so a process that
        # only starts (a listing, a second worker) does not wait behind another's writes.
        return
    cfg.attributes["secret_box"] = secret_box
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(_LOCK)
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(_UNLOCK)
                conn.commit()


def _at_head(engine: Engine, cfg: Config) -> bool:
    """Whether the database records the newest revision (a read, no write lock); refused
    (`SchemaMismatchError`) if it records one this version does not know."""
    current, heads = _revisions(engine, cfg)
    return bool(current) and current == heads


def _revisions(engine: Engine, cfg: Config) -> tuple[set[str], set[str]]:
    """The revisions the database records and this version's newest (a read, no write
    lock); refused (`SchemaMismatchError`) if it records one this version does not know."""
    script = ScriptDirectory.from_config(cfg)
    heads = set(script.get_heads())
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)
        current = MigrationContext.configure(conn).get_current_heads()
    known = {s.revision for s in script.walk_revisions()}
    newer = sorted(set(current) - known)
    if newer:
        # A newer leadhook migrated it (a rollback of the code, a worker not yet upgraded):
        # Alembic's own refusal was a hundred lines of traceback.
        raise SchemaMismatchError(
            f"the database is at migration {', '.join(newer)}, which this leadhook"
            f" {__version__} does not know (its newest: {', '.join(sorted(heads))}): a newer"
            " leadhook migrated it; run that version, or a newer one"
        )
    return set(current), heads


def require_head(engine: Engine) -> None:
    """Refuse (`SchemaMismatchError`) a database not at this version's newest migration,
    without migrating it: a listing from the command line reads what is there, and must not
    commit an upgrade that processes of the older version still running would then refuse."""
    current, heads = _revisions(engine, alembic_config())
    if current and current == heads:
        return
    raise SchemaMismatchError(
        f"the database is at migration {', '.join(sorted(current)) or 'none'}, older than this"
        f" leadhook {__version__}'s {', '.join(sorted(heads))}: a listing does not upgrade it;"
        " start `leadhook serve` or `leadhook worker` of this version (they migrate), or run"
        " the version that made it"
    )


def downgrade(engine: Engine, revision: str = "base", *, secret_box: Any = None) -> None:
    """Migrate the database down to `revision` (`secret_box` decrypts stored secrets)."""
    cfg = alembic_config()
    cfg.attributes["secret_box"] = secret_box
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


class SchemaMismatchError(RuntimeError):
    """The database's tables lack columns its migration revision promises."""


def check_schema(engine: Engine) -> None:
    """Refuse a database whose tables lack a table or column of leadhook's schema.

    Alembic trusts the revision a database records. Development builds of leadhook once
    recorded revisions without the schema that revision has now (its history was
    re-chained), and a process that trusted them answered 500 on every request; so each
    process checks, after migrating, that every table and column is there.
    """
    from leadhook.adapters.db.tables import metadata

    # Reads on one read-only connection: on SQLite a plain BEGIN, not the writers' BEGIN
    # IMMEDIATE, so that starting does not wait behind another program's write lock.
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)
        found = inspect(conn)
        tables = set(found.get_table_names())
        missing: list[str] = []
        for table in metadata.sorted_tables:
            if table.name not in tables:
                missing.append(table.name)
                continue
            columns = {c["name"] for c in found.get_columns(table.name)}
            missing.extend(f"{table.name}.{c.name}" for c in table.columns if c.name not in columns)
        revision = (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if missing
            else None
        )
    if missing:
        raise SchemaMismatchError(
            f"the database records schema revision {revision} but lacks "
            f"{', '.join(missing[:8])}{' and more' if len(missing) > 8 else ''}: it was "
            "migrated by a development build of leadhook whose migrations differ from this "
            "one's. leadhook will not run on it: restore a backup from before that build, or "
            "start from a new database"
        )
