"""The delivery queue in SQL: claim due deliveries with a lease, record verdicts in batches.

PostgreSQL claims in one statement with `FOR UPDATE SKIP LOCKED`, so several workers share the
work. SQLite has one writer at a time (`BEGIN IMMEDIATE` under the write gate): its claim reads
the due rows, caps them per subscription in Python (cheaper there than a window function), then
leases them, all in one transaction. Verdicts are written with driver-level `executemany`.

Three things keep one endpoint or one crash from holding up the rest:
- the circuit breaker (domain/circuit.py): a subscription whose circuit is open is not claimed
  at all (its deliveries stay pending); a half-open one gives one delivery, the probe, to one
  worker at a time (`circuit_probe_until` reserves it);
- leases are short and renewed by the worker's heartbeat (`renew`), one statement per tick;
- on SQLite (one host), a starting worker releases the leases of local workers that are gone
  (`recover`): `locked_by` is `host:pid:suffix`.
"""

from __future__ import annotations

import json
import os
import socket
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, String, TextClause, bindparam, select, text, update

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import WriteGate, is_sqlite
from leadhook.adapters.secretbox import SecretBox, box_for
from leadhook.domain.circuit import Circuit, after_no_answer
from leadhook.services.lanes import LANE_DEPTH, MAX_IN_FLIGHT, claim_cap
from leadhook.services.ports import Job, Verdict

UNFINISHED = "('pending', 'failed')"

# Due, unleased deliveries of enabled subscriptions whose lead has no earlier unfinished delivery
# to that subscription (that is what keeps each lead in order), earliest due first. Written so
# the plan is a walk of ix_deliveries_due in order that stops at the limit, whatever the
# statistics say; the subscription columns are joined to the few rows found.
# A subscription whose circuit is not closed (circuit_retry_at set) is skipped, unless this
# claim reserved its probe (`:probes`, see _RESERVE_PROBES); the probe is capped at one row.
_DUE = f"""
    SELECT due.seq, due.subscription_id, due.next_attempt_at, s.max_in_flight, s.rate_limit_per_s,
           s.circuit_retry_at
    FROM (
        SELECT d.seq, d.subscription_id, d.next_attempt_at
        FROM deliveries d
        WHERE d.status IN {UNFINISHED}
          AND d.next_attempt_at <= :now
          AND (d.locked_until IS NULL OR d.locked_until < :now)
          AND d.subscription_id NOT IN (
              SELECT id FROM subscriptions
              WHERE NOT enabled OR deleted_at IS NOT NULL
                 OR (circuit_retry_at IS NOT NULL AND id NOT IN :probes))
          {{exclude}}
          AND NOT EXISTS (
              SELECT 1 FROM deliveries e
              WHERE e.subscription_id = d.subscription_id
                AND e.entity_id = d.entity_id
                AND e.entity_version < d.entity_version
                AND e.status IN {UNFINISHED})
        ORDER BY d.next_attempt_at
        LIMIT :scan
    ) AS due
    JOIN subscriptions s ON s.id = due.subscription_id"""

# At most `cap` rows per subscription in one claim (see `claim_cap`), so one busy endpoint
# cannot fill a claim; then lock what no other worker holds, lease it and return it whole.
_PG_CLAIM = f"""
WITH due AS ({_DUE}
), ranked AS (
    SELECT seq, next_attempt_at,
           ROW_NUMBER() OVER (
               PARTITION BY subscription_id ORDER BY next_attempt_at, seq) AS rn,
           CASE WHEN circuit_retry_at IS NOT NULL THEN 1  -- the probe of a half-open circuit
                WHEN rate_limit_per_s IS NULL THEN LEAST(max_in_flight, :mif) * :depth
                WHEN rate_limit_per_s < 1 THEN 1
                WHEN rate_limit_per_s >= LEAST(max_in_flight, :mif) THEN LEAST(max_in_flight, :mif)
                ELSE CAST(FLOOR(rate_limit_per_s) AS INTEGER) END AS cap
    FROM due
), picked AS (
    SELECT d.seq FROM deliveries d
    WHERE d.seq IN (SELECT seq FROM ranked WHERE rn <= cap ORDER BY next_attempt_at LIMIT :limit)
      AND d.status IN {UNFINISHED}
      AND (d.locked_until IS NULL OR d.locked_until < :now)
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries AS d SET locked_until = :lease_until, locked_by = :worker
FROM picked p, events e, subscriptions s
WHERE d.seq = p.seq AND e.seq = d.event_seq AND s.id = d.subscription_id
RETURNING {{columns}}"""

_COLUMNS = """d.seq, d.id, d.mid, d.subscription_id, d.event_id, d.entity_id, d.entity_version,
    d.attempt_count, d.next_attempt_at, e.payload, s.url, s.secret, s.previous_secret,
    s.previous_secret_expires_at, s.max_in_flight, s.rate_limit_per_s, s.first_failure_at"""

# The claimed seqs travel as one JSON array, so these statements are the same text every time.
_SQLITE_LEASE = """UPDATE deliveries SET locked_until = ?, locked_by = ?
WHERE seq IN (SELECT value FROM json_each(?))"""
_SQLITE_JOBS = f"""
SELECT {_COLUMNS}
FROM deliveries d
JOIN events e ON e.seq = d.event_seq
JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.seq IN (SELECT value FROM json_each(?))"""

# Half-open circuits whose probe nobody holds: this claim takes their probes. On PostgreSQL a
# concurrent claim waits for the row lock, then finds the probe taken and skips the row.
_RESERVE_PROBES = """UPDATE subscriptions SET circuit_probe_until = :lease_until
WHERE circuit_retry_at <= :now
  AND (circuit_probe_until IS NULL OR circuit_probe_until <= :now)
  AND enabled AND deleted_at IS NULL
RETURNING id"""

# The heartbeat: push the lease of every job this worker still holds, in one statement.
_RENEW = """UPDATE deliveries SET locked_until = :lease_until
WHERE seq IN :seqs AND locked_by = :worker
RETURNING seq"""

_INSERT_ATTEMPTS = """INSERT INTO delivery_attempts
    (delivery_seq, attempted_at, status_code, latency_ms, error, response_body)
    VALUES (?, ?, ?, ?, ?, ?)"""
_FINISH = """UPDATE deliveries SET status = ?, attempt_count = ?, next_attempt_at = ?,
    last_error = ?, locked_until = NULL, locked_by = NULL, updated_at = ?
    WHERE seq = ? AND locked_by = ?"""

_d = t.deliveries.c
_s = t.subscriptions.c


def _text(template: str, exclude: bool) -> TextClause:
    clause = "AND d.subscription_id NOT IN :exclude" if exclude else ""
    stmt = text(template.replace("{exclude}", clause).replace("{columns}", _COLUMNS))
    # Typed: an empty list renders as an empty set of that type (usually no probe is taken).
    stmt = stmt.bindparams(bindparam("probes", expanding=True, type_=String))
    return stmt.bindparams(bindparam("exclude", expanding=True)) if exclude else stmt


def _this_host() -> str:
    return socket.gethostname()[:32]


def _gone(locked_by: str, host: str) -> bool:
    """Tell whether the worker named `locked_by` (host:pid:suffix) was a process of this host
    that no longer runs."""
    parts = locked_by.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # an earlier dispatcher of this very process: its leases are its own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by another user
    return False


def _job(row: Sequence[Any], lease_until: float, box: SecretBox) -> Job:
    (seq, id_, mid, sub_id, event_id, entity_id, version, attempts, _due, payload, url, secret,
     previous, previous_expires, max_in_flight, rate, first_failure_at) = row  # fmt: skip
    # Stored encrypted; the box caches each decrypted token, so a claim pays a dict lookup.
    secret, previous = box.decrypt(secret), box.decrypt_optional(previous)
    return Job(
        seq, id_, mid, sub_id, event_id, entity_id, version, attempts, payload.encode(), url,
        secret, max_in_flight, rate, lease_until, previous, previous_expires, first_failure_at,
    )  # fmt: skip


class SqlDeliveryQueue:
    """Claim, finish and release deliveries; every call is one short transaction."""

    def __init__(self, engine: Engine, gate: WriteGate) -> None:
        self._engine = engine
        self._gate = gate
        self._box = box_for(engine)
        self._sqlite = is_sqlite(engine)
        template = _DUE if self._sqlite else _PG_CLAIM
        self._claim_sql = {flag: _text(template, flag) for flag in (False, True)}
        self._renew = text(_RENEW).bindparams(bindparam("seqs", expanding=True))
        marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_attempts = _INSERT_ATTEMPTS.replace("?", marker)
        self._finish = _FINISH.replace("?", marker)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._gate.hold(), self._engine.begin() as conn:
            yield conn

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        """Lease up to `limit` due deliveries to `worker_id`, earliest due first."""
        params: dict[str, Any] = {"now": now, "limit": limit, "scan": limit * 2}
        if exclude:
            params["exclude"] = list(exclude)
        stmt = self._claim_sql[bool(exclude)]
        with self._tx() as conn:
            probes = set(
                conn.execute(text(_RESERVE_PROBES), {"now": now, "lease_until": lease_until})
                .scalars()
                .all()
            )
            params["probes"] = sorted(probes)
            if self._sqlite:
                rows = self._claim_sqlite(conn, stmt, params, worker_id, lease_until)
            else:
                params.update(
                    lease_until=lease_until, worker=worker_id, depth=LANE_DEPTH, mif=MAX_IN_FLIGHT
                )
                rows = [tuple(r) for r in conn.execute(stmt, params)]
            unused = probes - {r[3] for r in rows}
            if unused:  # nothing of theirs was due: the next claim may probe them
                conn.execute(
                    update(t.subscriptions)
                    .where(_s.id.in_(sorted(unused)))
                    .values(circuit_probe_until=None)
                )
        rows.sort(key=lambda r: (r[8], r[0]))  # next_attempt_at, then seq
        return [_job(r, lease_until, self._box) for r in rows]

    def _claim_sqlite(
        self,
        conn: Connection,
        stmt: TextClause,
        params: dict[str, Any],
        worker_id: str,
        lease_until: float,
    ) -> list[tuple[Any, ...]]:
        taken: dict[str, int] = defaultdict(int)
        seqs: list[int] = []
        for seq, sub_id, _due, max_in_flight, rate, retry_at in conn.execute(stmt, params):
            if taken[sub_id] < claim_cap(max_in_flight, rate, retry_at):
                taken[sub_id] += 1
                seqs.append(seq)
                if len(seqs) == params["limit"]:
                    break
        if not seqs:
            return []
        batch = json.dumps(seqs)
        conn.exec_driver_sql(_SQLITE_LEASE, (lease_until, worker_id, batch))
        return [tuple(r) for r in conn.exec_driver_sql(_SQLITE_JOBS, (batch,))]

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        """Store the attempts and the deliveries' new states; track failing subscriptions."""
        if not verdicts:
            return
        attempts = [
            (o.job.seq, a.attempted_at, a.status_code, a.latency_ms, a.error, a.response_body)
            for o in verdicts
            for a in (o.attempt,)
        ]
        finished = [
            (
                o.status,
                o.job.attempt_count + 1,
                o.next_attempt_at,
                o.last_error,
                now,
                o.job.seq,
                worker_id,
            )
            for o in verdicts
        ]
        succeeded = {o.job.subscription_id for o in verdicts if o.status == "delivered"}
        failing = {o.job.subscription_id for o in verdicts} - succeeded
        with self._tx() as conn:
            conn.exec_driver_sql(self._insert_attempts, attempts)
            conn.exec_driver_sql(self._finish, finished)
            if succeeded:
                conn.execute(
                    update(t.subscriptions)
                    .where(_s.id.in_(succeeded), _s.first_failure_at.is_not(None))
                    .values(first_failure_at=None)
                )
            if failing:
                conn.execute(
                    update(t.subscriptions)
                    .where(_s.id.in_(failing), _s.first_failure_at.is_(None))
                    .values(first_failure_at=now)
                )
            self._disable(conn, verdicts, now)
            self._circuits(conn, verdicts, now)

    def _circuits(self, conn: Connection, verdicts: Sequence[Verdict], now: float) -> None:
        """Close the circuit of endpoints that answered; count the silence of the others."""
        answered = {o.job.subscription_id for o in verdicts if o.attempt.status_code is not None}
        silent: dict[str, list[float]] = defaultdict(list)
        for o in verdicts:
            if o.attempt.status_code is None and o.job.subscription_id not in answered:
                silent[o.job.subscription_id].append(o.attempt.attempted_at)
        if answered:
            conn.execute(
                update(t.subscriptions)
                .where(
                    _s.id.in_(sorted(answered)),
                    (_s.circuit_failures > 0) | _s.circuit_retry_at.is_not(None),
                )
                .values(
                    circuit_failures=0,
                    circuit_opened_at=None,
                    circuit_retry_at=None,
                    circuit_cooldown=None,
                    circuit_probe_until=None,
                )
            )
        if not silent:
            return
        stmt = select(
            _s.id, _s.circuit_failures, _s.circuit_opened_at, _s.circuit_retry_at,
            _s.circuit_cooldown,
        ).where(_s.id.in_(sorted(silent))).order_by(_s.id)  # fmt: skip
        if not self._sqlite:
            stmt = stmt.with_for_update()
        for sub_id, failures, opened_at, retry_at, cooldown in conn.execute(stmt).all():
            before = Circuit(failures, opened_at, retry_at, cooldown)
            after = after_no_answer(before, silent[sub_id], now)
            values: dict[str, Any] = {
                "circuit_failures": after.failures,
                "circuit_opened_at": after.opened_at,
                "circuit_retry_at": after.retry_at,
                "circuit_cooldown": after.cooldown,
            }
            if after.opened_at != before.opened_at:
                values["circuit_probe_until"] = None  # (re)opened: the probe is over
            conn.execute(update(t.subscriptions).where(_s.id == sub_id).values(**values))

    @staticmethod
    def _disable(conn: Connection, verdicts: Sequence[Verdict], now: float) -> None:
        reasons: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
        for o in verdicts:
            if o.disable is not None:
                reasons[o.job.subscription_id].append((o.disable.reason, o.disable.failing_before))
        for sub_id, items in reasons.items():
            unconditional = [r for r, before in items if before is None]
            reason, before = (unconditional[0], None) if unconditional else items[0]
            conds = [_s.id == sub_id, _s.enabled.is_(True)]
            if before is not None:
                # Auto-disable only if no success has reset the failure streak meanwhile.
                conds.append(_s.first_failure_at <= before)
            conn.execute(
                update(t.subscriptions)
                .where(*conds)
                .values(enabled=False, disabled_reason=reason, updated_at=now)
            )

    def release(self, *, worker_id: str, seqs: Sequence[int]) -> None:
        """Give leased deliveries back unsent, so any worker can claim them at once."""
        if not seqs:
            return
        with self._tx() as conn:
            conn.execute(
                update(t.deliveries)
                .where(_d.seq.in_(list(seqs)), _d.locked_by == worker_id)
                .values(locked_until=None, locked_by=None)
            )

    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]:
        """Extend the leases `worker_id` still holds on `seqs`; return the seqs it still holds."""
        if not seqs:
            return set()
        with self._tx() as conn:
            params = {"lease_until": lease_until, "seqs": list(seqs), "worker": worker_id}
            return {int(seq) for seq in conn.execute(self._renew, params).scalars()}

    def recover(self, *, worker_id: str) -> int:
        """Release the leases of workers of this host that died (SQLite only); return how many.

        SQLite lives on one host, so a lease held by a process of this host that no longer
        runs will never be renewed or recorded: waiting for it to expire only delays delivery.
        On PostgreSQL, workers on other hosts (or in other pid namespaces) cannot be checked:
        their leases expire on their own.
        """
        if not self._sqlite:
            return 0
        host = _this_host()
        with self._tx() as conn:
            holders = conn.execute(
                select(_d.locked_by).where(_d.locked_by.is_not(None)).distinct()
            ).scalars()
            dead = [h for h in holders if h != worker_id and _gone(h, host)]
            if not dead:
                return 0
            result = conn.execute(
                update(t.deliveries)
                .where(_d.locked_by.in_(dead))
                .values(locked_until=None, locked_by=None)
            )
            return int(result.rowcount)
