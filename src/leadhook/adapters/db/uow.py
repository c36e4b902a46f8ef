"""The SQL unit of work: one connection, one transaction, every repository on it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine

from leadhook.adapters.db.engine import WriteGate
from leadhook.adapters.db.outbox import SqlDeliveries, SqlSubscriptions
from leadhook.adapters.db.pools import SqlPools
from leadhook.adapters.db.repositories import SqlEvents, SqlIdempotency, SqlLeads, SqlTenants
from leadhook.services.ports import IdFactory


class _Repositories:
    """Every repository of a unit of work, on one connection."""

    tenants: SqlTenants
    leads: SqlLeads
    events: SqlEvents
    subscriptions: SqlSubscriptions
    deliveries: SqlDeliveries
    idempotency: SqlIdempotency
    pools: SqlPools

    def _bind(self, conn: Connection, ids: IdFactory) -> None:
        self.tenants = SqlTenants(conn)
        self.leads = SqlLeads(conn)
        self.events = SqlEvents(conn)
        self.subscriptions = SqlSubscriptions(conn)
        self.deliveries = SqlDeliveries(conn, ids)
        self.idempotency = SqlIdempotency(conn)
        self.pools = SqlPools(conn)


class SqlUnitOfWork(_Repositories):
    """Open a transaction on enter; commit only when asked, roll back otherwise."""

    def __init__(
        self, engine: Engine, gate: WriteGate, *, ids: IdFactory, readonly: bool = False
    ) -> None:
        self._engine = engine
        self._ids = ids
        self._gate = gate
        self._readonly = readonly
        self._held: AbstractContextManager[Any] | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> Self:
        if not self._readonly:
            self._held = self._gate.hold()
            self._held.__enter__()
        try:
            conn = self._engine.connect()
            if self._readonly:
                conn = conn.execution_options(leadhook_readonly=True)
            conn.begin()
        except BaseException:
            self._release()
            raise
        self._conn = conn
        self._bind(conn, self._ids)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._conn is not None:
                if self._conn.in_transaction():
                    self._conn.rollback()
                self._conn.close()
        finally:
            self._conn = None
            self._release()

    def _release(self) -> None:
        if self._held is not None:
            self._held.__exit__(None, None, None)
            self._held = None

    def commit(self) -> None:
        """Commit everything written in this unit of work."""
        assert self._conn is not None, "commit outside the unit of work"
        self._conn.commit()


class BoundUnitOfWork(_Repositories):
    """Every repository on a connection whose transaction belongs to someone else.

    The group-commit writer (`adapters.db.writer`) hands one to each unit of work it runs:
    the writer opens the transaction, puts each unit in a savepoint and commits them together,
    so `commit` here does nothing.
    """

    def __init__(self, conn: Connection, ids: IdFactory) -> None:
        self._bind(conn, ids)
        self.forget()

    def forget(self) -> None:
        """Start the group's memos afresh (at its start, and after a unit's savepoint was
        rolled back: what that unit read or locked may be gone with it).

        The group's units are behaviours: they read their tenant and its subscriptions, and
        never write either, so the group reads each once (a write would forget them), and
        takes each tenant's log lock once.
        """
        self.tenants.memo = {}
        self.subscriptions.memo = {}
        if self.tenants.conn.dialect.name == "postgresql":  # one round trip for both reads
            self.tenants.companion = self.subscriptions.prefetch
        self.events.held = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def commit(self) -> None:
        """Nothing to do: the writer commits the whole group."""
