"""The delivery queue in SQL: claim due deliveries with a lease, record verdicts in batches.

PostgreSQL claims in one statement with `FOR UPDATE SKIP LOCKED`, so several workers share the
work. SQLite has one writer at a time (`BEGIN IMMEDIATE` under the write gate): its claim reads
the due rows, caps them per subscription in Python (cheaper there than a window function), then
leases them, all in one transaction. Verdicts are written with driver-level `executemany`.
The statements of each dialect are named in adapters/db/queue_sql.py.

Three things keep one endpoint or one crash from holding up the rest:
- the circuit breaker (domain/circuit.py): the due deliveries of a subscription whose circuit
  is open are claimed to be turned away (not sent, one attempt spent on the schedule); a
  half-open one gives one delivery, the probe, to one worker at a time (`circuit_probe_until`
  reserves it); when a circuit closes, what got no answer is due at once;
- leases are short and renewed by the worker's heartbeat (`renew`), one statement per tick;
- on SQLite (one host), a starting worker releases the leases of local workers that are gone
  (`recover`): `locked_by` is `host:pid:suffix`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, select, text, update

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import WriteGate, is_locked, is_sqlite
from leadhook.adapters.db.queue_sql import queue_statements
from leadhook.adapters.db.repositories import driver_in_transaction
from leadhook.adapters.secretbox import SecretBox, box_for
from leadhook.domain.circuit import Circuit, after_no_answer
from leadhook.services.lanes import LANE_DEPTH, MAX_IN_FLIGHT, claim_cap
from leadhook.services.ports import (
    UNFINISHED,
    DeliveryStatus,
    Job,
    Verdict,
    log_circuit_closed,
    outcome_slot,
    tally,
)

DELIVERED = DeliveryStatus.DELIVERED
FAILED = DeliveryStatus.FAILED
DEAD = DeliveryStatus.DEAD

_d = t.deliveries.c
_s = t.subscriptions.c

# An upsert adding a record's counts to its worker's slot (`tally`): the same text in both
# dialects, run by sqlite3 itself on SQLite (as the record's other statements are there).
_COUNT_OUTCOMES = """INSERT INTO delivery_outcomes (outcome, slot, n)
VALUES ({outcome}, {slot}, {n})
ON CONFLICT (outcome, slot) DO UPDATE SET n = delivery_outcomes.n + excluded.n"""
_COUNT_OUTCOMES_SQLITE = _COUNT_OUTCOMES.format(outcome="?", slot="?", n="?")
_COUNT_OUTCOMES_NAMED = text(_COUNT_OUTCOMES.format(outcome=":outcome", slot=":slot", n=":n"))


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


def _job(row: Sequence[Any], lease_until: float, now: float, box: SecretBox) -> Job:
    (seq, id_, mid, sub_id, event_id, entity_id, version, attempts, _due, payload, url, secret,
     previous, previous_expires, max_in_flight, rate, first_failure_at, retry_at) = row  # fmt: skip
    # Stored encrypted; the box caches each decrypted token, so a claim pays a dict lookup.
    secret, previous = box.decrypt(secret), box.decrypt_optional(previous)
    # A claimed row of a circuit still open is turned away; one whose retry_at has come is
    # the probe of a half-open circuit (the claim takes no other).
    open_until = retry_at if retry_at is not None and retry_at > now else None
    return Job(
        seq, id_, mid, sub_id, event_id, entity_id, version, attempts, payload.encode(), url,
        secret, max_in_flight, rate, lease_until, previous, previous_expires, first_failure_at,
        open_until, retry_at is not None and open_until is None,
    )  # fmt: skip


def _text(value: str) -> str:
    """A text as stored: PostgreSQL's text holds no NUL, which an endpoint's answer may."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _opt_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _attempt_rows(verdicts: Sequence[Verdict]) -> list[tuple[Any, ...]]:
    # Floats as floats: on PostgreSQL each column travels as one array, and psycopg dumps a
    # list of one Python type only.
    return [
        (o.job.seq, float(a.attempted_at), a.status_code, float(a.latency_ms),
         _opt_text(a.error), _text(a.response_body))
        for o in verdicts
        for a in (o.attempt,)
    ]  # fmt: skip


def _finish_rows(verdicts: Sequence[Verdict], now: float, worker_id: str) -> list[tuple[Any, ...]]:
    return [
        (str(o.status), o.job.attempt_count + 1, _opt_float(o.next_attempt_at),
         _opt_text(o.last_error), now, o.job.seq, worker_id)
        for o in verdicts
    ]  # fmt: skip


def _order_rows(
    verdicts: Sequence[Verdict],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the verdicts change for their leads' later deliveries (per-lead order): those of a
    delivery that failed wait for its next attempt (`wait_behind`: subscription, lead, version,
    its next attempt, its seq); the next one of one that finished may go (`come_due`:
    subscription, lead, version)."""
    waits: list[tuple[Any, ...]] = []
    ended: list[tuple[Any, ...]] = []
    for o in verdicts:
        job = o.job
        if o.status == FAILED and o.next_attempt_at is not None:
            waits.append(
                (job.subscription_id, job.entity_id, job.entity_version,
                 float(o.next_attempt_at), job.seq)
            )  # fmt: skip
        elif o.status in (DELIVERED, DEAD):
            ended.append((job.subscription_id, job.entity_id, job.entity_version))
    return waits, ended


def _at_cap(rows: Sequence[Sequence[Any]], probes: Collection[str]) -> set[str]:
    """The subscriptions of which a PostgreSQL claim took as many jobs as `claim_cap` lets it
    (it caps in SQL, so more of theirs may be due): the claim's next pass skips them."""
    taken: dict[str, int] = defaultdict(int)
    caps: dict[str, int] = {}
    for row in rows:
        sub = row[3]
        taken[sub] += 1
        if sub not in caps:  # a probe's cap is one (a half-open circuit)
            caps[sub] = claim_cap(row[14], row[15], 0.0 if sub in probes else None)
    return {sub for sub, n in taken.items() if n >= caps[sub]}


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The same values as one list per column (PostgreSQL's `columnar` statements)."""
    return [list(column) for column in zip(*rows, strict=True)]


# The calls an event loop may run itself (try_now): one short transaction each.
_INLINE = frozenset({"claim", "settle_and_claim", "record", "release"})

BUSY_SLICE = 0.2
"""Seconds a queue transaction on a thread waits at a time for SQLite's write lock held by
another program, before it looks whether it should stop waiting (`_begun`)."""


_BUSY_MS = "leadhook_busy_ms"  # a connection's `info`: its own busy timeout, in ms


class _NotNow(Exception):
    """SQLite's write lock is held by another program: not a call for the loop (`try_now`)."""


SKIP_TTL = 10.0  # seconds a claim's starting point (`_skip_to`) is trusted
SKIP_MARGIN = 5.0  # seconds it starts before it (other hosts' clocks)
SKIP_MEMOS = 8  # starting points kept (for as many sets of skipped subscriptions)
CLAIM_PASSES = 4  # the most walks of the due index one claim makes (see `_claim_in`)
SWEEP_EVERY = 5.0
"""Seconds between two claims that look for deliveries due behind an earlier one that waits
(`wait_sweep`); a sweep that found any looks again at the next claim."""
SWEEP_WALK = 1_000  # the due rows one sweep looks at (~5 ms of SQLite's write lock, 1,000 moved)

log = logging.getLogger("leadhook.queue")


@dataclass(frozen=True)
class _Skip:
    """Where claims skipping (a superset of) `excluded` start their walk, found at `at`."""

    excluded: frozenset[str]
    after: float
    at: float


class SqlDeliveryQueue:
    """Claim, finish and release deliveries; every call is one short transaction."""

    def __init__(self, engine: Engine, gate: WriteGate) -> None:
        self._engine = engine
        self._gate = gate
        self._box = box_for(engine)
        self._sqlite = is_sqlite(engine)
        self._sql = sql = queue_statements(engine.dialect.name)
        self._claim_sql = text(sql.claim)
        self._first_due_outside = text(sql.first_due_outside)
        self._skips: dict[frozenset[str], _Skip] = {}
        self._wait_sweep = text(sql.wait_sweep)
        self._next_sweep = 0.0  # monotonic time of the next `wait_sweep` (`_claim_in`)
        self._reserve_probes = text(sql.reserve_probes)
        self._renew = text(sql.renew)
        self._live = text(sql.live)
        self._urls = text(sql.urls)
        self._release = text(sql.release)
        self._streak_end = text(sql.streak_end)
        self._streak_start = text(sql.streak_start)
        self._circuit_close = text(sql.circuit_close)
        self._open_circuits = None if sql.open_circuits is None else text(sql.open_circuits)
        self._unanswered_due = text(sql.unanswered_due)
        self._here = threading.local()  # `held`: this thread holds the gate (try_now)
        self._stopping = threading.Event()  # `stop_waiting`

    def _named(self, conn: Connection, stmt: TextClause, params: dict[str, Any]) -> Any:
        """Run one of the named-parameter statements: on SQLite by the driver itself
        (sqlite3 reads `:name` markers), on PostgreSQL through `text()`.

        Through `text()` each cost SQLite ~0.1 ms of SQLAlchemy's execution and result
        set-up, about a twentieth of a drain's CPU (in-process, six pairs: 162 -> 152 us a
        delivery)."""
        if self._sqlite:
            return driver_in_transaction(conn).execute(stmt.text, params)
        return conn.execute(stmt, params)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        held = getattr(self._here, "held", False)  # try_now took the gate for this thread
        self._here.opened = []  # circuits this transaction opens (`_circuits`)
        self._here.closed = []  # and those it closes, with how long they were open
        self._here.counts = {}  # what its records count (`_record_in`, `_count`)
        with nullcontext() if held else self._gate.hold(), self._begun(inline=held) as conn:
            yield conn
            self._count(conn)
        for sub_id, circuit, reopened in self._here.opened:
            log.warning(
                "circuit opened: the endpoint does not answer",
                extra={
                    "subscription_id": sub_id,
                    "consecutive_failures": circuit.failures,
                    "retry_in_s": circuit.cooldown,
                    "reopened": reopened,
                },
            )
        for sub_id, open_for in self._here.closed:
            log_circuit_closed(log, sub_id, open_for, "a delivery's answer")
        self._here.opened = []
        self._here.closed = []

    @contextmanager
    def _begun(self, *, inline: bool) -> Iterator[Connection]:
        """`engine.begin()`, with SQLite's write lock waited for as a stoppable caller may.

        The write gate orders leadhook's own writers; another program (the `sqlite3` shell,
        a backup tool) can hold SQLite's lock without it. SQLite's busy handler then waits
        up to `BUSY_TIMEOUT` inside `BEGIN IMMEDIATE`, deaf to everything: on the loop
        (`try_now`) that froze the delivery process, sends and heartbeats included, and on
        a thread it held a stop for as long (serve took 27 s to stop, a review). On the loop
        the lock is not waited for at all (`_NotNow`: the call goes to a thread); on a
        thread it is waited for `BUSY_SLICE` at a time, up to the connection's own busy
        timeout in all, and not after `stop_waiting`.
        """
        if not self._sqlite:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            # The connection's own wait (`BUSY_TIMEOUT`, as every connection is set up) is the
            # whole wait; read once a connection.
            wait_ms = conn.info.get(_BUSY_MS)
            if wait_ms is None:
                wait_ms = conn.info[_BUSY_MS] = driver.execute("PRAGMA busy_timeout").fetchone()[0]
            slice_ms = 0 if inline else min(wait_ms, int(BUSY_SLICE * 1000))
            driver.execute(f"PRAGMA busy_timeout={slice_ms}")
            try:
                deadline = time.monotonic() + wait_ms / 1000
                while True:
                    try:
                        transaction = conn.begin()
                        break
                    except Exception as exc:
                        if not is_locked(exc):
                            raise
                        conn.rollback()  # nothing began: the connection is as it was
                        if inline:
                            raise _NotNow from exc
                        if self._stopping.is_set() or time.monotonic() >= deadline:
                            raise
                with transaction:
                    yield conn
            finally:
                if not conn.invalidated:
                    driver.execute(f"PRAGMA busy_timeout={wait_ms}")

    def stop_waiting(self) -> None:
        """From now on a transaction waiting for SQLite's write lock gives up (`_begun`)."""
        self._stopping.set()

    def try_now(self, call: str, /, **kwargs: Any) -> tuple[bool, Any]:
        """Run `call` (claim, settle_and_claim, record, release) at once if the write gate is
        free this instant: SQLite only, for an event loop, which must not wait for the gate
        (another process's transaction) nor for a PostgreSQL round trip. (False, None): run
        it on a thread instead."""
        if not self._sqlite or call not in _INLINE or not self._gate.try_acquire():
            return False, None
        self._here.held = True
        try:
            return True, getattr(self, call)(**kwargs)
        except _NotNow:  # another program holds SQLite's write lock: a thread waits for it
            return False, None
        finally:
            self._here.held = False
            self._gate.release()

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
        with self._tx() as conn:
            rows = self._claim_in(conn, worker_id, limit, now, lease_until, exclude)
            return self._jobs(rows, lease_until, now)  # a job not built undoes the lease

    def settle_and_claim(
        self,
        *,
        worker_id: str,
        verdicts: Sequence[Verdict],
        releases: Sequence[int],
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        """Record `verdicts`, release `releases`, then claim: all in one transaction.

        A delivery process at a steady rate would otherwise commit twice per round (its
        claim, then the record of what that claim sent), and on SQLite each commit of its
        sends the API's connection back to the file for its pages. Recorded first, so the
        claim already sees the next event of a lead whose delivery just finished.
        """
        with self._tx() as conn:
            if verdicts:
                self._record_in(conn, worker_id, verdicts, now)
            if releases:
                self._release_in(conn, worker_id, releases, now)
            rows = self._claim_in(conn, worker_id, limit, now, lease_until, exclude)
            # Built before the commit: if a job cannot be (a secret the key cannot open), the
            # whole transaction is undone, so the verdicts it carried are never written twice.
            return self._jobs(rows, lease_until, now)

    def _jobs(self, rows: list[tuple[Any, ...]], lease_until: float, now: float) -> list[Job]:
        rows.sort(key=lambda r: (r[8], r[0]))  # next_attempt_at, then seq
        return [_job(r, lease_until, now, self._box) for r in rows]

    def _claim_in(
        self,
        conn: Connection,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[tuple[Any, ...]]:
        id_list = self._sql.id_list
        if not self._sqlite:
            # A fresh backlog has no statistics yet: the planner then read every due row
            # in a bitmap scan and sorted them all, where a walk of the due index in order
            # stops at the limit (80 ms → 30 ms a claim of 256 out of 10,000).
            assert self._sql.claim_setup is not None  # the PostgreSQL statements
            conn.exec_driver_sql(self._sql.claim_setup)
        probes = set(
            r[0]
            for r in self._named(
                conn, self._reserve_probes, {"now": now, "lease_until": lease_until}
            )
        )
        params: dict[str, Any] = {"now": now, "probes": id_list(sorted(probes))}
        if not self._sqlite:
            params.update(
                lease_until=lease_until, worker=worker_id, depth=LANE_DEPTH, mif=MAX_IN_FLIGHT
            )
        rows: list[tuple[Any, ...]] = []
        # A disabled subscription's due backlog stays in the due index, earliest first: every
        # pass walked all of it and dropped each row (300 ms a claim behind 450,000, the
        # worker busy for ever and every tenant's writes slower: a scale review). Skipped like
        # a subscription at its share, the walk starts after it (`_skip_to`).
        skip = frozenset(exclude) | self._disabled_with_work(conn)
        passed: frozenset[str] = frozenset()
        for walk in range(CLAIM_PASSES):
            # A pass that took a subscription's whole share of the claim (`claim_cap`) leaves
            # that subscription's other due rows where they are; the next pass skips it and
            # starts after its due backlog (`_skip_to`). Without it, an endpoint failing at
            # once (never filling its slots, so never skipped by the dispatcher) kept every
            # claim on its backlog: another tenant's deliveries due later waited behind all of
            # it (on PostgreSQL 2.3-3.1 s behind 10,000, ~20 s behind 200,000).
            want = limit - len(rows)
            params.update(
                limit=want,
                scan=want * 2,
                exclude=id_list(sorted(skip)),
                after=self._skip_to(conn, skip, now, passed) if skip else -1.0,
            )
            if walk == 0:
                self._sweep(conn, params, now)
            if self._sqlite:
                got, capped = self._claim_sqlite(conn, params, worker_id, lease_until, probes)
            else:
                got = [tuple(r) for r in conn.execute(self._claim_sql, params)]
                capped = _at_cap(got, probes)
            rows += got
            capped -= skip
            if len(rows) >= limit or not capped:
                break
            skip |= capped
            passed |= capped
        unused = probes - {r[3] for r in rows}
        if unused:  # nothing of theirs was due: the next claim may probe them
            conn.execute(
                update(t.subscriptions)
                .where(_s.id.in_(sorted(unused)))
                .values(circuit_probe_until=None)
            )
        return rows

    def _sweep(self, conn: Connection, params: dict[str, Any], now: float) -> None:
        """Every `SWEEP_EVERY` seconds, before a claim's first walk: move the deliveries due
        behind an earlier one of their lead that waits for its retry to that retry's time
        (`wait_sweep`), out of this walk's way and the next ones'. A sweep that found any
        runs again at the next claim, until the front of the due index is clear."""
        if time.monotonic() < self._next_sweep:
            return
        swept = {"now": now, "after": params["after"], "exclude": params["exclude"]}
        found = self._named(conn, self._wait_sweep, {**swept, "walk": SWEEP_WALK}).fetchall()
        self._wait_until(conn, found)
        self._next_sweep = 0.0 if found else time.monotonic() + SWEEP_EVERY

    def _wait_until(self, conn: Connection, found: Sequence[Sequence[Any]]) -> None:
        """Move the deliveries `found` names (seq, time, the seq of the one it waits behind,
        as `wait_sweep` and PostgreSQL's `wait_behind` answer them) to that time, if that one
        still waits so (`wait_until`)."""
        moves = [(int(r[0]), float(r[1]), int(r[2])) for r in found]
        if not moves:
            return
        if self._sql.columnar:  # PostgreSQL
            seqs, times, heads = _columns(moves)
            conn.exec_driver_sql(self._sql.wait_until, (seqs, times, heads, seqs))
        else:
            driver_in_transaction(conn).executemany(self._sql.wait_until, moves)

    @staticmethod
    def _disabled_with_work(conn: Connection) -> frozenset[str]:
        """The disabled (not deleted) subscriptions that have unfinished deliveries."""
        waiting = (
            select(_d.seq)
            .where(_d.subscription_id == _s.id, _d.status.in_(UNFINISHED))
            .limit(1)
            .exists()
        )
        query = select(_s.id).where(~_s.enabled, _s.deleted_at.is_(None), waiting)
        return frozenset(str(r) for r in conn.execute(query).scalars())

    def _skip_to(
        self, conn: Connection, excluded: frozenset[str], now: float, passed: frozenset[str]
    ) -> float:
        """Where a claim skipping `excluded` may start its walk of the due index.

        A claim skips the subscriptions at their share, yet walked their due rows ahead of
        everyone else's: ~0.3 µs a row, 150 ms a claim behind a tenant's 535,000 (and the API
        waited for the write lock behind it). Every unfinished delivery of any other
        subscription is due no earlier than the first one found here, and a row written later
        is due no earlier than when it was written (new, retried, replayed, released and
        recovered rows are due "now"; a lease ends later). So while every subscription then
        skipped is still skipped, the rows before that point are all skipped ones, and a claim
        starts after them. Looked up again after SKIP_TTL, with SKIP_MARGIN for clocks of other
        hosts that run a little behind and for PostgreSQL transactions still open then (a row
        they commit later may be due a little before the lookup); a row missed that way waits
        at most until the next lookup.

        A point found for fewer skipped subscriptions holds for more; it is used unless it
        leaves out one of `passed` (the subscriptions an earlier pass of this claim took its
        cap of: the point is there to jump over their backlog).
        """
        fresh = [
            m.after
            for m in self._skips.values()
            if passed <= m.excluded <= excluded and 0 <= now - m.at < SKIP_TTL
        ]
        if fresh:
            return max(fresh)
        params = {"exclude": self._sql.id_list(sorted(excluded))}
        row = self._named(conn, self._first_due_outside, params).fetchone()
        after = (now if row is None else min(float(row[0]), now)) - SKIP_MARGIN
        if len(self._skips) >= SKIP_MEMOS:  # the oldest goes
            del self._skips[min(self._skips, key=lambda k: self._skips[k].at)]
        self._skips[excluded] = _Skip(excluded, after, now)
        return after

    def _claim_sqlite(
        self,
        conn: Connection,
        params: dict[str, Any],
        worker_id: str,
        lease_until: float,
        probes: Collection[str],
    ) -> tuple[list[tuple[Any, ...]], set[str]]:
        """Pick, lease and read one pass's jobs; also return the subscriptions the pass took
        as many jobs of as `claim_cap` lets it (as `_at_cap` does on PostgreSQL).

        Taking the cap is what counts, not meeting a row beyond it in this pass's walk: the
        next pass starts elsewhere (`_skip_to`) and would otherwise take that subscription's
        cap again, a second probe of a half-open circuit among them."""
        taken: dict[str, int] = defaultdict(int)
        capped: set[str] = set()
        seqs: list[int] = []
        due = self._named(conn, self._claim_sql, params)
        try:
            for seq, sub_id, _due, max_in_flight, rate, retry_at in due:
                if sub_id in capped:
                    continue
                taken[sub_id] += 1
                seqs.append(seq)
                # A probe's cap is one; an open circuit's rows (turned away) take the usual.
                probe = retry_at if sub_id in probes else None
                if taken[sub_id] >= claim_cap(max_in_flight, rate, probe):
                    capped.add(sub_id)
                if len(seqs) == params["limit"]:
                    break
        finally:
            due.close()  # the rest of the walk is not read
        if not seqs:
            return [], capped
        sql = self._sql
        assert sql.lease is not None and sql.jobs is not None  # the SQLite statements
        batch = sql.id_list(seqs)
        driver = driver_in_transaction(conn)
        driver.execute(sql.lease, (lease_until, lease_until, worker_id, batch))
        jobs: list[tuple[Any, ...]] = driver.execute(sql.jobs, (batch,)).fetchall()
        return jobs, capped

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        """Store the attempts and the deliveries' new states; track failing subscriptions."""
        if not verdicts:
            return
        with self._tx() as conn:
            self._record_in(conn, worker_id, verdicts, now)

    def _record_in(
        self, conn: Connection, worker_id: str, verdicts: Sequence[Verdict], now: float
    ) -> None:
        every = verdicts
        attempts = _attempt_rows(verdicts)
        finished = _finish_rows(verdicts, now, worker_id)
        # How many deliveries this record ended dead: only those whose lease it still held
        # (`finish` leaves the others to the worker that took them over), or an outage longer
        # than a lease counted some twice (an operator's review).
        if self._sql.columnar:  # PostgreSQL: the same values, an array per column
            conn.exec_driver_sql(self._sql.insert_attempts, tuple(_columns(attempts)))
            status, count, due, error, _, seq, _ = _columns(finished)
            params = (seq, worker_id, now, seq, status, count, due, error, worker_id)
            ended = conn.exec_driver_sql(self._sql.finish, params).fetchall()
            dead = sum(1 for (s,) in ended if s == DeliveryStatus.DEAD)
        else:  # SQLite: sqlite3 itself, a row at a time in-process
            driver = driver_in_transaction(conn)
            driver.executemany(self._sql.insert_attempts, attempts)
            dying = [row for row in finished if row[0] == DeliveryStatus.DEAD]
            dead = driver.executemany(self._sql.finish, dying).rowcount if dying else 0
            driver.executemany(
                self._sql.finish, [row for row in finished if row[0] != DeliveryStatus.DEAD]
            )
        self._keep_lead_order(conn, verdicts, now)
        # What an attempt says of the endpoint (its streak, a 410, its circuit) holds only
        # while the subscription still points at the URL the attempt went to: one sent before
        # a PATCH to a new URL says nothing of the new endpoint.
        ids = self._sql.id_list(sorted({o.job.subscription_id for o in verdicts}))
        urls = dict(self._named(conn, self._urls, {"ids": ids}).fetchall())
        verdicts = [o for o in verdicts if urls.get(o.job.subscription_id) == o.job.url]
        succeeded = {o.job.subscription_id for o in verdicts if o.status == DELIVERED}
        failing = {o.job.subscription_id for o in verdicts} - succeeded
        if succeeded:
            self._named(conn, self._streak_end, {"ids": self._sql.id_list(sorted(succeeded))})
        if failing:
            ids = self._sql.id_list(sorted(failing))
            self._named(conn, self._streak_start, {"ids": ids, "now": now})
        self._disable(conn, verdicts, now)
        opened_before = len(self._here.opened)
        self._circuits(conn, verdicts, now)
        # Counted in the transaction that stores them (every attempt, even one to a URL the
        # subscription has left), written by `_tx` as its last statement (`_count`).
        counts = self._here.counts
        for name, n in tally(every, len(self._here.opened) - opened_before, dead).items():
            counts[name] = counts.get(name, 0) + n
        self._here.slot = outcome_slot(worker_id)

    def _keep_lead_order(self, conn: Connection, verdicts: Sequence[Verdict], now: float) -> None:
        """Hold a failed delivery's later versions back until its next attempt, out of the
        claims' way (`wait_behind`); let the next one of a finished one go (`come_due`)."""
        waits, ended = _order_rows(verdicts)
        if self._sql.columnar:  # PostgreSQL: found, then moved by seq (`wait_until`)
            if waits:
                found = conn.exec_driver_sql(self._sql.wait_behind, tuple(_columns(waits)))
                self._wait_until(conn, found.fetchall())
            if ended:
                subs, leads, versions = _columns(ended)
                conn.exec_driver_sql(self._sql.come_due, (now, subs, leads, versions, now))
            return
        driver = driver_in_transaction(conn)
        if waits:
            driver.executemany(self._sql.wait_behind, [(w[3], *w[:3], w[4]) for w in waits])
        if ended:
            driver.executemany(self._sql.come_due, [(*e, now) for e in ended])

    def _count(self, conn: Connection) -> None:
        """Add what this transaction's records counted to the worker's slot of
        `delivery_outcomes`: the last statement before the commit. On PostgreSQL a worker
        holding a counter row then has only its COMMIT left, so another worker sharing the slot
        waits that long and no longer (taken first, the rows were held through the claim that
        follows a record), and the rows are always taken in `OUTCOMES` order: no deadlock."""
        counts, slot = self._here.counts, getattr(self._here, "slot", 0)
        if not counts:
            return
        if self._sql.columnar:  # PostgreSQL
            rows = [{"outcome": name, "slot": slot, "n": n} for name, n in counts.items()]
            conn.execute(_COUNT_OUTCOMES_NAMED, rows)
        else:
            driver = driver_in_transaction(conn)
            driver.executemany(
                _COUNT_OUTCOMES_SQLITE, [(name, slot, n) for name, n in counts.items()]
            )

    def _circuits(self, conn: Connection, verdicts: Sequence[Verdict], now: float) -> None:
        """Close the circuit of endpoints that answered; count the silence of the others.

        An attempt the circuit turned away (`Verdict.sent` false) says nothing of the endpoint.
        A circuit that closes makes what got no answer (turned away or not) due at once."""
        sent = [o for o in verdicts if o.sent]
        answered = {o.job.subscription_id for o in sent if o.attempt.status_code is not None}
        silent: dict[str, list[float]] = defaultdict(list)
        probed: set[str] = set()
        for o in sent:
            if o.attempt.status_code is None and o.job.subscription_id not in answered:
                silent[o.job.subscription_id].append(o.attempt.attempted_at)
                if o.job.probe:
                    probed.add(o.job.subscription_id)
        if answered:
            ids = sorted(answered)
            # Before the close: only a circuit that was open (and whose subscription may send)
            # makes what got no answer due; a closed one's failures keep their schedule.
            params = self._sql.unanswered_due_params(ids, now)
            self._named(conn, self._unanswered_due, params)
            closing = {"ids": params["ids"]}
            if self._open_circuits is not None:  # SQLite: read what is open, then close it
                was_open = self._named(conn, self._open_circuits, closing).fetchall()
                self._named(conn, self._circuit_close, closing)
            else:  # PostgreSQL: the close returns what it closed, as it was
                closed = self._named(conn, self._circuit_close, closing).fetchall()
                was_open = [(sub, at) for sub, at, retry_at in closed if retry_at is not None]
            self._here.closed.extend((sub, now - (at or now)) for sub, at in was_open)
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
            after = after_no_answer(before, silent[sub_id], now, sub_id in probed)
            values: dict[str, Any] = {
                "circuit_failures": after.failures,
                "circuit_opened_at": after.opened_at,
                "circuit_retry_at": after.retry_at,
                "circuit_cooldown": after.cooldown,
            }
            if after.opened_at != before.opened_at:
                values["circuit_probe_until"] = None  # (re)opened: the probe is over
            conn.execute(update(t.subscriptions).where(_s.id == sub_id).values(**values))
            if after.opened_at is not None and after.opened_at != before.opened_at:
                # The stored circuit, which every worker and the API see: opened by a burst or
                # by one delivery's retries alike, or again by a failed probe. Said once the
                # transaction has committed (`_tx`).
                self._here.opened.append((sub_id, after, before.opened_at is not None))

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

    def release(self, *, worker_id: str, seqs: Sequence[int], now: float) -> None:
        """Give leased deliveries back unsent, so any worker can claim them at once."""
        if not seqs:
            return
        with self._tx() as conn:
            self._release_in(conn, worker_id, seqs, now)

    def _release_in(
        self, conn: Connection, worker_id: str, seqs: Sequence[int], now: float
    ) -> None:
        params = {"seqs": self._sql.id_list(seqs), "worker": worker_id, "now": now}
        self._named(conn, self._release, params)

    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]:
        """Extend the leases `worker_id` still holds on `seqs`; return the seqs it still holds."""
        if not seqs:
            return set()
        with self._tx() as conn:
            params = {
                "lease_until": lease_until,
                "seqs": self._sql.id_list(seqs),
                "worker": worker_id,
            }
            return {int(r[0]) for r in self._named(conn, self._renew, params)}

    def stopped(self, *, subscription_ids: Sequence[str]) -> set[str]:
        """Return those of `subscription_ids` that are disabled or deleted (a read; no lock)."""
        if not subscription_ids:
            return set()
        params = {"ids": self._sql.id_list(sorted(subscription_ids))}
        with self._engine.connect() as raw:
            conn = raw.execution_options(leadhook_readonly=True)  # no write lock on SQLite
            live = {str(r[0]) for r in self._named(conn, self._live, params)}
            conn.rollback()
        return set(subscription_ids) - live

    def recover(self, *, worker_id: str, now: float) -> int:
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
                .values(locked_until=None, locked_by=None, next_attempt_at=now)
            )
            return int(result.rowcount)
