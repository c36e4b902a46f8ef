"""SQL repositories of subscriptions and deliveries (the outbox rows and their history)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import shortuuid
from sqlalchemy import Connection, and_, insert, or_, select, update

from leadhook.adapters.db import tables as t
from leadhook.domain.circuit import Circuit
from leadhook.services import cursor as cursors
from leadhook.services.ports import Attempt, Delivery, NewEvent, Page, Subscription


def _sub(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        mid=row.mid,
        url=row.url,
        event_types=tuple(json.loads(row.event_types)),
        description=row.description,
        enabled=row.enabled,
        secret=row.secret,
        max_in_flight=row.max_in_flight,
        rate_limit_per_s=row.rate_limit_per_s,
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_reason=row.disabled_reason,
        previous_secret=row.previous_secret,
        previous_secret_expires_at=row.previous_secret_expires_at,
        first_failure_at=row.first_failure_at,
        # The circuit is the dispatcher's to change (queue.py): read here, never written.
        circuit=Circuit(
            row.circuit_failures,
            row.circuit_opened_at,
            row.circuit_retry_at,
            row.circuit_cooldown,
        ),
    )


def _sub_values(sub: Subscription) -> dict[str, Any]:
    return {
        "url": sub.url,
        "event_types": json.dumps(list(sub.event_types)),
        "description": sub.description,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "secret": sub.secret,
        "previous_secret": sub.previous_secret,
        "previous_secret_expires_at": sub.previous_secret_expires_at,
        "max_in_flight": sub.max_in_flight,
        "rate_limit_per_s": sub.rate_limit_per_s,
        "first_failure_at": sub.first_failure_at,
        "updated_at": sub.updated_at,
    }


class SqlSubscriptions:
    """Webhook subscriptions; a deleted one is kept (its deliveries refer to it) but hidden."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, mid: str, sub_id: str) -> Subscription | None:
        c = t.subscriptions.c
        row = self.conn.execute(
            select(t.subscriptions).where(c.mid == mid, c.id == sub_id, c.deleted_at.is_(None))
        ).first()
        return None if row is None else _sub(row)

    def add(self, sub: Subscription) -> None:
        self.conn.execute(
            insert(t.subscriptions).values(
                id=sub.id, mid=sub.mid, created_at=sub.created_at, **_sub_values(sub)
            )
        )

    def update(self, sub: Subscription) -> None:
        c = t.subscriptions.c
        self.conn.execute(
            update(t.subscriptions)
            .where(c.id == sub.id, c.mid == sub.mid)
            .values(**_sub_values(sub))
        )

    def delete(self, mid: str, sub_id: str, at: float) -> None:
        c = t.subscriptions.c
        self.conn.execute(
            update(t.subscriptions)
            .where(c.id == sub_id, c.mid == mid)
            .values(deleted_at=at, enabled=False, disabled_reason="deleted")
        )
        # Nothing more is sent to a deleted endpoint: its unfinished deliveries end as dead.
        d = t.deliveries.c
        self.conn.execute(
            update(t.deliveries)
            .where(d.subscription_id == sub_id, d.status.in_(("pending", "failed")))
            .values(status="dead", last_error="subscription deleted", updated_at=at)
        )

    def page(self, mid: str, cursor: str | None, limit: int) -> Page[Subscription]:
        c = t.subscriptions.c
        conds = [c.mid == mid, c.deleted_at.is_(None)]
        after = cursors.decode(cursor)
        rows = self.conn.execute(
            select(t.subscriptions, c.created_at).where(*conds).order_by(c.created_at, c.id)
        ).all()
        subs = [_sub(r) for r in rows]
        start = 0 if after is None else after
        chunk = subs[start : start + limit]
        nxt = cursors.encode(start + limit) if start + limit < len(subs) else None
        return Page(chunk, nxt)

    def enabled_for(self, mid: str) -> list[Subscription]:
        c = t.subscriptions.c
        rows = self.conn.execute(
            select(t.subscriptions).where(c.mid == mid, c.enabled.is_(True), c.deleted_at.is_(None))
        ).all()
        return [_sub(r) for r in rows]


class SqlDeliveries:
    """Delivery rows: written in the transaction of their event, then worked by the dispatcher."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def enqueue(self, rows: Sequence[tuple[Subscription, int, NewEvent]], now: float) -> int:
        if not rows:
            return 0
        self.conn.execute(
            insert(t.deliveries),
            [
                {
                    "id": shortuuid.uuid(),
                    "mid": ev.mid,
                    "subscription_id": sub.id,
                    "event_seq": seq,
                    "event_id": ev.event_id,
                    "entity_id": ev.entity_id,
                    "entity_version": ev.entity_version,
                    "event_type": ev.event_type,
                    "status": "pending",
                    "attempt_count": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for sub, seq, ev in rows
            ],
        )
        return len(rows)

    def _attempts(self, seqs: list[int]) -> dict[int, list[Attempt]]:
        out: dict[int, list[Attempt]] = {s: [] for s in seqs}
        if not seqs:
            return out
        a = t.delivery_attempts.c
        for r in self.conn.execute(
            select(t.delivery_attempts).where(a.delivery_seq.in_(seqs)).order_by(a.id)
        ):
            out[r.delivery_seq].append(
                Attempt(r.attempted_at, r.status_code, r.latency_ms, r.error, r.response_body)
            )
        return out

    @staticmethod
    def _delivery(row: Any, attempts: list[Attempt]) -> Delivery:
        return Delivery(
            id=row.id,
            mid=row.mid,
            subscription_id=row.subscription_id,
            event_id=row.event_id,
            entity_id=row.entity_id,
            entity_version=row.entity_version,
            event_type=row.event_type,
            status=row.status,
            attempt_count=row.attempt_count,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_error=row.last_error,
            attempts=tuple(attempts),
        )

    def get(self, mid: str, delivery_id: str) -> Delivery | None:
        d = t.deliveries.c
        row = self.conn.execute(
            select(t.deliveries).where(d.mid == mid, d.id == delivery_id)
        ).first()
        if row is None:
            return None
        return self._delivery(row, self._attempts([row.seq])[row.seq])

    def page(
        self, mid: str, sub_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        d = t.deliveries.c
        conds = [d.mid == mid, d.subscription_id == sub_id]
        before = cursors.decode(cursor)
        if before is not None:
            conds.append(d.seq < before)
        if status:
            conds.append(d.status == status)
        rows = self.conn.execute(
            select(t.deliveries).where(and_(*conds)).order_by(d.seq.desc()).limit(limit + 1)
        ).all()
        rows_page = rows[:limit]
        attempts = self._attempts([r.seq for r in rows_page])
        data = [self._delivery(r, attempts[r.seq]) for r in rows_page]
        nxt = cursors.encode(rows_page[-1].seq) if len(rows) > limit else None
        return Page(data, nxt)

    def retry(self, mid: str, delivery_id: str, now: float) -> Delivery | None:
        d = t.deliveries.c
        # Only a delivery no worker holds: a pending one may be in flight right now, and
        # clearing its lease would let a second worker send it at the same time.
        # A failed one keeps its status while a worker re-attempts it, so its lease counts too.
        result = self.conn.execute(
            update(t.deliveries)
            .where(
                d.mid == mid,
                d.id == delivery_id,
                d.status.in_(_SETTLED),
                or_(d.locked_until.is_(None), d.locked_until < now),
            )
            .values(**_requeued(now))
        )
        return self.get(mid, delivery_id) if result.rowcount == 1 else None

    def replay(self, mid: str, sub_id: str, since: float, status: str | None, now: float) -> int:
        d = t.deliveries.c
        conds = [d.mid == mid, d.subscription_id == sub_id, d.created_at >= since]
        if status:
            conds.append(d.status == status)
        else:
            conds.append(or_(d.status == "delivered", d.status == "dead"))
        result = self.conn.execute(
            update(t.deliveries).where(and_(*conds)).values(**_requeued(now))
        )
        return int(result.rowcount)


# Statuses in which no worker holds a delivery (failed = waiting for its next attempt).
_SETTLED = ("failed", "dead", "delivered")


def _requeued(now: float) -> dict[str, Any]:
    """Column values that put a settled delivery back in the queue with a fresh schedule."""
    return {
        "status": "pending",
        "attempt_count": 0,
        "next_attempt_at": now,
        "locked_until": None,
        "locked_by": None,
        "updated_at": now,
    }
