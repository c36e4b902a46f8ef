"""The composition root: build settings, engine and services; nothing happens at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Engine

from leadhook.adapters.db import migrate
from leadhook.adapters.db.checkpoint import WalCheckpointer
from leadhook.adapters.db.console import SqlConsoleQueries
from leadhook.adapters.db.engine import WriteGate, is_sqlite, make_engine, others_using
from leadhook.adapters.db.health import SqlReadiness
from leadhook.adapters.db.keycheck import forget_key, holds_secrets, key_opens, prepare_secrets
from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.adapters.db.retention import SqlRetention, delivery_backlog, delivery_outcomes
from leadhook.adapters.db.uow import SqlUnitOfWork
from leadhook.adapters.db.writer import GroupWriter
from leadhook.adapters.http.sender import HttpSender, check_name_now
from leadhook.adapters.secretbox import SecretKeyError, attach, default_key_file, load_box
from leadhook.adapters.system import SystemClock, SystemIds
from leadhook.domain.signing import generate_secret
from leadhook.services.automation import AutomationScheduler, AutomationService, PoolService
from leadhook.services.console import ConsoleService
from leadhook.services.deliveries import DeliveryService
from leadhook.services.dispatcher import Dispatcher
from leadhook.services.events import EventService
from leadhook.services.leads import LeadService
from leadhook.services.ports import Clock, IdFactory, Readiness, Sender, UnitOfWorkFactory
from leadhook.services.retention import Retention
from leadhook.services.senders import SchemeSenders
from leadhook.services.subscriptions import SubscriptionService
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
    subscriptions: SubscriptionService
    console: ConsoleService
    deliveries: DeliveryService
    gate: WriteGate
    writer: GroupWriter
    pools: PoolService
    automation: AutomationService
    readiness: Readiness
    wakeup: Wakeup = field(default_factory=Wakeup)

    def make_dispatcher(
        self, *, concurrency: int | None = None, worker_id: str | None = None
    ) -> Dispatcher:
        """Build a delivery loop over this database: its queue, its sender, these settings."""
        s = self.settings
        conc = concurrency or s.concurrency
        return Dispatcher(
            SqlDeliveryQueue(self.engine, self.gate),
            partial(make_sender, s, conc),
            policy=s.retry_policy,
            clock=self.clock,
            wakeup=self.wakeup,
            concurrency=conc,
            lease_seconds=s.lease_seconds,
            timeout=s.delivery_timeout,
            auto_disable_after=s.auto_disable_after,
            worker_id=worker_id,
            poll_interval=s.poll_interval,
            # Whatever process delivers also purges: retention runs beside the delivery loop.
            retention=self.make_retention(),
        )

    def make_retention(self) -> Retention:
        """Build the purge of old rows over this database, with these settings."""
        return Retention(SqlRetention(self.engine, self.gate), self.settings.retention, self.clock)

    def purge_counts(self) -> dict[str, int]:
        """Return the rows retention purged per table since the database was created."""
        return SqlRetention(self.engine, self.gate).counts()

    def delivery_outcomes(self) -> dict[str, int]:
        """What every delivery loop did since the counters began (migration 0007), by outcome."""
        return delivery_outcomes(self.engine)

    def delivery_backlog(self) -> tuple[int, float | None]:
        """How many deliveries wait for enabled subscriptions, and when the earliest is due."""
        return delivery_backlog(self.engine)

    def make_checkpointer(self) -> WalCheckpointer | None:
        """Build the thread that copies SQLite's WAL into the database file; None otherwise."""
        return WalCheckpointer.for_engine(self.engine)

    def make_automation(self) -> AutomationScheduler | None:
        """Build the loop that runs the due pool rules, or None when turned off (interval 0)."""
        interval = self.settings.automation_interval
        return AutomationScheduler(self.automation, interval) if interval > 0 else None

    def close(self) -> None:
        """Finish queued writes, then release the database connections."""
        self.writer.close()
        self.engine.dispose()


def _events_purged_before(settings: Settings, clock: Clock) -> float | None:
    """The time before which this process's retention purges events now; None when it keeps
    them all. (The SQL log also reads the horizon the purges kept in the database.)"""
    keep = settings.retention.event_retention
    return None if keep is None else clock() - keep


def make_sender(settings: Settings, limit: int) -> Sender:
    """Build the senders of every URL scheme (HTTP: up to `limit` connections); call it inside
    its event loop."""
    http = HttpSender(
        timeout=settings.delivery_timeout,
        allow_private=settings.allow_private_targets,
        limit=limit,
    )
    return SchemeSenders({"https": http, "http": http})


def build(
    settings: Settings,
    *,
    run_migrations: bool = True,
    upgrade: bool = True,
    rewrite_secrets: bool = True,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
) -> Container:
    """Wire the real adapters into the services for `settings`.

    With `run_migrations` (a process starting), the database is migrated (or, without
    `upgrade`, a listing's start, only required to be at the newest migration already), the
    secret key is checked against it and, with `rewrite_secrets` (a service starting, not a
    command-line job), stored webhook secrets are brought under the first key.
    """
    # Each PostgreSQL writer thread keeps a connection for as long as it lives: the pool has
    # its 16 for everything else besides them (with 16 writer threads and a pool of 16, the
    # API's reads waited for a connection that never came free).
    engine = make_engine(settings.database_url, pool_size=16 + settings.writer_threads)
    key_file = None if settings.secret_keys else default_key_file(settings.database_url)
    # A start (`run_migrations`) reads the database before a key file is made: an unreachable
    # database stops it here, as the migrations would.
    if run_migrations and key_file is not None and not key_file.exists() and holds_secrets(engine):
        # A database copied without its key file: a new key could decrypt none of its
        # secrets. Say what is missing, and create nothing.
        # (SQLite's key file sits beside the database; PostgreSQL's in the directory the
        # first process started in.)
        where = "beside the database" if is_sqlite(engine) else "into this directory"
        engine.dispose()
        raise SecretKeyError(
            f"this database's webhook secrets are encrypted, and their key file {key_file}"
            f" is missing: copy the key file {where} (it was made on the first"
            " start, or restored with the database's backup), or set LEADHOOK_SECRET_KEY"
        )
    box = load_box(settings.secret_keys, settings.database_url)
    attach(engine, box)
    if run_migrations:
        if upgrade:
            migrate.upgrade(engine, secret_box=box)
        else:
            migrate.require_head(engine)
        migrate.check_schema(engine)
        prepare_secrets(engine, box, rewrite=rewrite_secrets)
    gate = WriteGate(engine)
    clock = clock or SystemClock()
    ids = ids or SystemIds()
    uow: UnitOfWorkFactory = partial(SqlUnitOfWork, engine, gate, ids=ids)
    readonly: UnitOfWorkFactory = partial(SqlUnitOfWork, engine, gate, ids=ids, readonly=True)
    wakeup = Wakeup()
    # SQLite's behaviours are written on the event loop; PostgreSQL's on writer threads.
    threads = None if is_sqlite(engine) else settings.writer_threads
    writer = GroupWriter(engine, gate, ids=ids, threads=threads)
    leads = LeadService(
        uow, clock, ids, on_enqueued=wakeup.notify, readonly_uow=readonly, transactor=writer
    )
    return Container(
        settings=settings,
        engine=engine,
        uow=uow,
        readonly_uow=readonly,
        clock=clock,
        ids=ids,
        tenants=TenantService(uow, clock, ids, readonly_uow=readonly),
        leads=leads,
        events=EventService(readonly, partial(_events_purged_before, settings, clock)),
        subscriptions=SubscriptionService(
            uow,
            clock,
            ids,
            partial(make_sender, settings, 1),
            allow_private=settings.allow_private_targets,
            readonly_uow=readonly,
            on_enqueued=wakeup.notify,
            on_stopped=wakeup.notify_stopped,
            max_subscriptions=settings.max_subscriptions,
            check_name=check_name_now,
        ),
        console=ConsoleService(readonly, SqlConsoleQueries(engine), clock),
        deliveries=DeliveryService(readonly),
        gate=gate,
        writer=writer,
        pools=PoolService(leads, readonly),
        automation=AutomationService(leads, uow, clock, ids, readonly_uow=readonly),
        readiness=SqlReadiness(engine, box),
        wakeup=wakeup,
    )


def forget_lost_key(settings: Settings) -> list[tuple[str, str]]:
    """Let a database whose secret key is lost for good start again on a new key.

    Refused (SecretKeyError) when there is nothing to forget, or when the configured key (or
    the key file beside the database) still opens it: then nothing is lost, and forgetting
    would only throw the subscribers' secrets away. Otherwise every subscription gets a new
    random secret nobody knows (deliveries fail, and are retried, until it is rotated) and
    the key's check value goes; returns (tenant, id) of the subscriptions to rotate.
    """
    engine = make_engine(settings.database_url)
    try:
        migrate.check_schema(engine)
        if not holds_secrets(engine):
            raise SecretKeyError(
                "this database holds no key's check value: nothing to forget (leadhook starts"
                " on it with any key)"
            )
        key_file = None if settings.secret_keys else default_key_file(settings.database_url)
        if settings.secret_keys or (key_file is not None and key_file.exists()):
            box = load_box(settings.secret_keys, settings.database_url)
            if key_opens(engine, box):
                raise SecretKeyError(
                    f"{box.source} opens this database: its key is not lost, nothing to forget"
                    " (to rotate keys, list the new key first and the old one after it)"
                )
        # Every service must be stopped: a running one keeps the old secrets in memory and
        # writes under its key, and the forgotten secrets are plaintext until the next start.
        others = others_using(engine)
        if others:
            raise SecretKeyError(
                f"other processes still use this database ({', '.join(others[:5])}"
                f"{' and more' if len(others) > 5 else ''}): stop every leadhook process"
                " (and close anything else that has it open) first, then run this again"
            )
        return forget_key(engine, lambda: generate_secret(os.urandom(32)))
    finally:
        engine.dispose()
