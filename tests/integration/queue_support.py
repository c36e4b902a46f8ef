"""What the queue contract tests need on every backend: an empty database, or the memory store.

`MemoryContainer` wires the services on a `MemoryStore`, as `bootstrap.build` wires them on a
database, so the same contract tests drive `MemoryDeliveryQueue` and `SqlDeliveryQueue`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import make_engine
from leadhook.adapters.memory import MemoryStore
from leadhook.adapters.memory.queue import MemoryDeliveryQueue
from leadhook.adapters.system import SystemClock, SystemIds
from leadhook.services.events import EventService
from leadhook.services.leads import LeadService
from leadhook.services.ports import Sender
from leadhook.services.subscriptions import SubscriptionService
from leadhook.services.tenants import TenantService


def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Return the URL of an empty, migrated database of `backend` (`sqlite` or `postgresql`)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/queue.db"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        return url
    url: str = request.getfixturevalue("empty_session_postgres")
    return url


def _no_sender() -> Sender:
    raise AssertionError("the queue contract tests send nothing")


@dataclass
class MemoryContainer:
    """The services over one in-memory store (with the system clock, as the queue's callers
    pass real times), and the store's delivery queue."""

    store: MemoryStore = field(default_factory=MemoryStore)
    clock: Callable[[], float] = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        uow, ids = self.store.uow, SystemIds()
        self.tenants = TenantService(uow, self.clock, ids)
        self.leads = LeadService(uow, self.clock, ids)
        self.events = EventService(uow)
        self.subscriptions = SubscriptionService(
            uow, self.clock, ids, _no_sender, allow_private=True
        )

    def queue(self) -> MemoryDeliveryQueue:
        """Return a queue handle on the store (several handles share it, as workers would)."""
        return MemoryDeliveryQueue(self.store)

    def delivery_outcomes(self) -> dict[str, int]:
        """What the records counted, as `Container.delivery_outcomes` reads it."""
        return dict(self.store.state.outcomes)

    def close(self) -> None:
        """Nothing to release: the store goes with the object."""
