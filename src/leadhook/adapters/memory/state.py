"""The rows an in-memory store keeps: the same columns as the SQL tables, in dicts and lists."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any

from leadhook.services.ports import (
    ApiKey,
    Attempt,
    AutomationRun,
    DeliveryStatus,
    PoolTurn,
    StoredEvent,
    Subscription,
)


@dataclass(frozen=True)
class TenantRow:
    """A row of `tenants`: the catalog kept as the JSON text SQL keeps."""

    mid: str
    catalog: str
    created_at: float


@dataclass(frozen=True)
class KeyRow:
    """A row of `api_keys`."""

    key: ApiKey
    key_hash: str


@dataclass(frozen=True)
class LeadRow:
    """A row of `leads`: the columns that filter and the whole state as JSON text."""

    seq: int
    id: str
    mid: str
    version: int
    owner: str | None
    lead_pool: str | None
    life_status: str | None
    voided: bool
    state: str


@dataclass(frozen=True)
class SubscriptionRow:
    """A row of `subscriptions`; a deleted one is kept but hidden."""

    sub: Subscription
    deleted_at: float | None = None


@dataclass(frozen=True)
class DeliveryRow:
    """A row of `deliveries`."""

    seq: int
    id: str
    mid: str
    subscription_id: str
    event_seq: int
    event_id: str
    entity_id: str
    entity_version: int
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    locked_until: float | None = None
    locked_by: str | None = None
    last_error: str | None = None

    def with_(self, **changes: Any) -> DeliveryRow:
        """Return the row with columns changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class IdempotencyRow:
    """A row of `idempotency_keys`."""

    fingerprint: str
    status_code: int
    body: str
    created_at: float


@dataclass
class MemoryState:
    """Every table of the store; rows are immutable, so copying the containers copies it all."""

    tenants: dict[str, TenantRow] = field(default_factory=dict)
    keys: dict[str, KeyRow] = field(default_factory=dict)
    leads: dict[str, LeadRow] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    # The unique indexes of `events`: event_id → position in `events`, (entity_id, version).
    event_index: dict[str, int] = field(default_factory=dict)
    event_versions: set[tuple[str, int]] = field(default_factory=set)
    subscriptions: dict[str, SubscriptionRow] = field(default_factory=dict)
    deliveries: dict[int, DeliveryRow] = field(default_factory=dict)
    attempts: dict[int, tuple[Attempt, ...]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # delivery_outcomes, summed
    idempotency: dict[tuple[str, str], IdempotencyRow] = field(default_factory=dict)
    # Pool automation: (mid, lead_pool) → turn; runs in insertion (seq) order.
    pool_turns: dict[tuple[str, str], PoolTurn] = field(default_factory=dict)
    automation_runs: list[AutomationRun] = field(default_factory=list)
    # Sequences, like SQL's autoincrement columns.
    lead_seq: int = 0
    event_seq: int = 0
    delivery_seq: int = 0

    def copy(self) -> MemoryState:
        """Return an independent copy (a snapshot a unit of work may change freely)."""
        # A shallow copy of each field: the containers are new, the immutable rows shared.
        return MemoryState(**{f.name: copy.copy(getattr(self, f.name)) for f in fields(self)})
