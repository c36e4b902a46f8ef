"""The composition root: build settings, engine and services; nothing happens at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Engine

from leadhook.adapters.db import migrate
from leadhook.adapters.db.engine import WriteGate, make_engine
from leadhook.adapters.db.uow import SqlUnitOfWork
from leadhook.adapters.system import SystemClock, SystemIds
from leadhook.services.events import EventService
from leadhook.services.leads import LeadService
from leadhook.services.ports import Clock, IdFactory, UnitOfWorkFactory
from leadhook.services.tenants import TenantService
from leadhook.services.wakeup import Wakeup
from leadhook.settings import Settings


@dataclass
class Container:
    """Everything a process of leadhook runs on, built once by `build`."""

    settings: Settings
    engine: Engine
    uow: UnitOfWorkFactory
    readonly_uow: UnitOfWorkFactory
    clock: Clock
    ids: IdFactory
    tenants: TenantService
    leads: LeadService
    events: EventService
    wakeup: Wakeup = field(default_factory=Wakeup)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def build(
    settings: Settings,
    *,
    run_migrations: bool = True,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
) -> Container:
    """Wire the real adapters into the services for `settings`."""
    engine = make_engine(settings.database_url)
    if run_migrations:
        migrate.upgrade(engine)
    gate = WriteGate(engine)
    uow: UnitOfWorkFactory = partial(SqlUnitOfWork, engine, gate)
    readonly: UnitOfWorkFactory = partial(SqlUnitOfWork, engine, gate, readonly=True)
    clock = clock or SystemClock()
    ids = ids or SystemIds()
    wakeup = Wakeup()
    return Container(
        settings=settings,
        engine=engine,
        uow=uow,
        readonly_uow=readonly,
        clock=clock,
        ids=ids,
        tenants=TenantService(uow, clock, ids, readonly_uow=readonly),
        leads=LeadService(uow, clock, ids, on_enqueued=wakeup.notify, readonly_uow=readonly),
        events=EventService(readonly),
        wakeup=wakeup,
    )
