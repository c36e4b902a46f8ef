"""The storage ports: repositories, the unit of work over them, and the values they keep."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from leadhook.domain.catalog import Catalog
from leadhook.domain.circuit import CLOSED, Circuit
from leadhook.domain.lead import Lead
from leadhook.domain.signing import RotatingSecret

T = TypeVar("T")


class DeliveryStatus(StrEnum):
    """Where a delivery stands; the value is what the `deliveries.status` column and the API say.

    pending: not attempted yet (or requeued); failed: attempted, waiting for its next attempt;
    delivered and dead: settled.
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"


DELIVERY_STATUSES: tuple[str, ...] = tuple(s.value for s in DeliveryStatus)
UNFINISHED: tuple[DeliveryStatus, ...] = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
"""Statuses a worker may still attempt (the claim's and the due index's `status IN (...)`)."""
ENDED_BY_DELETE: dict[str, Any] = {
    "status": DeliveryStatus.DEAD,
    "last_error": "subscription deleted",
    "next_attempt_at": None,
    "locked_until": None,
    "locked_by": None,
}
"""What an unfinished delivery becomes when its subscription is deleted (with `updated_at`):
dead, and its lease ended, so that an attempt in flight then is recorded among the attempts
while its verdict (retry, or delivered) no longer finds the lease and leaves it dead."""
SETTLED: tuple[DeliveryStatus, ...] = (
    DeliveryStatus.FAILED,
    DeliveryStatus.DEAD,
    DeliveryStatus.DELIVERED,
)
"""Statuses in which no worker holds a delivery (failed: waiting for its next attempt), so a
retry may requeue it."""
REPLAYABLE: tuple[DeliveryStatus, ...] = (DeliveryStatus.DEAD, DeliveryStatus.DELIVERED)
"""Statuses a replay requeues when it names none."""
REPLAY_STATUSES: tuple[DeliveryStatus, ...] = (*REPLAYABLE, DeliveryStatus.FAILED)
"""Statuses a replay may name: the finished ones, and `failed` (waiting for a retry: made due
now with a fresh schedule, as a retry of each would; not one a worker is re-attempting)."""


@dataclass(frozen=True)
class Tenant:
    """A tenant (`mid`) and its catalog."""

    mid: str
    catalog: Catalog
    created_at: float


@dataclass(frozen=True)
class ApiKey:
    """A tenant API key; only its hash is stored, the key itself is shown once."""

    id: str
    mid: str
    prefix: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended: its exact JSON text and the columns it is found by."""

    event_id: str
    mid: str
    entity_id: str
    entity_version: int
    event_type: str
    create_time: int
    is_follow_up: int
    payload: str


@dataclass(frozen=True, kw_only=True)
class StoredEvent(NewEvent):
    """An event as the log keeps it: a `NewEvent` and the `seq` the store gave it."""

    seq: int


@dataclass(frozen=True)
class Subscription(RotatingSecret):
    """A webhook endpoint of a tenant and the event types it wants."""

    id: str
    mid: str
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    secret: str
    max_in_flight: int
    rate_limit_per_s: float | None
    created_at: float
    updated_at: float
    disabled_reason: str | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None
    first_failure_at: float | None = None
    circuit: Circuit = CLOSED

    def wants(self, event_type: str) -> bool:
        """Tell whether this subscription receives events of `event_type`."""
        return self.enabled and _wants(self.event_types, event_type)

    @property
    def recipient(self) -> Recipient:
        """This subscription as a behaviour's fan-out sees it."""
        return Recipient(self.id, self.event_types)


@dataclass(frozen=True, slots=True)
class Recipient:
    """An enabled, live subscription as a behaviour's fan-out reads it: which one, and the
    event types it wants. Every behaviour reads these; nothing else of the subscription (its
    URL, secrets, limits, circuit) is needed to write its delivery rows."""

    id: str
    event_types: tuple[str, ...]

    def wants(self, event_type: str) -> bool:
        """Tell whether the subscription receives events of `event_type`."""
        return _wants(self.event_types, event_type)


def _wants(event_types: tuple[str, ...], event_type: str) -> bool:
    """Whether a subscription to `event_types` (`*`: every type) receives `event_type`."""
    return "*" in event_types or event_type in event_types


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt of a delivery."""

    attempted_at: float
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str


@dataclass(frozen=True)
class Delivery:
    """One event to one subscription, with its attempts."""

    id: str
    mid: str
    subscription_id: str
    event_id: str
    entity_id: str
    entity_version: int
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    last_error: str | None = None
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)


def delivery_of(row: Any, attempts: Sequence[Attempt]) -> Delivery:
    """Return the `Delivery` of a stored row: anything with the `deliveries` columns as
    attributes (a SQL row, an in-memory row)."""
    return Delivery(
        id=row.id,
        mid=row.mid,
        subscription_id=row.subscription_id,
        event_id=row.event_id,
        entity_id=row.entity_id,
        entity_version=row.entity_version,
        event_type=row.event_type,
        status=DeliveryStatus(row.status),
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_error=row.last_error,
        attempts=tuple(attempts),
    )


def requeued(now: float) -> dict[str, Any]:
    """Return the column values that put a settled delivery back in the queue, with a fresh
    schedule (a retry, a replay). Its `last_error` goes with the schedule it ended: a pending
    delivery that still read "retries exhausted" told a monitor it was dead (a review); the
    attempts keep every error."""
    return {
        "status": DeliveryStatus.PENDING,
        "attempt_count": 0,
        "last_error": None,
        "next_attempt_at": now,
        "locked_until": None,
        "locked_by": None,
        "updated_at": now,
    }


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the cursor of the next (None on the last page)."""

    data: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class LeadFilter:
    """Filters of the lead listing."""

    owner: str | None = None
    lead_pool: str | None = None
    life_status: str | None = None
    voided: bool | None = None


@dataclass(frozen=True)
class DeliveryFilter:
    """Filters of the delivery listing across a tenant's subscriptions (None: any).

    `created_after` is inclusive and `created_before` exclusive (unix seconds).
    """

    status: str | None = None
    event_type: str | None = None
    entity_id: str | None = None
    subscription_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None


@dataclass(frozen=True)
class StoredResponse:
    """The first response to a request with an Idempotency-Key."""

    fingerprint: str
    status_code: int
    body: str


class TenantRepository(Protocol):
    """Tenants, their catalogs and API keys."""

    def get(self, mid: str, *, for_update: bool = False) -> Tenant | None: ...
    def page(self, cursor: str | None, limit: int) -> Page[Tenant]:
        """Every tenant, oldest first (then by `mid`), a page at a time."""
        ...

    def add(self, tenant: Tenant) -> None: ...
    def save_catalog(self, mid: str, catalog: Catalog) -> None: ...
    def add_key(self, key: ApiKey, key_hash: str) -> None: ...
    def key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    def get_key(self, mid: str, key_id: str) -> ApiKey | None: ...
    def revoke_key(self, mid: str, key_id: str, at: float) -> None: ...
    def list_keys(self, mid: str) -> list[ApiKey]: ...


class LeadRepository(Protocol):
    """Leads, read with a lock for a behaviour and written back with a version check."""

    def get(self, mid: str, lead_id: str, *, for_update: bool = False) -> Lead | None: ...
    def add(self, lead: Lead) -> None: ...
    def add_many(self, leads: Sequence[Lead]) -> None: ...
    def update(self, lead: Lead, before: Lead) -> None:
        """Write `lead` over `before`, the lead as this transaction read it (with its lock):
        `ConflictError` if the stored version is no longer `before.version`. Only what
        changed need be written."""

    def page(self, mid: str, filters: LeadFilter, cursor: str | None, limit: int) -> Page[Lead]: ...


class EventRepository(Protocol):
    """The append-only event log."""

    def append(self, events: Sequence[NewEvent]) -> Sequence[int | None]:
        """Append `events`; return each one's seq, or None where the store did not read it
        back (a deferred PostgreSQL group): `DeliveryRepository.enqueue` takes either."""
        ...

    def get(self, mid: str, event_id: str) -> StoredEvent | None: ...
    def page(
        self,
        mid: str,
        *,
        after: str | None,
        event_type: str | None,
        entity_id: str | None,
        limit: int,
        purged_before: Callable[[], float | None] | None = None,
    ) -> Page[StoredEvent]:
        """The tenant's events after the event `after` (None: from the first), oldest first.
        An `after` the log does not hold is a 400, unless it was minted before the time
        `purged_before()` says retention has purged events before (asked only then): the
        page starts from about where that event was (`cursor.purged_event_floor`)."""
        ...

    def timeline(
        self, mid: str, entity_id: str, *, is_follow_up: int | None, cursor: str | None, limit: int
    ) -> Page[StoredEvent]: ...
    def for_entity(self, mid: str, entity_id: str) -> list[StoredEvent]: ...


class SubscriptionRepository(Protocol):
    """Webhook subscriptions."""

    def get(self, mid: str, sub_id: str) -> Subscription | None: ...
    def add(self, sub: Subscription) -> None: ...
    def update(self, sub: Subscription) -> None: ...
    def close_circuit(
        self, mid: str, sub_id: str, now: float, url: str | None = None
    ) -> Circuit | None:
        """Close the subscription's circuit (its endpoint answered, or is another one now);
        with `url`, only while the subscription still points there. If the circuit was open
        and the subscription may send (enabled, not deleted), its failed deliveries whose last
        attempt got no answer (turned away, or sent without one) are due at `now`. Returns the
        circuit as it was (None: no such subscription, or at another URL)."""
        ...

    def delete(self, mid: str, sub_id: str, at: float) -> None: ...
    def page(self, mid: str, cursor: str | None, limit: int) -> Page[Subscription]: ...
    def enabled_for(self, mid: str) -> list[Recipient]:
        """The tenant's enabled, live subscriptions, as a behaviour's fan-out needs them."""
        ...

    def count_for_adding(self, mid: str) -> int:
        """How many live (not deleted) subscriptions the tenant has, counted so that creates
        running beside each other count one after another (the tenant's row locked)."""
        ...


class DeliveryRepository(Protocol):
    """Deliveries: the outbox rows written with each event, and their history."""

    def enqueue(self, rows: Sequence[tuple[Recipient, int | None, NewEvent]], now: float) -> int:
        """Write one pending delivery per (subscription, event seq, event); a seq of None is
        found by the event's id. Return how many were written."""
        ...

    def get(self, mid: str, delivery_id: str) -> Delivery | None: ...
    def page(
        self, mid: str, sub_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[Delivery]: ...
    def search(
        self, mid: str, filters: DeliveryFilter, cursor: str | None, limit: int
    ) -> Page[Delivery]: ...
    def retry(self, mid: str, delivery_id: str, now: float) -> Delivery | None: ...
    def replay(
        self,
        mid: str,
        sub_id: str,
        since: float,
        status: str | None,
        now: float,
        event_types: Collection[str] | None = None,
        *,
        after_seq: int | None = None,
        limit: int,
    ) -> tuple[int, int | None]:
        """Queue again a batch of the finished deliveries of `sub_id` created since `since`:
        only those of `event_types` when given (None: every type), at most `limit`, in seq
        order, after `after_seq` (None: from the window's start); answer how many, and the
        last seq taken when more may follow (None when the window is done). A batch walks one
        status on its index (`status` None, both, sorts every match)."""
        ...

    def missing_events(
        self,
        mid: str,
        sub_id: str,
        since: float,
        until: float | None,
        event_types: Collection[str] | None,
        limit: int,
        created_at: float = 0.0,
        resume_after: int | None = None,
    ) -> tuple[list[int], bool]:
        """The seqs of the tenant's logged events (of `event_types`, None: every type) created
        at or after `since` (whole seconds) and before `until` that `sub_id` has no delivery
        of, oldest first, at most `limit`; and whether more are missing. A read.

        An event from after the subscription was made (`created_at`) but before the time
        delivery retention has purged delivered deliveries up to is left out: it may well
        have been delivered, its row since purged.

        `resume_after`: the last seq an earlier call of the same window queued; the walk may
        start about where that event was logged (a store may ignore it: it only saves the
        walk over what that call queued)."""
        ...

    def queue_missing(self, mid: str, sub_id: str, seqs: Sequence[int], now: float) -> int:
        """Queue for the live subscription `sub_id` a pending delivery of each event of
        `seqs` it still has none of (found again: another replay may have queued some, a
        purge deleted some); how many. NotFoundError when the subscription is gone."""
        ...


class IdempotencyRepository(Protocol):
    """Responses to requests that carried an Idempotency-Key."""

    def get(self, mid: str, key: str) -> StoredResponse | None: ...
    def put(self, mid: str, key: str, response: StoredResponse, at: float) -> None: ...


@dataclass(frozen=True)
class PoolTurn:
    """Where a pool's automatic allocation stands: the member who got its last lead."""

    last_member: str | None = None
    turns: int = 0


@dataclass(frozen=True)
class AutomationRun:
    """One batch of one automatic rule in one lead pool of a tenant, and the leads it moved."""

    id: str
    mid: str
    rule: str
    lead_pool: str
    trigger: str  # "schedule" (the worker) or "manual" (POST /v1/automation/run)
    started_at: float
    finished_at: float
    lead_ids: tuple[str, ...]


@dataclass(frozen=True)
class DueLead:
    """A lead a reclaim rule is due for, and the position of the due listing after it."""

    id: str
    owner_since: float


class PoolRepository(Protocol):
    """What the pool rules read and keep: turns, loads, due leads, duplicates, runs."""

    def lock_turn(self, mid: str, lead_pool: str) -> PoolTurn: ...
    def save_turn(self, mid: str, lead_pool: str, turn: PoolTurn, at: float) -> None: ...
    def open_leads(self, mid: str, members: Sequence[str]) -> dict[str, int]: ...
    def held_in_pool(self, mid: str, lead_pool: str, member: str) -> int: ...
    def tenants_with_reclaim(self) -> list[Tenant]: ...
    def due_for_reclaim(
        self, mid: str, lead_pool: str, cutoff: float, after: DueLead | None, limit: int
    ) -> list[DueLead]: ...
    def lock_if_free(self, mid: str, lead_id: str) -> Lead | None: ...
    def duplicates(self, lead: Lead, limit: int) -> list[Lead]: ...
    def add_run(self, run: AutomationRun) -> None: ...
    def runs(self, mid: str, cursor: str | None, limit: int) -> Page[AutomationRun]: ...


class UnitOfWork(Protocol):
    """One transaction over every repository: all of it commits, or none."""

    @property
    def tenants(self) -> TenantRepository: ...
    @property
    def leads(self) -> LeadRepository: ...
    @property
    def events(self) -> EventRepository: ...
    @property
    def subscriptions(self) -> SubscriptionRepository: ...
    @property
    def deliveries(self) -> DeliveryRepository: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...
    @property
    def pools(self) -> PoolRepository: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class Transactor(Protocol):
    """Run units of work that write, each atomically, and tell when each is committed.

    `submit` returns at once; the future holds what `work` returned once its writes are
    committed, or the exception that undid them. An implementation may commit several units
    together (group commit): each still succeeds or fails alone. A unit changes rows through
    the unit of work's repositories and nothing else (no schema change, no setting of the
    connection): SQLite's group tells a unit that failed before writing from one that
    failed after by the rows it changed (adapters/db/writer.py `_run_unguarded`).

    `lock_key` names the lead whose row `work` locks first (None: it locks none). Units
    committed together run in the order of their keys, so that two transactions in flight
    at once take their leads' locks in one order and cannot deadlock on them. `route` names
    the tenant: an implementation with several writers gives all of one tenant's units to
    the same one (a pool's turn lock is taken between lead locks, which no order of units
    can put in one order across writers).
    """

    def submit(
        self,
        work: Callable[[UnitOfWork], T],
        lock_key: str | None = None,
        route: str | None = None,
    ) -> Future[T]: ...


class InlineTransactor:
    """A Transactor that runs each unit of work at once, in its own transaction."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    def submit(
        self,
        work: Callable[[UnitOfWork], T],
        lock_key: str | None = None,
        route: str | None = None,
    ) -> Future[T]:
        """Run `work` in a new unit of work and commit it; the future is already resolved."""
        future: Future[T] = Future()
        try:
            with self._uow() as uow:
                result = work(uow)
                uow.commit()
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future


class Readiness(Protocol):
    """Tell whether the database answers (`GET /readyz`)."""

    def check(self) -> str:
        """Run a query on the database and return its kind (`sqlite`, `postgresql`); raise
        whatever the driver raises when it cannot be reached."""
        ...


class Clock(Protocol):
    """Tell the time as unix seconds."""

    def __call__(self) -> float: ...


class IdFactory(Protocol):
    """Mint ids: 22-character shortuuids for objects, time-ordered ULIDs for events."""

    def short(self) -> str: ...
    def event_id(self, at: float) -> str: ...
    def secret(self) -> str: ...
