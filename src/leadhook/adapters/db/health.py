"""The readiness check: one trivial query over a fresh connection (`GET /readyz`)."""

from __future__ import annotations

from sqlalchemy import Engine, text

PING = text("SELECT 1")
"""Answered by every backend without reading a table."""


class SqlReadiness:
    """Reach the database through the engine's pool, as any request would."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def check(self) -> str:
        """Run `PING`; return the dialect's name, or raise the driver's error."""
        with self._engine.connect() as conn:
            # A read: on SQLite a plain BEGIN, not the writers' BEGIN IMMEDIATE, so that a
            # write lock another program holds (WAL readers are not blocked) is not "down".
            conn.execution_options(leadhook_readonly=True).execute(PING)
        return self._engine.dialect.name
