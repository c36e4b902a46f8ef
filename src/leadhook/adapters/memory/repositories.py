"""In-memory tenants, leads, events and idempotency keys, behaving as the SQL repositories do."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields

from leadhook.adapters.memory.state import (
    IdempotencyRow,
    KeyRow,
    LeadRow,
    MemoryState,
    TenantRow,
)
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import catalog_from_json, catalog_to_json
from leadhook.domain.errors import BadRequestError, ConflictError
from leadhook.domain.jsontext import dumps
from leadhook.domain.lead import Lead
from leadhook.services import cursor as cursors
from leadhook.services.ports import (
    ApiKey,
    LeadFilter,
    NewEvent,
    Page,
    StoredEvent,
    StoredResponse,
    Tenant,
)


class IntegrityViolation(Exception):
    """A write that a SQL constraint would refuse (unique key, foreign key)."""


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(row.mid, catalog_from_json(json.loads(row.catalog)), row.created_at)


class MemoryTenants:
    """Tenants, their catalogs and API keys."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def get(self, mid: str, *, for_update: bool = False) -> Tenant | None:
        row = self._s.tenants.get(mid)
        return None if row is None else _tenant(row)

    def page(self, cursor: str | None, limit: int) -> Page[Tenant]:
        rows = sorted(self._s.tenants.values(), key=lambda r: (r.created_at, r.mid))
        after = cursors.decode_keyed(cursor)
        if after is not None:
            rows = [r for r in rows if (r.created_at, r.mid) > after]
        tenants = [_tenant(r) for r in rows[:limit]]
        last = tenants[-1] if len(rows) > limit else None
        return Page(
            tenants, None if last is None else cursors.encode_keyed(last.created_at, last.mid)
        )

    def add(self, tenant: Tenant) -> None:
        if tenant.mid in self._s.tenants:
            raise ConflictError(f"tenant {tenant.mid!r} already exists")
        self._s.tenants[tenant.mid] = TenantRow(
            tenant.mid, dumps(catalog_to_json(tenant.catalog)), tenant.created_at
        )

    def save_catalog(self, mid: str, catalog: Catalog) -> None:
        row = self._s.tenants.get(mid)
        if row is not None:
            self._s.tenants[mid] = TenantRow(mid, dumps(catalog_to_json(catalog)), row.created_at)

    def add_key(self, key: ApiKey, key_hash: str) -> None:
        if key.mid not in self._s.tenants:
            raise IntegrityViolation(f"api_keys.mid {key.mid!r} names no tenant")
        if key.id in self._s.keys or any(r.key_hash == key_hash for r in self._s.keys.values()):
            raise IntegrityViolation(f"api key {key.id!r} or its hash exists already")
        self._s.keys[key.id] = KeyRow(key, key_hash)

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((r.key for r in self._s.keys.values() if r.key_hash == key_hash), None)

    def get_key(self, mid: str, key_id: str) -> ApiKey | None:
        row = self._s.keys.get(key_id)
        return row.key if row is not None and row.key.mid == mid else None

    def revoke_key(self, mid: str, key_id: str, at: float) -> None:
        row = self._s.keys.get(key_id)
        if row is not None and row.key.mid == mid:
            key = row.key
            revoked = ApiKey(key.id, key.mid, key.prefix, key.created_at, at)
            self._s.keys[key_id] = KeyRow(revoked, row.key_hash)

    def list_keys(self, mid: str) -> list[ApiKey]:
        keys = [r.key for r in self._s.keys.values() if r.key.mid == mid]
        return sorted(keys, key=lambda k: k.created_at)


def _lead_row(seq: int, lead: Lead) -> LeadRow:
    return LeadRow(
        seq=seq,
        id=lead.id,
        mid=lead.mid,
        version=lead.version,
        owner=lead.owner,
        lead_pool=lead.lead_pool,
        life_status=lead.life_status,
        voided=lead.voided,
        state=lead.stored_text,
    )


def _lead(row: LeadRow) -> Lead:
    return Lead.from_json(json.loads(row.state))


class MemoryLeads:
    """Leads, stored as the JSON text SQL stores, so what comes back is a fresh copy."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def get(self, mid: str, lead_id: str, *, for_update: bool = False) -> Lead | None:
        row = self._s.leads.get(lead_id)
        return None if row is None or row.mid != mid else _lead(row)

    def add(self, lead: Lead) -> None:
        if lead.id in self._s.leads:
            raise IntegrityViolation(f"lead {lead.id!r} exists already")
        self._s.lead_seq += 1
        self._s.leads[lead.id] = _lead_row(self._s.lead_seq, lead)

    def add_many(self, leads: Sequence[Lead]) -> None:
        for lead in leads:
            self.add(lead)

    def update(self, lead: Lead, before: Lead) -> None:
        row = self._s.leads.get(lead.id)
        if row is None or row.version != before.version:
            raise ConflictError(f"lead {lead.id} changed concurrently; retry the request")
        self._s.leads[lead.id] = _lead_row(row.seq, lead)

    def page(self, mid: str, filters: LeadFilter, cursor: str | None, limit: int) -> Page[Lead]:
        after = cursors.decode(cursor)
        rows = sorted(
            (
                r
                for r in self._s.leads.values()
                if r.mid == mid
                and (after is None or r.seq > after)
                and (filters.owner is None or r.owner == filters.owner)
                and (filters.lead_pool is None or r.lead_pool == filters.lead_pool)
                and (filters.life_status is None or r.life_status == filters.life_status)
                and (filters.voided is None or r.voided == filters.voided)
            ),
            key=lambda r: r.seq,
        )
        chunk = rows[:limit]
        nxt = cursors.encode(chunk[-1].seq) if len(rows) > limit else None
        return Page([_lead(r) for r in chunk], nxt)


class MemoryEvents:
    """The append-only event log; `seq` orders it."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        seqs: list[int] = []
        for ev in events:
            if (ev.entity_id, ev.entity_version) in self._s.event_versions:
                raise ConflictError(
                    f"lead {ev.entity_id} already has version {ev.entity_version}; retry"
                )
            if ev.event_id in self._s.event_index:
                raise ConflictError(f"event {ev.event_id} exists already")
            self._s.event_seq += 1
            seq = self._s.event_seq
            self._s.events.append(
                StoredEvent(seq=seq, **{f.name: getattr(ev, f.name) for f in fields(NewEvent)})
            )
            self._s.event_index[ev.event_id] = len(self._s.events) - 1
            self._s.event_versions.add((ev.entity_id, ev.entity_version))
            seqs.append(seq)
        return seqs

    def get(self, mid: str, event_id: str) -> StoredEvent | None:
        pos = self._s.event_index.get(event_id)
        event = None if pos is None else self._s.events[pos]
        return event if event is not None and event.mid == mid else None

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
        start = 0
        if after:
            anchor = self.get(mid, after)
            if anchor is not None:
                start = anchor.seq
            else:
                floor = cursors.purged_event_floor(after, purged_before and purged_before())
                if floor is None:
                    raise BadRequestError(f"after={after!r} names no event of this tenant")
                first = next(
                    (e.seq for e in self._s.events if e.mid == mid and e.event_id >= floor), None
                )
                if first is None:
                    return Page([], None)
                start = first - 1
        rows = [
            e
            for e in self._s.events
            if e.mid == mid
            and e.seq > start
            and (not event_type or e.event_type == event_type)
            and (not entity_id or e.entity_id == entity_id)
        ]
        data = rows[:limit]
        return Page(data, data[-1].event_id if len(rows) > limit else None)

    def timeline(
        self, mid: str, entity_id: str, *, is_follow_up: int | None, cursor: str | None, limit: int
    ) -> Page[StoredEvent]:
        before = cursors.decode(cursor)
        rows = sorted(
            (
                e
                for e in self._s.events
                if e.mid == mid
                and e.entity_id == entity_id
                and (before is None or e.entity_version < before)
                and (is_follow_up is None or e.is_follow_up == is_follow_up)
            ),
            key=lambda e: -e.entity_version,
        )
        data = rows[:limit]
        nxt = cursors.encode(data[-1].entity_version) if len(rows) > limit else None
        return Page(data, nxt)

    def for_entity(self, mid: str, entity_id: str) -> list[StoredEvent]:
        rows = [e for e in self._s.events if e.mid == mid and e.entity_id == entity_id]
        return sorted(rows, key=lambda e: e.entity_version)


class MemoryIdempotency:
    """Stored first responses of requests with an Idempotency-Key."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def get(self, mid: str, key: str) -> StoredResponse | None:
        row = self._s.idempotency.get((mid, key))
        return None if row is None else StoredResponse(row.fingerprint, row.status_code, row.body)

    def put(self, mid: str, key: str, response: StoredResponse, at: float) -> None:
        if (mid, key) in self._s.idempotency:
            raise ConflictError("a request with this Idempotency-Key is in progress")
        self._s.idempotency[(mid, key)] = IdempotencyRow(
            response.fingerprint, response.status_code, response.body, at
        )

    def purge_before(self, at: float) -> int:
        """Forget keys older than `at`."""
        old = [k for k, row in self._s.idempotency.items() if row.created_at < at]
        for k in old:
            del self._s.idempotency[k]
        return len(old)
