"""SQL repositories of subscriptions and deliveries (the outbox rows and their history)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.queue_sql import queue_statements
from leadhook.adapters.db.repositories import driver_in_transaction, execute_rows, unread
from leadhook.adapters.db.retention import PG_PURGE_LOCK, purge_horizon
from leadhook.adapters.db.sql import statements
from leadhook.adapters.secretbox import SecretBox, box_for
from leadhook.domain.circuit import Circuit
from leadhook.domain.errors import NotFoundError
from leadhook.services import cursor as cursors
from leadhook.services.ports import (
    ENDED_BY_DELETE,
    REPLAYABLE,
    SETTLED,
    UNFINISHED,
    Attempt,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    IdFactory,
    NewEvent,
    Page,
    Recipient,
    Subscription,
    delivery_of,
    requeued,
)


def _sub(row: Any, box: SecretBox) -> Subscription:
    return Subscription(
        id=row.id,
        mid=row.mid,
        url=row.url,
        event_types=tuple(json.loads(row.event_types)),
        description=row.description,
        enabled=bool(row.enabled),
        secret=box.decrypt(row.secret),
        max_in_flight=row.max_in_flight,
        rate_limit_per_s=row.rate_limit_per_s,
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_reason=row.disabled_reason,
        previous_secret=box.decrypt_optional(row.previous_secret),
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


def _sub_values(sub: Subscription, box: SecretBox) -> dict[str, Any]:
    return {
        "url": sub.url,
        "event_types": json.dumps(list(sub.event_types)),
        "description": sub.description,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        # Encrypted at rest; a rewrite of an unchanged secret re-encrypts it (new token).
        "secret": box.encrypt(sub.secret),
        "previous_secret": box.encrypt_optional(sub.previous_secret),
        "previous_secret_expires_at": sub.previous_secret_expires_at,
        "max_in_flight": sub.max_in_flight,
        "rate_limit_per_s": sub.rate_limit_per_s,
        "first_failure_at": sub.first_failure_at,
        "updated_at": sub.updated_at,
    }


class _OnConnection:
    """Rows on one connection: SQLAlchemy Core, and named SQL on its driver for hot paths."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sql = statements(conn.dialect.name)
        self.box = box_for(conn.engine)

    @property
    def driver(self) -> Any:
        """The DB-API connection under `conn`, in its transaction."""
        return driver_in_transaction(self.conn)

    @property
    def unread(self) -> Any:
        """Where named SQL whose answer nobody reads runs (`repositories.unread`)."""
        return unread(self.conn)


# How far before `since` a replay-missing's bisect of the log starts: commits that overtook
# each other, and writers whose clocks disagree by up to this much, are still found.
SKEW_MARGIN = 300.0
# Held (shared, to the transaction's end) by a replay-missing on PostgreSQL: the events
# purge takes the same key exclusively, with a try, and skips while one runs (retention.py).
_REPLAY_HOLDS_PURGE = text("SELECT pg_advisory_xact_lock_shared(:k)").bindparams(k=PG_PURGE_LOCK)


def _delivered_to(sub_id: str) -> Select[Any]:
    """The deliveries to `sub_id` of the event of the enclosing query's `events` row: an
    event a replay-missing finds missing is one with none (`~_delivered_to(...).exists()`)."""
    e, d = t.events.c, t.deliveries.c
    return select(d.seq).where(d.event_seq == e.seq, d.subscription_id == sub_id)


def _locked_in_order(*conds: ColumnElement[bool]) -> ColumnElement[bool]:
    """The deliveries matching `conds`, their rows locked in the order of their seq first (on
    PostgreSQL; SQLite has no row locks): a statement updating many of them then never
    deadlocks with a worker's heartbeat or record, which lock the rows they hold in that
    order too (`_HELD_IN_ORDER` in adapters/db/queue_sql.py). The caller repeats `conds` in
    its own WHERE, for a row that changed while its lock was waited for."""
    d = t.deliveries.c
    return d.seq.in_(select(d.seq).where(*conds).order_by(d.seq).with_for_update())


_NO_SEQ = 2**62  # past every seq a table will have


def first_delivery_since(conn: Connection, mid: str, since: float, none: int = 0) -> int:
    """About the first seq of the tenant's deliveries created at `since` (SKEW_MARGIN early,
    as for the log: the caller filters on the time itself); `none` if there is no delivery
    created since then. One step of the (mid, created_at) index."""
    d = t.deliveries.c
    seq = conn.execute(
        select(d.seq)
        .where(d.mid == mid, d.created_at >= since - SKEW_MARGIN)
        .order_by(d.created_at)
        .limit(1)
    ).scalar()
    return none if seq is None else int(seq)


def listing_conditions(
    conn: Connection,
    mid: str,
    *,
    status: str | None,
    event_type: str | None,
    entity_id: str | None,
    subscription_id: str | None,
    created_after: float | None,
    created_before: float | None,
) -> list[ColumnElement[bool]]:
    """The WHERE of a listing of a tenant's deliveries, newest first (the API's and the
    console's), written so that the index it walks is chosen here, not by SQLite's planner
    (no statistics), whatever the filters:

    - a lead's deliveries by the tenant's (mid, entity_id, seq) index; else a subscription's
      by its own (status, seq) or (seq) index, the tenant kept as a mere filter (through the
      tenant's (mid, status, seq), a subscription's dead ones took 300-570 ms among 1.8
      million: a scale review);
    - a time window in seq order between the seqs about where it ends and begins
      (`first_delivery_since`, SKEW_MARGIN wide, the times themselves filtered exactly):
      through the (mid, created_at) index every match was sorted (2.9 s for `created_after`
      over 1.8 million)."""
    d = t.deliveries.c
    by_sub = subscription_id is not None and entity_id is None
    conds: list[ColumnElement[bool]] = [(d.mid + "") == mid if by_sub else d.mid == mid]
    for column, value in (
        (d.status, status),
        (d.event_type, event_type),
        (d.entity_id, entity_id),
        (d.subscription_id, subscription_id),
    ):
        if value is not None:
            conds.append(column == value)
    if created_after is not None:
        conds.append(d.created_at + 0 >= created_after)
        # None created since: an empty range of the index, not a walk of all of them.
        conds.append(d.seq >= first_delivery_since(conn, mid, created_after, none=_NO_SEQ))
    if created_before is not None:
        conds.append(d.created_at + 0 < created_before)
        end = first_delivery_since(conn, mid, created_before + 2 * SKEW_MARGIN, none=-1)
        if end >= 0:
            conds.append(d.seq < end)
    return conds


class SqlSubscriptions(_OnConnection):
    """Webhook subscriptions; a deleted one is kept (its deliveries refer to it) but hidden."""

    def get(self, mid: str, sub_id: str) -> Subscription | None:
        c = t.subscriptions.c
        row = self.conn.execute(
            select(t.subscriptions).where(c.mid == mid, c.id == sub_id, c.deleted_at.is_(None))
        ).first()
        return None if row is None else _sub(row, self.box)

    def add(self, sub: Subscription) -> None:
        self._forget()
        self.conn.execute(
            insert(t.subscriptions).values(
                id=sub.id, mid=sub.mid, created_at=sub.created_at, **_sub_values(sub, self.box)
            )
        )

    def update(self, sub: Subscription) -> None:
        self._forget()
        c = t.subscriptions.c
        self.conn.execute(
            update(t.subscriptions)
            .where(c.id == sub.id, c.mid == sub.mid)
            .values(**_sub_values(sub, self.box))
        )

    def close_circuit(
        self, mid: str, sub_id: str, now: float, url: str | None = None
    ) -> Circuit | None:
        self._forget()
        c = t.subscriptions.c
        where = [c.id == sub_id, c.mid == mid] + ([] if url is None else [c.url == url])
        row = self.conn.execute(
            select(
                c.circuit_failures, c.circuit_opened_at, c.circuit_retry_at, c.circuit_cooldown
            ).where(*where)
        ).first()
        if row is None:
            return None
        # Before the close, the queue's own statement (the rule in one place): if the circuit
        # was open and the subscription may send, what got no answer is due now.
        queue = queue_statements(self.conn.dialect.name)
        params = queue.unanswered_due_params([sub_id], now)
        self.conn.execute(text(queue.unanswered_due), params)
        self.conn.execute(
            update(t.subscriptions)
            .where(*where)
            .values(
                circuit_failures=0,
                circuit_opened_at=None,
                circuit_retry_at=None,
                circuit_cooldown=None,
                circuit_probe_until=None,
            )
        )
        return Circuit(*row)

    def delete(self, mid: str, sub_id: str, at: float) -> None:
        self._forget()
        c = t.subscriptions.c
        # Nothing more is sent to a deleted endpoint: its unfinished deliveries end as dead.
        # Their rows first, in the order of their seq, then the subscription's: a worker's
        # record locks the deliveries it holds, then their subscriptions' rows (streaks,
        # circuits), and the other order deadlocked with it on PostgreSQL (a review).
        d = t.deliveries.c
        ending = (d.subscription_id == sub_id, d.mid == mid, d.status.in_(UNFINISHED))
        self.conn.execute(
            update(t.deliveries)
            .where(_locked_in_order(*ending), *ending)
            .values(**ENDED_BY_DELETE, updated_at=at)
        )
        self.conn.execute(
            update(t.subscriptions)
            .where(c.id == sub_id, c.mid == mid)
            .values(deleted_at=at, enabled=False, disabled_reason="deleted")
        )

    def page(self, mid: str, cursor: str | None, limit: int) -> Page[Subscription]:
        c = t.subscriptions.c
        conds = [c.mid == mid, c.deleted_at.is_(None)]
        after = cursors.decode_keyed(cursor)
        if after is not None:
            conds.append(
                or_(c.created_at > after[0], and_(c.created_at == after[0], c.id > after[1]))
            )
        rows = self.conn.execute(
            select(t.subscriptions, c.created_at)
            .where(*conds)
            .order_by(c.created_at, c.id)
            .limit(limit + 1)
        ).all()
        subs = [_sub(r, self.box) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(subs, cursors.encode_keyed(subs[-1].created_at, subs[-1].id) if more else None)

    def count_for_adding(self, mid: str) -> int:
        # SQLite's write transaction has the database to itself already; PostgreSQL's two
        # creates beside each other would both count 15 of 16 without the tenant's row lock.
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(
                select(t.tenants.c.mid).where(t.tenants.c.mid == mid).with_for_update()
            )
        c = t.subscriptions.c
        counted = self.conn.execute(
            select(func.count()).where(c.mid == mid, c.deleted_at.is_(None))
        ).scalar_one()
        return int(counted)

    def enabled_for(self, mid: str) -> list[Recipient]:
        # Read by every behaviour (its fan-out): named SQL, the id and the event types only.
        memo = self.memo
        if memo is not None and mid in memo:
            return list(memo[mid])
        subs = self._enabled(self.driver.execute(self.sql.enabled_subscriptions, (mid,)))
        if memo is not None:
            memo[mid] = subs
        return list(subs)

    def prefetch(self, mid: str) -> Callable[[], None] | None:
        """Send the read of `enabled_for(mid)` now; the function returned reads its answer into
        the memo (`SqlTenants.companion`). None, and nothing sent, without a memo or with `mid`
        in it."""
        memo = self.memo
        if memo is None or mid in memo:
            return None
        cursor = self.driver.execute(self.sql.enabled_subscriptions, (mid,))

        def read() -> None:
            memo[mid] = self._enabled(cursor)

        return read

    @staticmethod
    def _enabled(cursor: Any) -> list[Recipient]:
        return [Recipient(sub_id, _event_types(types)) for sub_id, types in cursor.fetchall()]

    memo: dict[str, list[Recipient]] | None = None
    """Set by a unit of work whose transaction runs only behaviours (the group writer's): each
    tenant's enabled subscriptions, read once; any write here forgets them."""

    def _forget(self) -> None:
        if self.memo is not None:
            self.memo.clear()


@lru_cache(maxsize=1024)
def _event_types(text: str) -> tuple[str, ...]:
    # A subscription's `event_types` as stored (JSON), decoded once per distinct list.
    return tuple(json.loads(text))


class SqlDeliveries(_OnConnection):
    """Delivery rows: written in the transaction of their event, then worked by the dispatcher."""

    def __init__(self, conn: Connection, ids: IdFactory) -> None:
        super().__init__(conn)
        self.ids = ids

    def enqueue(self, rows: Sequence[tuple[Recipient, int | None, NewEvent]], now: float) -> int:
        if not rows:
            return 0
        new_id = self.ids.short
        # A seq of None: an event a deferred group wrote without reading its seq back
        # (PostgreSQL); the statement finds it by the event's id, passed in the seq's place.
        by_seq = [row for row in rows if row[1] is not None]
        by_event = [row for row in rows if row[1] is None]
        for statement, group in (
            (self.sql.insert_delivery, by_seq),
            (self.sql.insert_delivery_by_event, by_event),
        ):
            if not group:
                continue
            assert statement is not None  # by_event is empty on SQLite
            params = [
                (
                    new_id(),
                    ev.mid,
                    sub.id,
                    ev.event_id if seq is None else seq,
                    ev.event_id,
                    ev.entity_id,
                    ev.entity_version,
                    ev.event_type,
                    now,
                    now,
                    now,
                )
                for sub, seq, ev in group
            ]
            execute_rows(self.unread, statement, params)
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

    def get(self, mid: str, delivery_id: str) -> Delivery | None:
        d = t.deliveries.c
        row = self.conn.execute(
            select(t.deliveries).where(d.mid == mid, d.id == delivery_id)
        ).first()
        if row is None:
            return None
        return delivery_of(row, self._attempts([row.seq])[row.seq])

    def page(
        self, mid: str, sub_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        return self.search(
            mid, DeliveryFilter(status=status or None, subscription_id=sub_id), cursor, limit
        )

    def search(
        self, mid: str, filters: DeliveryFilter, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        """List a tenant's deliveries across its subscriptions, newest first, filtered."""
        d = t.deliveries.c
        f = filters
        conds = listing_conditions(
            self.conn,
            mid,
            status=f.status,
            event_type=f.event_type,
            entity_id=f.entity_id,
            subscription_id=f.subscription_id,
            created_after=f.created_after,
            created_before=f.created_before,
        )
        before = cursors.decode(cursor)
        if before is not None:
            conds.append(d.seq < before)
        rows = self.conn.execute(
            select(t.deliveries).where(and_(*conds)).order_by(d.seq.desc()).limit(limit + 1)
        ).all()
        rows_page = rows[:limit]
        attempts = self._attempts([r.seq for r in rows_page])
        data = [delivery_of(r, attempts[r.seq]) for r in rows_page]
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
                d.status.in_(SETTLED),
                or_(d.locked_until.is_(None), d.locked_until < now),
            )
            .values(**requeued(now))
        )
        return self.get(mid, delivery_id) if result.rowcount == 1 else None

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
        d = t.deliveries.c
        conds = [d.mid == mid, d.subscription_id == sub_id, d.created_at >= since]
        if event_types is not None:
            conds.append(d.event_type.in_(sorted(event_types)))
        if status:
            conds.append(d.status == status)
        else:
            conds.append(d.status.in_(REPLAYABLE))
        if status == DeliveryStatus.FAILED:
            # A failed delivery keeps its status while a worker re-attempts it: its live lease
            # leaves it to the worker (two must never send it at once), as a retry does.
            conds.append(or_(d.locked_until.is_(None), d.locked_until < now))
        # The next `limit` of the window in seq order, walked on the subscription's
        # (status, seq) index from where the last batch ended, or from about where the window
        # begins (the tenant's first delivery created SKEW_MARGIN before `since`).
        # Not by `mid` (the subscription is the tenant's): SQLite's planner, with no
        # statistics, walked the tenant's (mid, status, seq) index instead, every delivery of
        # that status in the tenant, for a few of the subscription's.
        first = first_delivery_since(self.conn, mid, since) if after_seq is None else after_seq + 1
        found = select(d.seq).where(*conds[1:], d.seq >= first).order_by(d.seq).limit(limit)
        seqs = [int(seq) for seq in self.conn.execute(found.with_for_update()).scalars()]
        if not seqs:
            return 0, None
        result = self.conn.execute(
            update(t.deliveries).where(d.seq.in_(seqs), *conds).values(**requeued(now))
        )
        return int(result.rowcount), (seqs[-1] if len(seqs) == limit else None)

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
        # Event times are whole seconds: an event in the second `since` falls in counts.
        start = math.floor(since)
        e = t.events.c
        # A call after one that queued up to `resume_after` starts its walk about where that
        # event was logged (SKEW_MARGIN early: an event committed since with a lower seq is
        # still found), not at `since` again: a backfill of a log of millions walked, call
        # after call, everything the calls before it had queued (a scale review).
        walk_from: float = start
        if resume_after is not None:
            logged = self.conn.execute(
                select(e.create_time).where(e.mid == mid, e.seq == resume_after)
            ).scalar()
            if logged is not None:
                walk_from = max(start, float(logged))
        conds = [
            e.mid == mid,
            e.seq >= self._first_seq_since(mid, walk_from),
            e.create_time >= start,
        ]
        # Delivered deliveries purged by retention (up to the horizon it kept) leave no trace:
        # an event since the subscription was made and before that horizon may have been
        # delivered, and is not sent again (a whole log went out twice: an integrator).
        purged = purge_horizon(self.conn, "deliveries")
        if purged is not None and purged > created_at:
            conds.append(
                or_(e.create_time < math.floor(created_at), e.create_time >= math.ceil(purged))
            )
        if until is not None:
            conds.append(e.create_time < until)
        if event_types is not None:
            conds.append(e.event_type.in_(sorted(event_types)))
        delivered = _delivered_to(sub_id)
        seqs = list(
            self.conn.execute(
                select(e.seq).where(*conds, ~delivered.exists()).order_by(e.seq).limit(limit + 1)
            ).scalars()
        )
        return [int(seq) for seq in seqs[:limit]], len(seqs) > limit

    def queue_missing(self, mid: str, sub_id: str, seqs: Sequence[int], now: float) -> int:
        # On PostgreSQL two replays of one subscription beside each other would both find an
        # event missing and queue it twice: they take turns on its row (a worker locks
        # deliveries, then this row; this takes the row and locks no delivery). A delete
        # waited for meanwhile leaves no live row: nothing is queued for it.
        pg = self.conn.dialect.name == "postgresql"
        s = t.subscriptions.c
        live = select(s.id).where(s.id == sub_id, s.mid == mid, s.deleted_at.is_(None))
        if self.conn.execute(live.with_for_update() if pg else live).first() is None:
            raise NotFoundError(f"subscription {sub_id!r} not found")
        if pg:
            # The events purge deletes an event that has no delivery: it would not see the
            # deliveries this transaction adds, and leave them pointing at nothing (never
            # claimable, in the claims' way). It skips while a replay holds this (shared).
            self.conn.execute(_REPLAY_HOLDS_PURGE)
        e = t.events.c
        delivered = _delivered_to(sub_id)
        new_id, queued = self.ids.short, 0
        for at in range(0, len(seqs), 1000):  # bound the statement's parameters
            rows = self.conn.execute(
                select(e.seq, e.event_id, e.entity_id, e.entity_version, e.event_type)
                .where(e.mid == mid, e.seq.in_(list(seqs[at : at + 1000])), ~delivered.exists())
                .order_by(e.seq)
            ).all()
            params = [(new_id(), mid, sub_id, *r, now, now, now) for r in rows]
            if params:
                execute_rows(self.unread, self.sql.insert_delivery, params)
            queued += len(params)
        return queued

    def _first_seq_since(self, mid: str, since: float) -> int:
        """About the first seq of the tenant's log created at `since`, by bisecting its seqs
        (a log in seq order is in time order but for commits that overtook each other and
        writers' clocks apart: the bound is taken SKEW_MARGIN early, and the caller filters
        on the time itself)."""
        e = t.events.c
        bounds = self.conn.execute(
            select(func.min(e.seq), func.max(e.seq)).where(e.mid == mid)
        ).one()
        if bounds[0] is None:
            return 0
        lo, hi = int(bounds[0]), int(bounds[1]) + 1
        early = since - SKEW_MARGIN
        while lo < hi:
            middle = (lo + hi) // 2
            row = self.conn.execute(
                select(e.seq, e.create_time)
                .where(e.mid == mid, e.seq >= middle)
                .order_by(e.seq)
                .limit(1)
            ).first()
            if row is None or row.create_time >= early:
                hi = middle
            else:
                lo = int(row.seq) + 1
        return lo
