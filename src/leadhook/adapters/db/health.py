"""The readiness check: one trivial query over a fresh connection (`GET /readyz`)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from leadhook.adapters.db.keycheck import holds_secrets, key_opens
from leadhook.adapters.secretbox import SecretBox, SecretKeyError

PING = text("SELECT 1")
"""Answered by every backend without reading a table."""


class SqlReadiness:
    """Reach the database through the engine's pool, as any request would, and check that
    this process's secret keys still open the database's webhook secrets."""

    def __init__(self, engine: Engine, box: SecretBox | None = None) -> None:
        self._engine = engine
        self._box = box

    def check(self) -> str:
        """Run `PING`; return the dialect's name, or raise the driver's error (or
        SecretKeyError when the database's secrets moved to a key this process lacks)."""
        with self._engine.connect() as conn:
            # A read: on SQLite a plain BEGIN, not the writers' BEGIN IMMEDIATE, so that a
            # write lock another program holds (WAL readers are not blocked) is not "down".
            conn.execution_options(leadhook_readonly=True).execute(PING)
        box = self._box
        if box is not None and holds_secrets(self._engine) and not key_opens(self._engine, box):
            raise SecretKeyError(f"{box.source} no longer opens this database's webhook secrets")
        return self._engine.dialect.name
