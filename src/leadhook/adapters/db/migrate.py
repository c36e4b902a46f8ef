"""Bring a database to the newest schema with Alembic (called by `serve` and `worker`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

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


def downgrade(engine: Engine, revision: str = "base", *, secret_box: Any = None) -> None:
    """Migrate the database down to `revision` (`secret_box` decrypts stored secrets)."""
    cfg = alembic_config()
    cfg.attributes["secret_box"] = secret_box
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()
