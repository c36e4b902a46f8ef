"""In-memory subscriptions and deliveries, behaving as the SQL outbox repositories do."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from leadhook.adapters.memory.state import DeliveryRow, MemoryState, SubscriptionRow
from leadhook.domain.attempts import UNANSWERED
from leadhook.domain.circuit import CLOSED, Circuit
from leadhook.domain.errors import NotFoundError
from leadhook.services import cursor as cursors
from leadhook.services.ports import (
    ENDED_BY_DELETE,
    REPLAYABLE,
    SETTLED,
    UNFINISHED,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    NewEvent,
    Page,
    Recipient,
    Subscription,
    delivery_of,
    requeued,
)


class MemorySubscriptions:
    """Webhook subscriptions; a deleted one is kept (its deliveries refer to it) but hidden."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def _live(self, mid: str, sub_id: str) -> SubscriptionRow | None:
        row = self._s.subscriptions.get(sub_id)
        return row if row is not None and row.sub.mid == mid and row.deleted_at is None else None

    def get(self, mid: str, sub_id: str) -> Subscription | None:
        row = self._live(mid, sub_id)
        return None if row is None else row.sub

    def add(self, sub: Subscription) -> None:
        if sub.id in self._s.subscriptions:
            raise ValueError(f"subscription {sub.id!r} exists already")
        self._s.subscriptions[sub.id] = SubscriptionRow(sub)

    def update(self, sub: Subscription) -> None:
        row = self._s.subscriptions.get(sub.id)
        if row is not None and row.sub.mid == sub.mid:
            # As in SQL, id, mid, created_at and the circuit (the dispatcher's to change, and
            # `close_circuit`'s) are never overwritten.
            kept = replace(sub, created_at=row.sub.created_at, circuit=row.sub.circuit)
            self._s.subscriptions[sub.id] = SubscriptionRow(kept, row.deleted_at)

    def close_circuit(
        self, mid: str, sub_id: str, now: float, url: str | None = None
    ) -> Circuit | None:
        row = self._s.subscriptions.get(sub_id)
        if row is None or row.sub.mid != mid or url not in (None, row.sub.url):
            return None
        closed = replace(row.sub, circuit=CLOSED)
        self._s.subscriptions[sub_id] = SubscriptionRow(closed, row.deleted_at)
        if row.sub.circuit.retry_at is None or not row.sub.enabled or row.deleted_at:
            return row.sub.circuit  # as in SQL: only an open circuit of one that may send
        # What got no answer (turned away or not) is due at once.
        for seq, d in list(self._s.deliveries.items()):
            if (
                d.subscription_id == sub_id
                and d.status == DeliveryStatus.FAILED
                and d.next_attempt_at is not None
                and d.next_attempt_at > now
                and d.locked_until is None
                and (d.last_error or "").startswith(UNANSWERED)
            ):
                self._s.deliveries[seq] = d.with_(next_attempt_at=now)
        return row.sub.circuit

    def delete(self, mid: str, sub_id: str, at: float) -> None:
        row = self._s.subscriptions.get(sub_id)
        if row is None or row.sub.mid != mid:
            return
        gone = replace(row.sub, enabled=False, disabled_reason="deleted")
        self._s.subscriptions[sub_id] = SubscriptionRow(gone, at)
        # Nothing more is sent to a deleted endpoint: its unfinished deliveries end as dead.
        for seq, d in list(self._s.deliveries.items()):
            if d.subscription_id == sub_id and d.status in UNFINISHED:
                self._s.deliveries[seq] = d.with_(**ENDED_BY_DELETE, updated_at=at)

    def count_for_adding(self, mid: str) -> int:
        return sum(
            1 for r in self._s.subscriptions.values() if r.sub.mid == mid and r.deleted_at is None
        )

    def page(self, mid: str, cursor: str | None, limit: int) -> Page[Subscription]:
        subs = sorted(
            (
                r.sub
                for r in self._s.subscriptions.values()
                if r.sub.mid == mid and r.deleted_at is None
            ),
            key=lambda s: (s.created_at, s.id),
        )
        after = cursors.decode_keyed(cursor)
        if after is not None:
            subs = [s for s in subs if (s.created_at, s.id) > after]
        more = len(subs) > limit
        subs = subs[:limit]
        return Page(subs, cursors.encode_keyed(subs[-1].created_at, subs[-1].id) if more else None)

    def enabled_for(self, mid: str) -> list[Recipient]:
        return [
            r.sub.recipient
            for r in self._s.subscriptions.values()
            if r.sub.mid == mid and r.sub.enabled and r.deleted_at is None
        ]


class MemoryDeliveries:
    """Delivery rows: written in the unit of work of their event, then worked by the dispatcher."""

    def __init__(self, state: MemoryState, new_id: Callable[[], str]) -> None:
        self._s = state
        self._new_id = new_id

    def enqueue(self, rows: Sequence[tuple[Recipient, int | None, NewEvent]], now: float) -> int:
        for sub, known, ev in rows:
            seq = known
            if seq is None:  # not read back by the event log: found by the event's id
                stored = self._s.events[self._s.event_index[ev.event_id]]
                assert stored is not None
                seq = stored.seq
            self._add(sub.id, seq, ev, now)
        return len(rows)

    def _add(self, sub_id: str, event_seq: int, ev: NewEvent, now: float) -> None:
        """A new pending delivery of the event (at `event_seq` in the log) to `sub_id`."""
        self._s.delivery_seq += 1
        self._s.deliveries[self._s.delivery_seq] = DeliveryRow(
            seq=self._s.delivery_seq,
            id=self._new_id(),
            mid=ev.mid,
            subscription_id=sub_id,
            event_seq=event_seq,
            event_id=ev.event_id,
            entity_id=ev.entity_id,
            entity_version=ev.entity_version,
            event_type=ev.event_type,
            status=DeliveryStatus.PENDING,
            attempt_count=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )

    def _delivery(self, row: DeliveryRow) -> Delivery:
        return delivery_of(row, self._s.attempts.get(row.seq, ()))

    def _row(self, mid: str, delivery_id: str) -> DeliveryRow | None:
        return next(
            (d for d in self._s.deliveries.values() if d.mid == mid and d.id == delivery_id), None
        )

    def get(self, mid: str, delivery_id: str) -> Delivery | None:
        row = self._row(mid, delivery_id)
        return None if row is None else self._delivery(row)

    def page(
        self, mid: str, sub_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        return self.search(
            mid, DeliveryFilter(status=status or None, subscription_id=sub_id), cursor, limit
        )

    def search(
        self, mid: str, filters: DeliveryFilter, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        before = cursors.decode(cursor)
        f = filters
        rows = sorted(
            (
                d
                for d in self._s.deliveries.values()
                if d.mid == mid
                and (before is None or d.seq < before)
                and f.status in (None, d.status)
                and f.event_type in (None, d.event_type)
                and f.entity_id in (None, d.entity_id)
                and f.subscription_id in (None, d.subscription_id)
                and (f.created_after is None or d.created_at >= f.created_after)
                and (f.created_before is None or d.created_at < f.created_before)
            ),
            key=lambda d: -d.seq,
        )
        chunk = rows[:limit]
        nxt = cursors.encode(chunk[-1].seq) if len(rows) > limit else None
        return Page([self._delivery(d) for d in chunk], nxt)

    def retry(self, mid: str, delivery_id: str, now: float) -> Delivery | None:
        row = self._row(mid, delivery_id)
        held = row is not None and row.locked_until is not None and row.locked_until >= now
        if row is None or row.status not in SETTLED or held:
            return None
        self._s.deliveries[row.seq] = row.with_(**requeued(now))
        return self.get(mid, delivery_id)

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
        wanted = (status,) if status else REPLAYABLE
        count = 0
        seen: list[int] = []
        for seq, d in sorted(self._s.deliveries.items()):
            if len(seen) == limit:
                break
            if (
                (after_seq is None or seq > after_seq)
                and d.mid == mid
                and d.subscription_id == sub_id
                and d.created_at >= since
                and d.status in wanted
                and (event_types is None or d.event_type in event_types)
                and not (
                    d.status == DeliveryStatus.FAILED
                    and d.locked_until is not None
                    and d.locked_until >= now
                )
            ):
                self._s.deliveries[seq] = d.with_(**requeued(now))
                count += 1
                seen.append(seq)
        return count, (seen[-1] if len(seen) == limit else None)

    def missing_events(
        self,
        mid: str,
        sub_id: str,
        since: float,
        until: float | None,
        event_types: Collection[str] | None,
        limit: int,
        created_at: float = 0.0,  # the memory store purges no delivery: nothing is unknown
        resume_after: int | None = None,  # a walk of a few events: nothing to save
    ) -> tuple[list[int], bool]:
        sent = self._sent_to(sub_id)
        start = math.floor(since)  # whole seconds: the second `since` falls in counts
        missing = sorted(
            ev.seq
            for ev in self._s.events
            if ev is not None
            and ev.mid == mid
            and ev.create_time >= start
            and (until is None or ev.create_time < until)
            and (event_types is None or ev.event_type in event_types)
            and ev.seq not in sent
        )
        return missing[:limit], len(missing) > limit

    def _sent_to(self, sub_id: str) -> set[int]:
        """The log seqs of the events `sub_id` has a delivery of."""
        return {d.event_seq for d in self._s.deliveries.values() if d.subscription_id == sub_id}

    def queue_missing(self, mid: str, sub_id: str, seqs: Sequence[int], now: float) -> int:
        row = self._s.subscriptions.get(sub_id)
        if row is None or row.sub.mid != mid or row.deleted_at is not None:
            raise NotFoundError(f"subscription {sub_id!r} not found")
        sent = self._sent_to(sub_id)
        wanted = set(seqs) - sent
        events = sorted(
            (ev for ev in self._s.events if ev is not None and ev.mid == mid and ev.seq in wanted),
            key=lambda ev: ev.seq,
        )
        for ev in events:
            self._add(sub_id, ev.seq, ev, now)
        return len(events)
