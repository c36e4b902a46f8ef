"""Retention in SQL: delete old rows in bounded batches, each batch one short transaction.

Every statement walks an index in order and stops at the limit (checked by
tests/integration/test_query_plans.py): idempotency keys by `created_at`, delivered deliveries
by `updated_at` (a partial index of delivered ones), events by `seq` (the log's order,
stopping at the first inside the horizon), and what hangs on them by
`delivery_attempts.delivery_seq` and `deliveries.event_seq`. The rows deleted are added to
`purge_counts` in the same transaction, so the counters `/metrics` shows are exact whichever
process purged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, bindparam, func, select, text

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import WriteGate, is_sqlite
from leadhook.services.retention import Kind

# Only one PostgreSQL worker purges at a time (the others skip the batch): the same rows would
# be fought over otherwise. Any constant works, as long as every leadhook process uses it.
PG_PURGE_LOCK = 7_340_212
_TRY_PURGE_LOCK = text("SELECT pg_try_advisory_xact_lock(:k)").bindparams(k=PG_PURGE_LOCK)

_KEYS = text("""DELETE FROM idempotency_keys
WHERE (mid, key) IN (
    SELECT mid, key FROM idempotency_keys
    WHERE created_at < :before ORDER BY created_at LIMIT :limit)""")

# Delivered deliveries, oldest first; `status` is checked again by the DELETE itself, so a
# delivery replayed meanwhile (status back to pending) is kept.
_DELIVERED = text("""DELETE FROM deliveries
WHERE seq IN (
    SELECT seq FROM deliveries
    WHERE status = 'delivered' AND updated_at < :before ORDER BY updated_at LIMIT :limit)
  AND status = 'delivered'
RETURNING seq""")

_ATTEMPTS = text("DELETE FROM delivery_attempts WHERE delivery_seq IN :seqs").bindparams(
    bindparam("seqs", expanding=True)
)

# The log in its own order, a window at a time after :seq: the purge examines a bounded
# number of events per transaction and goes on from where it stopped. (One statement looking
# for settled events walked every unsettled one past the horizon, holding the write lock: 0.35
# s a minute behind 325,000 events whose deliveries were failing.) The walk is by `seq`, the
# table's primary key, and stops at the first event inside the horizon (`_settled`): an index
# of `create_time` would cost every behaviour one more entry to write (migration 0006). Events
# are stamped before they are logged, so the log's order is their time's to within a
# transaction; one stamped a little before an event logged ahead of it waits for the walk that
# finds that event past the horizon too.
_EVENT_WINDOW = text("""SELECT e.seq, e.create_time FROM events e
WHERE e.seq > :seq
ORDER BY e.seq
LIMIT :scan""")

# Of a window's events, the settled ones: none of their deliveries is pending or failed.
_SETTLED_EVENTS = text("""SELECT e.seq FROM events e
WHERE e.seq IN :seqs
  AND NOT EXISTS (
      SELECT 1 FROM deliveries d
      WHERE d.event_seq = e.seq AND d.status IN ('pending', 'failed'))""").bindparams(
    bindparam("seqs", expanding=True)
)

EVENT_WINDOW = 2_000  # events examined per window
# An event stamped more than this many seconds after the purge's clock (by a writer whose
# clock ran ahead) does not end the walk as a young event does: it is passed over, kept, and
# the events logged after it are purged as if it were not there.
FUTURE_SLACK = 300
EVENT_BUDGET = 20_000  # events examined per purge call (one transaction), at most

_EVENT_DELIVERIES = text("""DELETE FROM deliveries
WHERE event_seq IN :seqs AND status IN ('delivered', 'dead')
RETURNING seq""").bindparams(bindparam("seqs", expanding=True))

# Checked again: a delivery replayed since the SELECT keeps its event.
_EVENTS = text("""DELETE FROM events
WHERE seq IN :seqs
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq)
RETURNING seq""").bindparams(bindparam("seqs", expanding=True))

_COUNT = text("""INSERT INTO purge_counts (table_name, rows, last_purge_at, horizon)
VALUES (:table_name, :rows, :now, :horizon)
ON CONFLICT (table_name)
DO UPDATE SET rows = purge_counts.rows + excluded.rows, last_purge_at = excluded.last_purge_at,
  horizon = CASE WHEN purge_counts.horizon IS NULL OR purge_counts.horizon < excluded.horizon
    THEN excluded.horizon ELSE purge_counts.horizon END""")

# What each kind's purge statements are, for the query-plan test.
PURGE_QUERIES: dict[str, TextClause] = {
    "idempotency_keys": _KEYS,
    "deliveries": _DELIVERED,
    "delivery_attempts": _ATTEMPTS,
    "events": _EVENT_WINDOW,
    "events_settled": _SETTLED_EVENTS,
    "event_deliveries": _EVENT_DELIVERIES,
    "events_delete": _EVENTS,
}


class SqlRetention:
    """Purge old rows of one kind per call; count them in `purge_counts`."""

    def __init__(self, engine: Engine, gate: WriteGate) -> None:
        self._engine = engine
        self._gate = gate
        self._sqlite = is_sqlite(engine)
        # Where the event purge's walk stopped (a seq): it goes on from there and starts over
        # from the oldest once it reaches the horizon (per process).
        self._after = -1

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._gate.hold(), self._engine.begin() as conn:
            yield conn

    def purge(self, kind: Kind, *, before: float, limit: int, now: float) -> dict[str, int]:
        """Delete up to `limit` rows of `kind` older than `before`; count them."""
        with self._tx() as conn:
            if not self._sqlite and not conn.execute(_TRY_PURGE_LOCK).scalar():
                return {}  # another worker is purging right now
            params = {"before": before, "limit": limit}
            done: dict[str, int]
            if kind == "idempotency_keys":
                done = {kind: int(conn.execute(_KEYS, params).rowcount)}
            elif kind == "deliveries":
                seqs = list(conn.execute(_DELIVERED, params).scalars())
                done = {"deliveries": len(seqs), "delivery_attempts": _attempts(conn, seqs)}
            else:
                done = self._events(conn, int(before), limit, now)
            for table, rows in done.items():
                if rows:
                    counted = {"table_name": table, "rows": rows, "now": now, "horizon": before}
                    conn.execute(_COUNT, counted)
            return done

    def _events(self, conn: Connection, before: int, limit: int, now: float) -> dict[str, int]:
        seqs = self._settled(conn, before, limit, now)
        if not seqs:
            return {"events": 0}
        deliveries = list(conn.execute(_EVENT_DELIVERIES, {"seqs": seqs}).scalars())
        attempts = _attempts(conn, deliveries)
        events = len(list(conn.execute(_EVENTS, {"seqs": seqs}).scalars()))
        return {"events": events, "deliveries": len(deliveries), "delivery_attempts": attempts}

    def _settled(self, conn: Connection, before: int, limit: int, now: float) -> list[int]:
        """Up to `limit` settled events past the horizon, examining at most EVENT_BUDGET
        events from where the last call stopped; the walk wraps at the horizon (the first
        event inside it, not one stamped in the future: `FUTURE_SLACK`)."""
        future = now + FUTURE_SLACK
        found: list[int] = []
        examined = 0
        while examined < EVENT_BUDGET:
            rows = conn.execute(_EVENT_WINDOW, {"seq": self._after, "scan": EVENT_WINDOW}).all()
            # The first event inside the horizon ends the walk, as the log's end does.
            inside = next(
                (i for i, r in enumerate(rows) if before <= r.create_time <= future), None
            )
            window = [r.seq for r in rows[:inside] if r.create_time < before]
            horizon = inside is not None or len(rows) < EVENT_WINDOW
            examined += len(window)
            if window:
                settled = set(conn.execute(_SETTLED_EVENTS, {"seqs": window}).scalars())
                for seq in window:
                    if seq in settled:
                        found.append(seq)
                    self._after = seq
                    if len(found) == limit:
                        return found  # the rest of this window is looked at next time
            if horizon:
                self._after = -1  # reached the horizon: the next call starts over
                break
        return found

    def counts(self) -> dict[str, int]:
        """Return the rows purged per table since the database was created."""
        c = t.purge_counts.c
        # A read (BEGIN, not BEGIN IMMEDIATE, on SQLite): a /metrics scrape must not queue
        # for the write lock behind claims and behaviours (it took up to 4.9 s under load).
        with self._engine.connect() as raw:
            conn = raw.execution_options(leadhook_readonly=True)
            rows = conn.execute(select(c.table_name, c.rows)).all()
        return {name: int(n) for name, n in rows}


BACKLOG_COUNTED = 100_000
"""The most waiting deliveries a `/metrics` scrape counts: a larger backlog reads as this."""

# SQLite, without statistics, would read these by the status index and sort: named here, the
# partial index of due deliveries (the claims' own) gives them in `next_attempt_at` order.
_WAITING = """FROM deliveries d {hint} JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.status IN ('pending', 'failed') AND s.enabled"""


def _backlog_sql(hint: str) -> tuple[TextClause, TextClause]:
    waiting = _WAITING.format(hint=hint)
    return (
        text(f"SELECT d.next_attempt_at {waiting} ORDER BY d.next_attempt_at LIMIT 1"),
        text(f"SELECT COUNT(*) FROM (SELECT 1 {waiting} LIMIT {BACKLOG_COUNTED}) w"),
    )


_BACKLOG_SQLITE = _backlog_sql("INDEXED BY ix_deliveries_due")
_BACKLOG_POSTGRES = _backlog_sql("")


def delivery_backlog(engine: Engine) -> tuple[int, float | None]:
    """Deliveries waiting to be sent to enabled subscriptions, every tenant's: how many (up to
    `BACKLOG_COUNTED`), and the earliest time one of them is due (None: none waits).

    The deliveries of a disabled subscription wait for it to be enabled again: they are
    left out, or one would make the backlog look stuck forever. The earliest is the first
    entry of the due deliveries' index (by `next_attempt_at`) whose subscription is enabled;
    the count stops at its bound, so a scrape costs at most that many index entries however
    large a backlog grows. A read without the write lock; on PostgreSQL bounded to 2 s."""
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)
        earliest_sql, count_sql = _BACKLOG_SQLITE if is_sqlite(engine) else _BACKLOG_POSTGRES
        if not is_sqlite(engine):
            conn.execute(text("SET LOCAL statement_timeout = 2000"))
        earliest = conn.execute(earliest_sql).scalar()
        count = conn.execute(count_sql).scalar_one()
    return int(count), None if earliest is None else float(earliest)


def purge_horizon(conn: Connection, table: str) -> float | None:
    """The newest time a purge of `table` deleted rows created before (`purge_counts`,
    migration 0008; None: none yet), read on the caller's connection, in its transaction."""
    c = t.purge_counts.c
    found = conn.execute(select(c.horizon).where(c.table_name == table)).scalar()
    return None if found is None else float(found)


def delivery_outcomes(engine: Engine) -> dict[str, int]:
    """What the delivery loops did since the counters began, every worker's summed
    (`delivery_outcomes`, written by each record: `services.ports.tally`). A read without the
    write lock, as the other scrapes."""
    o = t.delivery_outcomes.c
    with engine.connect() as raw:
        conn = raw.execution_options(leadhook_readonly=True)
        rows = conn.execute(select(o.outcome, func.sum(o.n)).group_by(o.outcome)).all()
    return {name: int(n) for name, n in rows}


def _attempts(conn: Connection, seqs: Sequence[Any]) -> int:
    if not seqs:
        return 0
    return int(conn.execute(_ATTEMPTS, {"seqs": list(seqs)}).rowcount)
