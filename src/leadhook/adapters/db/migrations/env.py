"""Alembic environment: runs on the connection that `leadhook.adapters.db.migrate` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from leadhook.adapters.db.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///./leadhook.db",
        hide_parameters=True,  # as every leadhook engine: no bound value in an error text
    )
    with engine.connect() as conn:
        _run(conn)
