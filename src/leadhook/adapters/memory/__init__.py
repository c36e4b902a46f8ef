"""In-memory fakes of every port the services declare, for fast unit tests.

`MemoryStore().uow` is a `UnitOfWorkFactory`: each unit of work works on a snapshot of the
store and publishes it on commit, so a unit of work that fails half-way changes nothing.
"""

from typing import TYPE_CHECKING

from leadhook.adapters.memory.outbox import MemoryDeliveries, MemorySubscriptions
from leadhook.adapters.memory.queue import MemoryDeliveryQueue
from leadhook.adapters.memory.repositories import (
    IntegrityViolation,
    MemoryEvents,
    MemoryIdempotency,
    MemoryLeads,
    MemoryTenants,
)
from leadhook.adapters.memory.state import MemoryState
from leadhook.adapters.memory.system import FakeClock, SequentialIds
from leadhook.adapters.memory.uow import MemoryStore, MemoryUnitOfWork

__all__ = [
    "FakeClock",
    "IntegrityViolation",
    "MemoryDeliveries",
    "MemoryDeliveryQueue",
    "MemoryEvents",
    "MemoryIdempotency",
    "MemoryLeads",
    "MemoryState",
    "MemoryStore",
    "MemorySubscriptions",
    "MemoryTenants",
    "MemoryUnitOfWork",
    "SequentialIds",
]

if TYPE_CHECKING:  # mypy --strict proves that the fakes implement the ports.
    from leadhook.services import ports

    _uow: ports.UnitOfWorkFactory = MemoryStore().uow
    _queue: ports.DeliveryQueue = MemoryDeliveryQueue(MemoryStore())
    _clock: ports.Clock = FakeClock()
    _ids: ports.IdFactory = SequentialIds()
