"""The in-memory store and its unit of work: a snapshot on enter, published only on commit."""

from __future__ import annotations

import itertools
import threading
from types import TracebackType
from typing import Self, TypeVar

from leadhook.adapters.memory.outbox import MemoryDeliveries, MemorySubscriptions
from leadhook.adapters.memory.pools import MemoryPools
from leadhook.adapters.memory.repositories import (
    MemoryEvents,
    MemoryIdempotency,
    MemoryLeads,
    MemoryTenants,
)
from leadhook.adapters.memory.state import MemoryState
from leadhook.domain.errors import ConflictError
from leadhook.services.ports import IdFactory

R = TypeVar("R")


class MemoryStore:
    """Every table of leadhook in memory, shared by the units of work made from it."""

    def __init__(self, ids: IdFactory | None = None) -> None:
        self.state = MemoryState()
        self._minted = ids
        # Held by a unit of work from enter to exit: units run one at a time (serialisable),
        # which is what SQLite gives and what PostgreSQL's row locks give per lead. It is
        # re-entrant so a unit of work nested in another (same thread) does not hang; the
        # outer one then fails at commit, as a serialisation failure would.
        self.lock = threading.RLock()
        self.commits = 0
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        """Return a fresh 22-character id for rows the store names itself (deliveries): from
        the `IdFactory` given, else from a counter."""
        if self._minted is not None:
            return self._minted.short()
        return f"d{next(self._ids):021d}"

    def uow(self) -> MemoryUnitOfWork:
        """Return a new unit of work on this store (a `UnitOfWorkFactory`)."""
        return MemoryUnitOfWork(self)


class MemoryUnitOfWork:
    """Work on a private copy of the store; `commit` publishes it, leaving without discards it."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._state: MemoryState | None = None
        self._base = 0
        self._tenants: MemoryTenants | None = None
        self._leads: MemoryLeads | None = None
        self._events: MemoryEvents | None = None
        self._subscriptions: MemorySubscriptions | None = None
        self._deliveries: MemoryDeliveries | None = None
        self._idempotency: MemoryIdempotency | None = None
        self._pools: MemoryPools | None = None

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        try:
            state = self._store.state.copy()
            self._state = state
            self._base = self._store.commits
            self._tenants = MemoryTenants(state)
            self._leads = MemoryLeads(state)
            self._events = MemoryEvents(state)
            self._subscriptions = MemorySubscriptions(state)
            self._deliveries = MemoryDeliveries(state, self._store.new_id)
            self._idempotency = MemoryIdempotency(state)
            self._pools = MemoryPools(state)
        except BaseException:
            self._store.lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is None:
            return
        self._state = None
        self._tenants = self._leads = self._events = None
        self._subscriptions = None
        self._deliveries = None
        self._idempotency = None
        self._pools = None
        self._store.lock.release()

    def commit(self) -> None:
        """Publish everything written so far; later writes need another commit."""
        assert self._state is not None, "commit outside the unit of work"
        if self._store.commits != self._base:
            # Another unit of work committed since this one took its snapshot: publishing
            # would silently undo that commit.
            raise ConflictError("the store changed during this unit of work; retry")
        self._store.state = self._state.copy()
        self._store.commits += 1
        self._base = self._store.commits

    @staticmethod
    def _open(repo: R | None) -> R:
        if repo is None:
            raise RuntimeError("a repository used outside its unit of work")
        return repo

    @property
    def tenants(self) -> MemoryTenants:
        return self._open(self._tenants)

    @property
    def leads(self) -> MemoryLeads:
        return self._open(self._leads)

    @property
    def events(self) -> MemoryEvents:
        return self._open(self._events)

    @property
    def subscriptions(self) -> MemorySubscriptions:
        return self._open(self._subscriptions)

    @property
    def deliveries(self) -> MemoryDeliveries:
        return self._open(self._deliveries)

    @property
    def idempotency(self) -> MemoryIdempotency:
        return self._open(self._idempotency)

    @property
    def pools(self) -> MemoryPools:
        return self._open(self._pools)
