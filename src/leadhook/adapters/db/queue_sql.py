"""Named SQL of the delivery queue (adapters/db/queue.py), one frozen set per dialect.

As in adapters/db/sql.py, every statement is written out in full, with bind parameters, so
what runs is what is read here. Named parameters (`:now`) go through SQLAlchemy's `text()`;
the statements the driver runs itself (`executemany`) use its own markers (`?` and `%s`).

The dialects differ where they must:
- the claim: PostgreSQL claims in one statement (caps per subscription with a window function,
  then `FOR UPDATE SKIP LOCKED`, lease, return the jobs); SQLite reads the due rows, caps them
  in Python (`services/lanes.claim_cap`), then leases them (`lease`) and reads them (`jobs`);
- lists of ids travel as one value, so a statement is the same text whatever their number: a
  JSON array read with `json_each` on SQLite, an array (`= ANY`, `<> ALL`) on PostgreSQL. The
  `id_list` of each dialect makes that value from a Python list;
- the driver's placeholder style.

A lease moves the delivery's `next_attempt_at` to the lease's end (and the heartbeat moves it
on): a delivery in flight is not due, so a claim's walk of ix_deliveries_due never steps over
the rows other claims hold, however many are in flight, and a delivery whose worker died is due
again exactly when its lease runs out. Giving a lease back (`release`, `recover`) makes it due
at once.

Only unfinished deliveries are claimed: the `status IN ('pending', 'failed')` below is written
as a literal, so the planner can use the partial index ix_deliveries_due (whose predicate says
the same); tests/unit/test_queue_sql.py checks these literals against `DeliveryStatus`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from leadhook.domain.attempts import UNANSWERED


@dataclass(frozen=True)
class QueueStatements:
    """The delivery queue's statements in one dialect."""

    claim: str
    """SQLite: the due rows (capped in Python). PostgreSQL: claim, lease and return the jobs.

    Due, unleased deliveries of enabled subscriptions whose lead has no earlier unfinished
    delivery to that subscription (that is what keeps each lead in order) and none in flight to
    it (a replayed or retried earlier version waits for the later one being sent: one event of
    a lead and subscription in flight at a time), earliest due first,
    skipping the subscriptions in `:exclude`. Written so the plan is a walk of ix_deliveries_due
    in order that stops at the limit, whatever the statistics say; the subscription columns are
    joined to the few rows found. A subscription whose circuit is half open (circuit_retry_at
    reached) is skipped, unless this claim reserved its probe (`:probes`, see
    `reserve_probes`); one whose circuit is open is claimed, its jobs to be turned away
    (`Job.circuit_open_until`, domain/circuit.py).
    A claim may run it more than once (`SqlDeliveryQueue._claim_in`): after a pass that took a
    subscription's cap, the next skips that subscription too, from `:after`.
    """
    first_due_outside: str
    """The due time of the earliest unfinished delivery of a subscription not in `:exclude`
    (none: no row). A claim that skips subscriptions starts its walk of the due index there
    (`:after`): the rows before it are all the skipped subscriptions' (see
    `SqlDeliveryQueue._skip_to`)."""
    claim_setup: str | None
    """PostgreSQL: run first in the claim's transaction (its planner settings)."""
    lease: str | None
    """SQLite: lease the picked seqs (driver markers: lease_until, worker, JSON seqs)."""
    jobs: str | None
    """SQLite: the leased rows with the job columns (driver marker: JSON seqs)."""
    reserve_probes: str
    """Half-open circuits whose probe nobody holds: this claim takes their probes. On
    PostgreSQL a row another transaction holds is skipped (that one probes it, or a later
    claim does); on SQLite claims are serial."""
    renew: str
    """The heartbeat: push the lease of every job this worker still holds, in one statement."""
    live: str
    """Of the subscriptions `:ids`, those enabled and not deleted (the heartbeat's check that
    the jobs a worker holds may still be sent)."""
    urls: str
    """The id and URL of the subscriptions `:ids` (a record's check that an attempt went to
    the URL its subscription still has)."""
    release: str
    """Give leased deliveries back unsent: due again at once (`:now`)."""
    insert_attempts: str
    """The attempt rows (driver markers). SQLite: one row, run with executemany. PostgreSQL
    (`columnar`): every row in one statement, one array per column."""
    finish: str
    """The deliveries' new states, for their lease holder only (driver markers). SQLite: one
    delivery, run with executemany. PostgreSQL (`columnar`): every delivery in one statement,
    one array per column."""
    columnar: bool
    """`insert_attempts` and `finish` take one array per column (PostgreSQL): a record of a
    hundred verdicts is two statements, not two hundred. Pipelined one by one, the server's
    parse, bind and execute of each was ~0.1 ms a verdict: a third of a drain's claims."""
    wait_behind: str
    """A lead's later deliveries wait with its earlier one that failed (driver markers:
    subscription, lead, version, that delivery's next attempt, its seq). Its pending,
    unleased deliveries of later versions to that subscription are given that time:
    per-lead order holds them back until then anyway, and due earlier they lay in the claim's
    walk of the due index, every claim stepping over each of them (behind an endpoint that
    is down, tens of thousands: a claim of 50-190 ms, every tenant's deliveries late). Only
    while that delivery is still failed, unleased, with that time or later: a late verdict of
    a lease another worker took over (and may be sending or have delivered) holds nothing
    back. The next 1,000 versions at most: a lead with more waiting has the rest moved by the
    claims' sweep as they reach them (a record is not the place for 10,000 updates: 0.5 s on
    PostgreSQL). PostgreSQL (`columnar`): one array per column; it answers the rows to move
    (seq, time, that delivery's seq) for `wait_until`."""
    wait_sweep: str
    """`wait_behind` for the deliveries that became due behind an earlier one that waits: of the
    first `:walk` rows of the claims' walk (due at `:now`, from `:after`, not of `:exclude`),
    the pending, unleased ones whose lead's earliest unfinished delivery to the subscription
    (the one per-lead order sends first) is unleased and waits past `:now`: (seq, its time,
    its seq). A delivery of a lead's new event whose earlier one waits for its retry is
    written due at once: without this, it lay in every claim's way until that retry.
    `wait_until` moves them. One probe of the lead's order index a row, whatever the number
    of the lead's versions (a `MAX` over them all cost a lead of 10,000 waiting versions
    seconds a sweep)."""
    wait_until: str
    """Give the deliveries found by `wait_sweep` (or PostgreSQL's `wait_behind`) the time they
    wait for (driver markers: seq, time, the seq of the delivery they wait behind; PostgreSQL:
    one array per column, then the seqs again), if they are still pending and unleased and
    that one is still unfinished, unleased and waiting that long: what changed since they were
    found (it was claimed, sent, delivered) moves nothing. Rows another transaction holds are
    skipped (PostgreSQL). Apart from the walk, so that each is found by its seq: planned
    together, PostgreSQL joined the walk's rows to a scan of the whole table."""
    come_due: str
    """A lead's next delivery is due at once (driver markers: subscription, lead, version, the
    time; PostgreSQL: the time, one array per column, the time again): its delivery of that
    version finished (delivered or dead), so the next one, if pending and held back by
    `wait_behind` or the sweep, may go now, however soon that came (a retry or replay of it, a
    circuit that closed). Only the next: the ones after it wait for it in turn, and each is let
    go when the one before it finishes (pulling them all made those behind a failed one in
    between due again, in the claims' way). One probe of the lead's order index per finished
    delivery. PostgreSQL skips a row another transaction holds (`SKIP LOCKED`: a record
    holds its finished rows already, and waiting in seq order for others deadlocked with a
    subscription's DELETE locking the same lead's rows in seq order); such a row waits for
    the time it was given."""
    streak_end: str
    """Subscriptions (`:ids`) whose delivery succeeded: their failure streak ends."""
    streak_start: str
    """Subscriptions (`:ids`) whose delivery failed: a streak starts at `:now` unless one runs."""
    circuit_close: str
    """Subscriptions (`:ids`) that answered: their circuit closes (if it was not closed).
    PostgreSQL: it returns each row it changed with its circuit as it was (`id`,
    `circuit_opened_at`, `circuit_retry_at`), for the close's log line: a row another worker
    closed meanwhile is left out (the update re-reads it once its lock is let go)."""
    open_circuits: str | None
    """SQLite (one writer at a time): those of the subscriptions `:ids` whose circuit is open
    or half open, and since when, read before `circuit_close`; PostgreSQL: None (the close
    says it)."""
    unanswered_due: str
    """The failed deliveries whose last attempt got no answer (their `last_error` starts with
    `:turned_away` or `:no_response`) of those subscriptions `:ids` whose circuit is open and
    that may send: due at `:now`. Run before `circuit_close` closes them."""
    id_list: Callable[[Sequence[Any]], Any]
    """The value one list parameter (`:exclude`, `:probes`, `:seqs`, a JSON seqs marker) takes."""

    def unanswered_due_params(self, ids: Sequence[str], now: float) -> dict[str, Any]:
        """The parameters of `unanswered_due` for the subscriptions `ids` at `now`."""
        away, silence = UNANSWERED
        return {"ids": self.id_list(ids), "now": now, "turned_away": away, "no_response": silence}


def _json_list(items: Sequence[Any]) -> str:
    return json.dumps(list(items))


def _array(items: Sequence[Any]) -> list[Any]:
    return list(items)


# The claims' sweep (`QueueStatements.wait_sweep`), the same in both dialects but for how the
# walk names its index (`due`) and leaves out the skipped subscriptions (`outside`).
_WAIT_SWEEP = """SELECT w.seq, h.next_attempt_at, h.seq
FROM (
    SELECT d.seq, d.status, d.locked_until, (
        SELECT e.seq FROM deliveries e
        WHERE e.subscription_id = d.subscription_id AND e.entity_id = d.entity_id
          AND e.entity_version < d.entity_version AND e.status IN ('pending', 'failed')
        ORDER BY e.entity_version
        LIMIT 1) AS head
    FROM {due}
    WHERE d.status IN ('pending', 'failed')
      AND d.next_attempt_at <= :now AND d.next_attempt_at >= :after
      AND {outside}
    ORDER BY d.next_attempt_at
    LIMIT :walk
) AS w
JOIN deliveries h ON h.seq = w.head
WHERE w.status = 'pending' AND w.locked_until IS NULL
  AND h.locked_until IS NULL AND h.next_attempt_at + 0 > :now"""


SQLITE = QueueStatements(
    claim="""
SELECT due.seq, due.subscription_id, due.next_attempt_at, s.max_in_flight, s.rate_limit_per_s,
       s.circuit_retry_at
FROM (
    SELECT d.seq, d.subscription_id, d.next_attempt_at
    -- Named: left to itself the planner took the status index and sorted every due row.
    FROM deliveries d INDEXED BY ix_deliveries_due
    WHERE d.status IN ('pending', 'failed')
      AND d.next_attempt_at <= :now AND d.next_attempt_at >= :after
      AND (d.locked_until IS NULL OR d.locked_until < :now)
      AND d.subscription_id NOT IN (
          SELECT id FROM subscriptions
          WHERE NOT enabled OR deleted_at IS NOT NULL
             OR (circuit_retry_at <= :now
                 AND id NOT IN (SELECT value FROM json_each(:probes))))
      AND d.subscription_id NOT IN (SELECT value FROM json_each(:exclude))
      AND NOT EXISTS (
          SELECT 1 FROM deliveries e
          WHERE e.subscription_id = d.subscription_id
            AND e.entity_id = d.entity_id
            AND e.status IN ('pending', 'failed')
            AND (e.entity_version < d.entity_version
                 OR (e.locked_until >= :now AND e.seq <> d.seq)))
    ORDER BY d.next_attempt_at
    LIMIT :scan
) AS due
JOIN subscriptions s ON s.id = due.subscription_id""",
    first_due_outside="""SELECT d.next_attempt_at FROM deliveries d INDEXED BY ix_deliveries_due
WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at IS NOT NULL
  AND d.subscription_id NOT IN (SELECT value FROM json_each(:exclude))
ORDER BY d.next_attempt_at
LIMIT 1""",
    claim_setup=None,
    lease="""UPDATE deliveries SET locked_until = ?, next_attempt_at = ?, locked_by = ?
WHERE seq IN (SELECT value FROM json_each(?))""",
    jobs="""
SELECT d.seq, d.id, d.mid, d.subscription_id, d.event_id, d.entity_id, d.entity_version,
    d.attempt_count, d.next_attempt_at, e.payload, s.url, s.secret, s.previous_secret,
    s.previous_secret_expires_at, s.max_in_flight, s.rate_limit_per_s, s.first_failure_at,
    s.circuit_retry_at
FROM deliveries d
JOIN events e ON e.seq = d.event_seq
JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.seq IN (SELECT value FROM json_each(?))""",
    reserve_probes="""UPDATE subscriptions SET circuit_probe_until = :lease_until
WHERE circuit_retry_at <= :now
  AND (circuit_probe_until IS NULL OR circuit_probe_until <= :now)
  AND enabled AND deleted_at IS NULL
RETURNING id""",
    renew="""UPDATE deliveries SET locked_until = :lease_until, next_attempt_at = :lease_until
WHERE seq IN (SELECT value FROM json_each(:seqs)) AND locked_by = :worker
RETURNING seq""",
    live="""SELECT id FROM subscriptions
WHERE id IN (SELECT value FROM json_each(:ids)) AND enabled AND deleted_at IS NULL""",
    urls="""SELECT id, url FROM subscriptions WHERE id IN (SELECT value FROM json_each(:ids))""",
    release="""UPDATE deliveries SET locked_until = NULL, locked_by = NULL, next_attempt_at = :now
WHERE seq IN (SELECT value FROM json_each(:seqs)) AND locked_by = :worker""",
    insert_attempts="""INSERT INTO delivery_attempts
    (delivery_seq, attempted_at, status_code, latency_ms, error, response_body)
    VALUES (?, ?, ?, ?, ?, ?)""",
    finish="""UPDATE deliveries SET status = ?, attempt_count = ?, next_attempt_at = ?,
    last_error = ?, locked_until = NULL, locked_by = NULL, updated_at = ?
    WHERE seq = ? AND locked_by = ?""",
    # A pending delivery written `status IN (…) AND status <> 'failed'`: the first lets the
    # planner take the partial index ix_deliveries_lead_order (a lead's unfinished deliveries
    # to a subscription); `status = 'pending'` would also be a bound of the subscription's
    # (status, seq) index, which PostgreSQL took, walking all of the subscription's pending
    # deliveries for each verdict (300 ms a record of 64 behind 12,000).
    wait_behind="""UPDATE deliveries SET next_attempt_at = ?1
WHERE seq IN (
    SELECT e.seq FROM deliveries e
    WHERE e.subscription_id = ?2 AND e.entity_id = ?3 AND e.entity_version > ?4
      AND e.status IN ('pending', 'failed')
    ORDER BY e.entity_version
    LIMIT 1000)
  AND status <> 'failed' AND locked_until IS NULL AND next_attempt_at <> ?1
  AND EXISTS (SELECT 1 FROM deliveries h
              WHERE h.seq = ?5 AND h.status = 'failed' AND h.locked_until IS NULL
                AND h.next_attempt_at >= ?1)""",
    wait_sweep=_WAIT_SWEEP.format(
        due="deliveries d INDEXED BY ix_deliveries_due",
        outside="d.subscription_id NOT IN (SELECT value FROM json_each(:exclude))",
    ),
    wait_until="""UPDATE deliveries SET next_attempt_at = ?2
WHERE seq = ?1 AND status IN ('pending', 'failed') AND status <> 'failed'
  AND locked_until IS NULL AND next_attempt_at <> ?2
  AND EXISTS (SELECT 1 FROM deliveries h
              WHERE h.seq = ?3 AND h.status IN ('pending', 'failed')
                AND h.locked_until IS NULL AND h.next_attempt_at >= ?2)""",
    come_due="""UPDATE deliveries SET next_attempt_at = ?4
WHERE seq = (
    SELECT e.seq FROM deliveries e
    WHERE e.subscription_id = ?1 AND e.entity_id = ?2 AND e.entity_version > ?3
      AND e.status IN ('pending', 'failed')
    ORDER BY e.entity_version
    LIMIT 1)
  AND status <> 'failed' AND locked_until IS NULL AND next_attempt_at > ?4""",
    streak_end="""UPDATE subscriptions SET first_failure_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND first_failure_at IS NOT NULL""",
    streak_start="""UPDATE subscriptions SET first_failure_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND first_failure_at IS NULL""",
    circuit_close="""UPDATE subscriptions SET circuit_failures = 0, circuit_opened_at = NULL,
    circuit_retry_at = NULL, circuit_cooldown = NULL, circuit_probe_until = NULL
WHERE id IN (SELECT value FROM json_each(:ids))
  AND (circuit_failures > 0 OR circuit_retry_at IS NOT NULL)""",
    open_circuits="""SELECT id, circuit_opened_at FROM subscriptions
WHERE id IN (SELECT value FROM json_each(:ids)) AND circuit_retry_at IS NOT NULL""",
    unanswered_due="""UPDATE deliveries SET next_attempt_at = :now
WHERE subscription_id IN (
      SELECT id FROM subscriptions WHERE id IN (SELECT value FROM json_each(:ids))
        AND circuit_retry_at IS NOT NULL AND enabled AND deleted_at IS NULL)
  AND status = 'failed' AND next_attempt_at > :now AND locked_until IS NULL
  AND (substr(last_error, 1, length(:turned_away)) = :turned_away
       OR substr(last_error, 1, length(:no_response)) = :no_response)""",
    columnar=False,
    id_list=_json_list,
)

# The rows of `seqs` this worker still holds, locked in the order of their seq (the sort
# runs below the lock: PostgreSQL locks the rows in the order it returns them).
_HELD_IN_ORDER = """SELECT seq FROM deliveries
    WHERE seq = ANY(CAST({seqs} AS BIGINT[])) AND locked_by = {worker}
    ORDER BY seq FOR UPDATE"""

# The claim caps each subscription at `cap` rows (services/lanes.claim_cap, computed here from
# `:depth` = LANE_DEPTH and `:mif` = MAX_IN_FLIGHT), so one busy endpoint cannot fill a claim;
# then it locks what no other worker holds, leases it and returns it whole.
POSTGRES = QueueStatements(
    claim="""
WITH due AS (
    SELECT due.seq, due.subscription_id, due.next_attempt_at, s.max_in_flight,
           s.rate_limit_per_s, s.circuit_retry_at
    FROM (
        SELECT d.seq, d.subscription_id, d.next_attempt_at
        FROM deliveries d
        WHERE d.status IN ('pending', 'failed')
          AND d.next_attempt_at <= :now AND d.next_attempt_at >= :after
          AND (d.locked_until IS NULL OR d.locked_until < :now)
          AND d.subscription_id NOT IN (
              SELECT id FROM subscriptions
              WHERE NOT enabled OR deleted_at IS NOT NULL
                 OR (circuit_retry_at <= :now
                     AND id <> ALL(CAST(:probes AS TEXT[]))))
          AND d.subscription_id <> ALL(CAST(:exclude AS TEXT[]))
          AND NOT EXISTS (
              SELECT 1 FROM deliveries e
              WHERE e.subscription_id = d.subscription_id
                AND e.entity_id = d.entity_id
                AND e.status IN ('pending', 'failed')
                AND (e.entity_version < d.entity_version
                     OR (e.locked_until >= :now AND e.seq <> d.seq))
              -- OFFSET 0 keeps this a subplan run per due row, an index probe of the lead's
              -- unfinished deliveries. Pulled up into an anti join, statistics taken while
              -- nothing was due let the planner scan the whole partial index once per due row:
              -- 8.9 s a claim behind a burst of 6,000 (13 ms as a subplan).
              OFFSET 0)
        ORDER BY d.next_attempt_at
        LIMIT :scan
    ) AS due
    JOIN subscriptions s ON s.id = due.subscription_id
), ranked AS (
    SELECT seq, next_attempt_at,
           ROW_NUMBER() OVER (
               PARTITION BY subscription_id ORDER BY next_attempt_at, seq) AS rn,
           CASE WHEN circuit_retry_at <= :now THEN 1  -- the probe of a half-open circuit
                WHEN rate_limit_per_s IS NULL THEN LEAST(max_in_flight, :mif) * :depth
                WHEN rate_limit_per_s < 1 THEN 1
                WHEN rate_limit_per_s >= LEAST(max_in_flight, :mif) THEN LEAST(max_in_flight, :mif)
                ELSE CAST(FLOOR(rate_limit_per_s) AS INTEGER) END AS cap
    FROM due
), picked AS (
    SELECT d.seq FROM deliveries d
    WHERE d.seq IN (SELECT seq FROM ranked WHERE rn <= cap ORDER BY next_attempt_at LIMIT :limit)
      AND d.status IN ('pending', 'failed')
      AND (d.locked_until IS NULL OR d.locked_until < :now)
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries AS d
SET locked_until = :lease_until, next_attempt_at = :lease_until, locked_by = :worker
FROM picked p, events e, subscriptions s
WHERE d.seq = p.seq AND e.seq = d.event_seq AND s.id = d.subscription_id
RETURNING d.seq, d.id, d.mid, d.subscription_id, d.event_id, d.entity_id, d.entity_version,
    d.attempt_count, d.next_attempt_at, e.payload, s.url, s.secret, s.previous_secret,
    s.previous_secret_expires_at, s.max_in_flight, s.rate_limit_per_s, s.first_failure_at,
    s.circuit_retry_at""",
    first_due_outside="""SELECT d.next_attempt_at FROM deliveries d
WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at IS NOT NULL
  AND d.subscription_id <> ALL(CAST(:exclude AS TEXT[]))
ORDER BY d.next_attempt_at
LIMIT 1""",
    claim_setup="SET LOCAL enable_bitmapscan = off",
    lease=None,
    jobs=None,
    # SKIP LOCKED: a half-open subscription another transaction holds (its claim reserving the
    # probe, or its record updating the streak) is left to that one, never waited for: a
    # settling claim records (locking its subscriptions) before it reserves, and two such
    # claims waiting for each other's rows would deadlock.
    reserve_probes="""UPDATE subscriptions SET circuit_probe_until = :lease_until
WHERE id IN (
  SELECT id FROM subscriptions
  WHERE circuit_retry_at <= :now
    AND (circuit_probe_until IS NULL OR circuit_probe_until <= :now)
    AND enabled AND deleted_at IS NULL
  FOR UPDATE SKIP LOCKED)
RETURNING id""",
    # The heartbeat's renew runs on its own thread beside the record or release of jobs it
    # still holds: each of the three locks its rows in the order of their seq first
    # (`_HELD_IN_ORDER`), so that two of them holding some of the same rows never wait for
    # each other (PostgreSQL broke such deadlocks after a second, failing one of them).
    renew=f"""UPDATE deliveries SET locked_until = :lease_until, next_attempt_at = :lease_until
WHERE seq IN ({_HELD_IN_ORDER.format(seqs=":seqs", worker=":worker")}) AND locked_by = :worker
RETURNING seq""",
    live="""SELECT id FROM subscriptions
WHERE id = ANY(CAST(:ids AS TEXT[])) AND enabled AND deleted_at IS NULL""",
    urls="""SELECT id, url FROM subscriptions WHERE id = ANY(CAST(:ids AS TEXT[]))""",
    release=f"""UPDATE deliveries SET locked_until = NULL, locked_by = NULL, next_attempt_at = :now
WHERE seq IN ({_HELD_IN_ORDER.format(seqs=":seqs", worker=":worker")}) AND locked_by = :worker""",
    # The attempts in the order given: their ids follow it.
    insert_attempts="""INSERT INTO delivery_attempts
    (delivery_seq, attempted_at, status_code, latency_ms, error, response_body)
SELECT a.seq, a.at, a.code, a.ms, a.error, a.body
FROM unnest(CAST(%s AS BIGINT[]), CAST(%s AS DOUBLE PRECISION[]), CAST(%s AS INTEGER[]),
    CAST(%s AS DOUBLE PRECISION[]), CAST(%s AS TEXT[]), CAST(%s AS TEXT[]))
    WITH ORDINALITY AS a(seq, at, code, ms, error, body, n)
ORDER BY a.n""",
    # Parameters: the seqs and the worker (the rows locked in order first), the time, then
    # the finished rows' columns, then the worker again.
    finish=f"""WITH held AS ({_HELD_IN_ORDER.format(seqs="%s", worker="%s")})
UPDATE deliveries AS d SET status = v.status, attempt_count = v.attempt_count,
    next_attempt_at = v.next_attempt_at, last_error = v.last_error, locked_until = NULL,
    locked_by = NULL, updated_at = %s
FROM unnest(CAST(%s AS BIGINT[]), CAST(%s AS TEXT[]), CAST(%s AS INTEGER[]),
    CAST(%s AS DOUBLE PRECISION[]), CAST(%s AS TEXT[]))
    AS v(seq, status, attempt_count, next_attempt_at, last_error)
WHERE d.seq = v.seq AND d.seq IN (SELECT seq FROM held) AND d.locked_by = %s
RETURNING d.status""",
    # PostgreSQL finds the rows to move and moves them in two statements (`wait_until`), each
    # row by its seq: planned as a join, the lead probes became a bitmap of every unfinished
    # delivery (the due index's rows) filtered against each verdict (450 ms a record of 64
    # behind 33,000). The probe is a LATERAL subquery: an index scan of the lead's order
    # index per verdict, in version order. A row found by its seq has its status read as
    # `(status || '')`: a plain `status = 'pending'` implies the due index's condition, and
    # with statistics from a smaller queue the planner ANDed that whole index (every
    # unfinished delivery) into the lookup of a few seqs.
    wait_behind="""SELECT l.seq, v.until, v.head
FROM unnest(CAST(%s AS TEXT[]), CAST(%s AS TEXT[]), CAST(%s AS INTEGER[]),
    CAST(%s AS DOUBLE PRECISION[]), CAST(%s AS BIGINT[])) AS v(sub, lead, version, until, head)
CROSS JOIN LATERAL (
    SELECT later.seq, later.status, later.locked_until, later.next_attempt_at
    FROM deliveries later
    WHERE later.subscription_id = v.sub AND later.entity_id = v.lead
      AND later.entity_version > v.version AND later.status IN ('pending', 'failed')
    ORDER BY later.entity_version
    LIMIT 1000
) AS l
WHERE l.status <> 'failed' AND l.locked_until IS NULL AND l.next_attempt_at + 0 <> v.until
  AND EXISTS (SELECT 1 FROM deliveries h
              WHERE h.seq = v.head AND (h.status || '') = 'failed'
                AND h.locked_until IS NULL AND h.next_attempt_at >= v.until)""",
    wait_sweep=_WAIT_SWEEP.format(
        due="deliveries d", outside="d.subscription_id <> ALL(CAST(:exclude AS TEXT[]))"
    ),
    wait_until="""UPDATE deliveries AS d SET next_attempt_at = u.until
FROM unnest(CAST(%s AS BIGINT[]), CAST(%s AS DOUBLE PRECISION[]), CAST(%s AS BIGINT[]))
    AS u(seq, until, head)
WHERE d.seq = u.seq
  AND d.seq = ANY(ARRAY(
      SELECT x.seq FROM deliveries x
      WHERE x.seq = ANY(CAST(%s AS BIGINT[])) AND (x.status || '') = 'pending'
        AND x.locked_until IS NULL
      ORDER BY x.seq
      FOR UPDATE SKIP LOCKED))
  AND d.next_attempt_at + 0 <> u.until
  AND EXISTS (SELECT 1 FROM deliveries h
              WHERE h.seq = u.head AND (h.status || '') IN ('pending', 'failed')
                AND h.locked_until IS NULL AND h.next_attempt_at >= u.until)""",
    come_due="""UPDATE deliveries AS d SET next_attempt_at = %s
WHERE d.seq = ANY(ARRAY(
    SELECT x.seq FROM deliveries x
    WHERE x.seq = ANY(ARRAY(
        SELECT l.seq
        FROM unnest(CAST(%s AS TEXT[]), CAST(%s AS TEXT[]), CAST(%s AS INTEGER[]))
            AS v(sub, lead, version)
        CROSS JOIN LATERAL (
            SELECT later.seq, later.status FROM deliveries later
            WHERE later.subscription_id = v.sub AND later.entity_id = v.lead
              AND later.entity_version > v.version
              AND later.status IN ('pending', 'failed')
            ORDER BY later.entity_version
            LIMIT 1
        ) AS l
        WHERE l.status <> 'failed'))
      AND (x.status || '') = 'pending' AND x.locked_until IS NULL
      AND x.next_attempt_at + 0 > %s
    ORDER BY x.seq
    FOR UPDATE SKIP LOCKED))""",
    streak_end="""UPDATE subscriptions SET first_failure_at = NULL
WHERE id = ANY(CAST(:ids AS TEXT[])) AND first_failure_at IS NOT NULL""",
    streak_start="""UPDATE subscriptions SET first_failure_at = :now
WHERE id = ANY(CAST(:ids AS TEXT[])) AND first_failure_at IS NULL""",
    circuit_close="""UPDATE subscriptions AS s SET circuit_failures = 0, circuit_opened_at = NULL,
    circuit_retry_at = NULL, circuit_cooldown = NULL, circuit_probe_until = NULL
FROM (SELECT id, circuit_opened_at, circuit_retry_at FROM subscriptions
      WHERE id = ANY(CAST(:ids AS TEXT[]))) AS was
WHERE s.id = was.id AND (s.circuit_failures > 0 OR s.circuit_retry_at IS NOT NULL)
RETURNING s.id, was.circuit_opened_at, was.circuit_retry_at""",
    open_circuits=None,
    unanswered_due="""UPDATE deliveries SET next_attempt_at = :now
WHERE subscription_id IN (
      SELECT id FROM subscriptions WHERE id = ANY(CAST(:ids AS TEXT[]))
        AND circuit_retry_at IS NOT NULL AND enabled AND deleted_at IS NULL)
  AND status = 'failed' AND next_attempt_at > :now AND locked_until IS NULL
  AND (starts_with(last_error, :turned_away) OR starts_with(last_error, :no_response))""",
    columnar=True,
    id_list=_array,
)


def queue_statements(dialect: str) -> QueueStatements:
    """Return the queue statements of `dialect` (`sqlite` or `postgresql`)."""
    return SQLITE if dialect == "sqlite" else POSTGRES
