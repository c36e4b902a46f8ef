"""Group commit: behaviours that arrive together share one transaction, each failing alone.

A commit is the dearest part of a small write (SQLite takes its write lock and appends a WAL
frame; PostgreSQL flushes its WAL to disk). Writer threads take whatever work is waiting (up
to `max_batch` items), run each item in its own savepoint, and commit once: N concurrent
requests cost one commit, and a lone request costs what it did before. An item that fails is
rolled back to its savepoint and fails alone; the others commit. Each item's future is resolved
only after the commit, so nobody is answered for a write that could still be lost.

SQLite has one writer and answers in microseconds: handing each write to another thread cost
more (a GIL hand-over each way) than the write itself. So on SQLite the writes submitted from
an event loop are run on that loop: the first item submitted schedules the commit a few turns
of the loop later (`GATHER_TURNS`, each a `loop.call_soon`), and every item submitted until
then is committed with it: the requests whose bytes arrive while this turn's are handled join
the transaction instead of starting the next one. Writes submitted from a thread with no loop
(the command line, scripts) run at once in the caller's thread. Either way the process's write
gate is held for each transaction. A SQLite group runs without a savepoint an item
(`_run_unguarded`): an item that fails before writing fails alone without one, and one that
fails after writing sends the group round again, each item in its savepoint.

PostgreSQL answers over the network, so its writes go to writer threads (one unless
`LEADHOOK_WRITER_THREADS` says more), each with its own connection and queue (a tenant's
items all go to one, `_queue_of`): a batch waiting on a row lock or on its commit does not
stop the loop (nor the other threads, other tenants' work) for longer than
`LOOP_WAIT_FOR_GROUP`. The writes submitted on the loop are gathered there for a few turns,
as SQLite's, then handed to the threads together, and when the threads were idle the loop
waits for their commit with the GIL let go (`_flush_to_threads`): a thread working beside a
busy loop waited for the GIL after each round trip of its group (bench/profiles.md, the
thirty-second round). Each item's statements
go in psycopg's pipeline mode (adapters/db/pipeline.py): two round trips a behaviour, not one
a statement; and a batch of several is first tried deferred (`_run_deferred`), with one sync
for all of it. An item that PostgreSQL aborts to break a deadlock (or a serialisation failure)
is run again in a later batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, event

from leadhook.adapters.db.engine import (
    BUSY_TIMEOUT,
    WriteGate,
    is_locked,
    is_sqlite,
    locked_error,
)
from leadhook.adapters.db.pipeline import Pipeline, aborted, end_before_core, settle
from leadhook.adapters.db.repositories import driver_in_transaction, unread
from leadhook.adapters.db.uow import BoundUnitOfWork
from leadhook.services.ports import IdFactory, UnitOfWork

T = TypeVar("T")
log = logging.getLogger("leadhook.writer")

# SQLSTATEs after which the same work may simply run again: deadlock, serialisation failure.
_RETRYABLE = frozenset({"40P01", "40001"})
# What a statement fails with when `refuse_waiting` cancels it (query_canceled), and what the
# rest of its transaction then fails with (in_failed_sql_transaction).
_CANCELLED = frozenset({"57014", "25P02"})
# How often a refusal cancels again the statements of a group still running (`refuse_waiting`):
# a cancel that reached the server between two statements cancelled nothing.
_CANCEL_AGAIN = 0.2
_MAX_RUNS = 3
# The longest the loop waits between two tries for a write gate another process holds.
_GATE_RETRY_MAX = 0.002
# The loop's own SQLite connection does not wait in SQLite's busy handler (busy_timeout 0): with
# the gate held, the file's write lock is taken only by another program (a `sqlite3` shell, a
# backup tool), and the flush tries again later, between these, while the loop serves on.
_LOCK_RETRY_MIN, _LOCK_RETRY_MAX = 0.01, 0.05
# PostgreSQL: the longest the event loop waits for the writer threads to commit the writes of
# its turns (`_flush_to_threads`). A group takes a few milliseconds; one that waits on a row
# lock, a stalled server or a synchronous standby goes on without the loop waiting for it.
LOOP_WAIT_FOR_GROUP = 0.05
# How many more turns of the event loop a SQLite flush waits after the turn that scheduled it.
# A request's bytes are read in one turn and its handler submits in the next: committing at the
# end of the submitting turn left out the requests read meanwhile, and each group paid a commit
# (its WAL pages) for ~4.6 behaviours at 16 clients. Waiting two turns (no timer: the loop goes
# round at once when it has work) made the API's CPU an event 0.37-0.38 -> 0.34-0.35 ms and the
# rate +2-8% (16 clients, three pairs); one sequential client measured the same either way
# (bench/profiles.md, the eleventh round).
GATHER_TURNS = 2


def _gone(conn: Connection | None) -> bool:
    """Whether `conn`'s link to the server is broken or closed (psycopg says so after an
    error that lost it; SQLAlchemy when it saw a disconnect)."""
    if conn is None:
        return False
    if conn.invalidated:
        return True
    try:
        driver = conn.connection.driver_connection
    except Exception:  # the pool already let it go: gone
        return True
    return bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))


# Each unit of a group runs in a savepoint of its own (the same text on both dialects).
_SAVEPOINT = "SAVEPOINT leadhook_item"
_ROLLBACK_ITEM = "ROLLBACK TO SAVEPOINT leadhook_item"
_RELEASE_ITEM = "RELEASE SAVEPOINT leadhook_item"
# A SQLite group run without a savepoint a unit (`_run_unguarded`) keeps one for the whole
# group: what it rolls back to when a unit fails after writing.
_SAVEPOINT_GROUP = "SAVEPOINT leadhook_group"
_ROLLBACK_GROUP = "ROLLBACK TO SAVEPOINT leadhook_group"
_RELEASE_GROUP = "RELEASE SAVEPOINT leadhook_group"
# What a unit is failed with when SQLite ended the transaction under it (`_run_unguarded`).
_ENDED = "SQLite ended the transaction: nothing of it was written"


# How a transaction of the writer ran (`GroupWriter.counts`, the API's /metrics): unit by
# unit (each in its savepoint when not alone); deferred, a group of two or more without a
# savepoint a unit (PostgreSQL: in one sync; SQLite: `_run_unguarded`); or deferred, undone by
# a unit's failure and then run unit by unit.
WAYS = ("one_by_one", "deferred", "deferred_redone")


@dataclass
class _Item:
    work: Callable[[UnitOfWork], Any]
    future: Future[Any]
    runs: int = 0
    submitted: float = 0.0  # time.monotonic() when submitted on the loop
    lock_key: str = ""  # the lead whose row the unit locks first ("": none)
    route: str = ""  # its tenant: a tenant's units all go to one writer thread


def _cancel_all(drivers: list[Any]) -> None:
    """Cancel the statement each driver connection runs now (psycopg's `cancel_safe`); a
    connection that is gone already has nothing to cancel."""
    for driver in drivers:
        try:
            driver.cancel_safe(timeout=2.0)
        except Exception:  # closed meanwhile, or the server is gone: nothing runs to cancel
            log.debug("cancelling a waiting group's statement failed", exc_info=True)


def _lock_order(item: _Item) -> str:
    return item.lock_key


def _as_loop_writer(conn: Connection, taken: bool) -> None:
    """Set up a connection as the loop's writer (`taken`), or back as the pool gave it.

    The writer never waits for the write lock (busy timeout 0: `_begin_on_loop`), and keeps
    its savepoints' journal in memory (`temp_store=MEMORY`). SQLite copies every page changed
    inside a savepoint that existed when it began into the savepoint's journal, so that a
    rollback to it can put the page back; a create changes ~28 such pages (a row's page and
    the last leaf of each index, shared by the whole group), ~112 KB, and past 64 KB SQLite
    spills the journal to a temporary file, which `temp_store` keeps on disk by default.
    With a savepoint a unit (as every group ran before `_run_unguarded`, and a group run
    again unit by unit still does), 16 clients wrote ~75 times and 156 KB an event, ~59 of
    those writes and 125 KB of it to that file (bench/profiles.md, eighteenth round). In
    memory the copy is a few microseconds. Only the writer's connection: for the others a
    large sort's temporary b-trees stay on disk.
    """
    # On the driver: through SQLAlchemy the statement would begin a transaction first.
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA busy_timeout={0 if taken else int(BUSY_TIMEOUT * 1000)}")
    driver.execute(f"PRAGMA temp_store={'MEMORY' if taken else 'DEFAULT'}")


def _retryable(exc: BaseException) -> bool:
    return _sqlstate_in(exc, _RETRYABLE)


def _lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection to PostgreSQL is lost: psycopg's own "the connection
    is lost" (no SQLSTATE: raised on the client, in a pipeline while the connection's status
    still read as fine, and on the driver's cursor, where SQLAlchemy does not see it to
    invalidate the connection), a connection exception (08) or an operator's intervention
    (57P: the server shut down or ended the session)."""
    for cause in _causes(exc):
        if isinstance(cause, psycopg.OperationalError):
            state = cause.sqlstate
            return state is None or state.startswith(("08", "57P"))
    return False


def _sqlstate_in(exc: BaseException, states: frozenset[str]) -> bool:
    return any(getattr(cause, "sqlstate", None) in states for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps: SQLAlchemy's `orig`, else its `__cause__`."""
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = getattr(cause, "orig", None) or cause.__cause__


class GroupWriter:
    """Run units of work on writer threads, committing whatever arrived together at once."""

    def __init__(
        self,
        engine: Engine,
        gate: WriteGate,
        *,
        ids: IdFactory,
        threads: int | None = None,
        max_batch: int = 64,
        gather_turns: int = GATHER_TURNS,
    ) -> None:
        self._engine = engine
        self._ids = ids  # the ids of the rows the units of work mint (deliveries)
        self._gate = gate
        self._on_loop = is_sqlite(engine) and not threads
        # PostgreSQL: writes submitted on a loop are gathered there and handed over together.
        self._gathered = engine.dialect.name == "postgresql"
        # One thread by default: its batches are larger (a commit, a tenant read and a log
        # lock shared by more behaviours) and no other writer takes the GIL from the loop
        # between them. With four, PostgreSQL end to end spent 0.85 ms of the API's CPU a
        # behaviour where one spends 0.68, at the same or a lower rate (docs/write-path.md).
        self._threads_wanted = threads or 1
        self._pipelined = engine.dialect.name == "postgresql"
        if self._pipelined and not event.contains(engine, "before_cursor_execute", end_before_core):
            event.listen(engine, "before_cursor_execute", end_before_core)
        self._max_batch = max_batch
        self._gather_turns = gather_turns
        self._counted = threading.Lock()
        self._ways = dict.fromkeys(WAYS, 0)
        self._units = 0
        # A queue per writer thread; a tenant's units all go to one (`_queue_of`).
        self._queues: list[queue.SimpleQueue[_Item | None]] = [
            queue.SimpleQueue() for _ in range(self._threads_wanted)
        ]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        # SQLite, on an event loop: the items of this turn, and the loop's own connection.
        self._pending: list[_Item] = []
        self._loop_conn: Connection | None = None
        self._retry: asyncio.TimerHandle | None = None  # a flush waiting for the gate
        self._refusing: Exception | None = None  # what new writes fail with (`refuse_waiting`)
        # The writer threads' groups being run now, by thread: the driver's connection (read
        # in that thread: a SQLAlchemy Connection is not the loop's to touch) and the items.
        self._running: dict[int, tuple[Any, list[_Item]]] = {}
        self._backoff = 0.0

    def counts(self) -> dict[str, int]:
        """Transactions run so far by way (`WAYS`), and `units`: the units of work in them."""
        with self._counted:
            return {**self._ways, "units": self._units}

    def _count(self, way: str, units: int) -> None:
        with self._counted:
            self._ways[way] += 1
            self._units += units

    def submit(
        self,
        work: Callable[[UnitOfWork], T],
        lock_key: str | None = None,
        route: str | None = None,
    ) -> Future[T]:
        """Queue `work`; its future holds what it returned once its transaction committed.

        `lock_key`: the lead whose row `work` locks first (see `_run`); `route`: its tenant,
        whose units all go to one writer thread (see `_queue_of`)."""
        future: Future[T] = Future()
        item = _Item(work, future, lock_key=lock_key or "", route=route or "")
        if self._closed:
            future.set_exception(RuntimeError("the writer is closed"))
        elif self._refusing is not None:
            future.set_exception(self._refusing)
        elif not self._on_loop:
            if not self._threads:
                self._start()
            if self._gathered and self._gather(item):
                return future
            self._queue_of(item).put(item)
        else:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: write now, on a connection of its own
                self._commit(None, [item], keep=False)
                return future
            if not self._pending and self._retry is None:
                loop.call_soon(self._flush, self._gather_turns)
            item.submitted = time.monotonic()
            self._pending.append(item)
        return future

    def _gather(self, item: _Item) -> bool:
        """PostgreSQL: hold `item` on the running loop for `_flush_to_threads`; False if no
        loop runs in this thread (the item is queued at once)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if not self._pending:
            loop.call_soon(self._flush_to_threads, self._gather_turns)
        self._pending.append(item)
        return True

    def _flush_to_threads(self, turns: int = 0) -> None:
        """Hand what the loop gathered (PostgreSQL) to the writer threads at once, once
        `turns` more turns went by; if they had nothing to do, wait for their commit up to
        `LOOP_WAIT_FOR_GROUP`, the GIL let go.

        Handed over one by one as submitted, the first woke the thread, which began its group
        without the others; and while the loop served requests the thread waited for the GIL
        after every round trip: the loop's waiting lets it run its group unhindered, as the
        loop would have itself (PostgreSQL end to end, 16 clients, three pairs taking turns:
        the API's CPU 0.38-0.43 -> 0.33-0.36 ms an event, 1,339-1,517 -> 1,478-1,651
        events/s; bench/profiles.md, the thirty-second round). Threads busy with earlier
        work (a row lock another session holds, a slow commit) are not waited for: the loop
        serves on, and a wait that runs out leaves the group to finish on its own.
        """
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._flush_to_threads, turns - 1)
            return
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._closed:  # the threads are stopping or gone: written here, as `close` would
            self._commit(None, batch, keep=False)
            return
        with self._lock:
            idle = not self._running
        idle = idle and all(q.empty() for q in self._queues)
        for item in batch:
            self._queue_of(item).put(item)
        if idle:
            futures.wait([item.future for item in batch], timeout=LOOP_WAIT_FOR_GROUP)

    def _flush(self, turns: int = 0) -> None:
        """Commit what was submitted on the loop (SQLite), in batches of `max_batch`, once
        `turns` more turns of the loop went by (`GATHER_TURNS`: what they submit joins).

        The loop never waits for the gate: when another process (the delivery process, a
        worker) holds it, the flush is tried again a moment later (0.2 ms, doubling up to
        2 ms) and the loop goes on taking requests meanwhile; their writes join the batch
        committed as soon as the gate is free. Nor for SQLite's own write lock, which
        another program may hold (`_begin_on_loop`). Writes that waited longer than the busy
        timeout (`BUSY_TIMEOUT`) fail with SQLite's "database is locked": the API answers
        503 with `Retry-After` (docs/operations.md, "File locked").
        """
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._flush, turns - 1)
            return
        self._retry = None
        if not self._pending:
            return
        waiting_for = "gate"
        if self._gate.try_acquire():
            if self._flush_held(on_loop=True):  # everything committed (or failed on its own)
                self._backoff = 0.0
                return
            waiting_for = "lock"
        if not self._pending:
            return
        # Writes that waited out the busy timeout fail ("database is locked": 503); the
        # others wait on, however long ago the wait began.
        now = time.monotonic()
        expired = [item for item in self._pending if now - item.submitted > BUSY_TIMEOUT]
        if expired:
            self._pending = [item for item in self._pending if item not in expired]
            for item in expired:
                item.future.set_exception(locked_error())
            if not self._pending:
                self._backoff = 0.0
                return
        low, high = (
            (0.0002, _GATE_RETRY_MAX)
            if waiting_for == "gate"
            else (_LOCK_RETRY_MIN, _LOCK_RETRY_MAX)
        )
        self._backoff = min(high, max(low, self._backoff * 2))
        self._retry = asyncio.get_running_loop().call_later(self._backoff, self._flush)

    def _begin_on_loop(self) -> bool:
        """Begin the loop's transaction (the gate held); False if another program holds
        SQLite's write lock, found without waiting for it (`_as_loop_writer`)."""
        conn = self._loop_conn
        try:
            if conn is None:
                conn = self._engine.connect()
                _as_loop_writer(conn, taken=True)
            self._loop_conn = conn
            if not conn.in_transaction():
                driver_in_transaction(conn)
        except Exception as exc:
            if conn is not None and is_locked(exc):
                try:
                    conn.rollback()  # no transaction began: ready for the next try
                    return False
                except Exception:
                    log.debug("resetting the writer's connection failed", exc_info=True)
            self._loop_conn = self._discard(conn)
            if is_locked(exc):
                return False
            # The file cannot be opened, the disk is gone: every waiting write says so.
            pending, self._pending = self._pending, []
            for item in pending:
                item.future.set_exception(exc)
            return False
        return True

    def _flush_held(self, *, on_loop: bool) -> bool:
        """Commit everything pending with the gate already taken; give the gate back.

        `on_loop`: each batch begins through `_begin_on_loop`, and the flush stops (False)
        when another program holds SQLite's write lock; else (closing) it waits as long as
        SQLite's busy handler does.
        """
        try:
            while self._pending:
                if on_loop and not self._begin_on_loop():
                    return False
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._loop_conn = self._commit(self._loop_conn, batch, held=True)
            return True
        finally:
            self._gate.release()

    def _queue_of(self, item: _Item) -> queue.SimpleQueue[_Item | None]:
        """The queue of the writer thread of the item's tenant.

        Sorting a group's units by the lead they lock puts lead locks in one order, but a
        lead created into a pool that assigns owners takes the pool's turn lock and no lead,
        and a return or a claim takes its lead, then that lock: two writer threads running
        one tenant's pool behaviours at once could still wait for each other (a review: a
        21 s round and a 503 among 240 requests, four threads). One tenant's units never run
        on two threads at once; other tenants' run beside them.
        """
        queues = self._queues
        return queues[zlib.crc32(item.route.encode()) % len(queues)]

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for i in range(self._threads_wanted):
                thread = threading.Thread(
                    target=self._run,
                    args=(self._queues[i],),
                    name=f"leadhook-writer-{i}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def refuse_waiting(self, error: Exception) -> int:
        """Fail every write still waiting with `error`, and every one submitted from now on:
        none of them is written. Return how many were waiting.

        Waiting, on the loop (SQLite): for the gate or SQLite's write lock. On writer threads
        (PostgreSQL): queued behind a group, or in a group whose statement waits (a row lock
        another session holds): that statement is cancelled, the group's transaction rolled
        back, and its units that had not already failed on their own fail with `error`.

        For a server that stops (`cli.runtime.run_service`): a request still waiting when its
        grace period ends is answered "not written, retry" rather than cancelled (a bare 500)
        and then written by `close` after its client had given up on it.
        """
        self._refusing = error
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        waiting, self._pending = self._pending, []
        for q in self._queues:
            waiting += self._take_queued(q)
        for item in waiting:
            item.future.set_exception(error)
        return len(waiting) + self._cancel_running(set())

    @staticmethod
    def _take_queued(q: queue.SimpleQueue[_Item | None]) -> list[_Item]:
        """Take the items still queued for a writer thread (a stop sentinel stays queued)."""
        items: list[_Item] = []
        stop = False
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
            else:
                items.append(item)
        if stop:
            q.put(None)
        return items

    def _cancel_running(self, seen: set[int]) -> int:
        """Cancel the statement of every group running on a writer thread; answer how many of
        their units had not been cancelled before (`seen`: the ids of those that had).

        The cancels are sent from a thread of their own: each opens a connection to the
        server, which must not hold the loop (its requests have a second of grace left).
        Again every `_CANCEL_AGAIN` seconds while a group still runs and the loop turns: a
        cancel that reached the server between two statements cancelled nothing."""
        with self._lock:
            running = list(self._running.values())
        new = 0
        for _, batch in running:
            new += sum(1 for item in batch if id(item) not in seen)
            seen.update(id(item) for item in batch)
        if running:
            drivers = [driver for driver, _ in running]
            threading.Thread(
                target=_cancel_all, args=(drivers,), name="leadhook-cancel", daemon=True
            ).start()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return new
            loop.call_later(_CANCEL_AGAIN, self._cancel_running, seen)
        return new

    def close(self) -> None:
        """Finish what was queued, then stop the threads and release the connections."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for q in self._queues[: len(threads)]:
            q.put(None)
        for thread in threads:
            thread.join()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._pending:
            self._gate.acquire()
            self._flush_held(on_loop=False)
        if self._loop_conn is not None:
            try:
                if self._on_loop:  # SQLite's loop connection: back as it was taken
                    _as_loop_writer(self._loop_conn, taken=False)
            finally:
                self._loop_conn.close()
                self._loop_conn = None

    # ---- the writer thread ----------------------------------------------------------------

    def _run(self, own: queue.SimpleQueue[_Item | None]) -> None:
        conn: Connection | None = None
        try:
            while True:
                first = own.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        item = own.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                # A group holds the row lock of every lead its units touched until its commit.
                # Two groups in flight at once that lock the same leads in arrival order wait
                # for each other: PostgreSQL finds it only after deadlock_timeout (1 s) and
                # aborts one, to be run again (256 behaviours on 4 leads from 64 clients, four
                # threads: 47-90 s, some answered 503). Run in the order of the leads they lock
                # (stable: a lead's units keep their order), every group takes its leads' locks
                # in one order. Within this process a tenant's groups are on one thread
                # (`_queue_of`); the order still holds against other processes' writers.
                batch.sort(key=_lock_order)
                conn = self._commit(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _commit(
        self,
        conn: Connection | None,
        batch: list[_Item],
        *,
        keep: bool = True,
        held: bool = False,
        reconnected: bool = False,
    ) -> Connection | None:
        """Run `batch` in one transaction; resolve its futures; return the connection to reuse.

        `held`: the caller holds the write gate already (the loop's flush). A connection kept
        from an earlier group that turns out to be gone (the server restarted, or ended idle
        sessions) before this group's COMMIT was sent wrote nothing: the group runs again, once,
        on a new connection (`reconnected`), rather than answer 503 for a healthy database. (A
        pipelined group of several sends its COMMIT with its statements: it is not run again
        so; `_run_deferred` has its own way back, one unit at a time.)"""
        refusing = self._refusing
        if refusing is not None:  # the server stops: nothing more is begun (`refuse_waiting`)
            for item in batch:
                item.future.set_exception(refusing)
            return conn
        outcomes: list[tuple[_Item, bool, Any]] = []
        again: list[_Item] = []
        kept, committing = conn is not None, False
        try:
            with nullcontext() if held else self._gate.hold():
                if conn is None:
                    conn = self._engine.connect()
                self._track(conn, batch)
                deferred, way = None, "one_by_one"
                if self._pipelined and len(batch) > 1:
                    # Its COMMIT goes out with the group's one sync: from here on, a lost
                    # connection may have committed it, and it is not run again below.
                    committing = True
                    deferred, tainted = self._run_deferred(conn, batch)
                    way = "deferred" if deferred is not None else "deferred_redone"
                    if deferred is None and tainted:
                        self._track(None, batch)  # the connection it names is closed next
                        conn = self._discard(conn) or self._engine.connect()
                        self._track(conn, batch)
                elif len(batch) > 1:
                    if self._run_unguarded(conn, batch, outcomes):
                        deferred, way = outcomes, "deferred"
                    else:
                        outcomes, way = [], "deferred_redone"
                if deferred is not None:
                    outcomes, again, tainted = deferred, [], False
                else:
                    outcomes, again, tainted = self._run_items(conn, batch)
                self._count(way, len(batch))
                if any(ok for _, ok, _ in outcomes):
                    if self._pipelined and aborted(conn):
                        # A lone unit that caught a server error and carried on: PostgreSQL
                        # would answer this COMMIT with a ROLLBACK, and the unit be told its
                        # write was done. (In a group, its savepoint's release fails it.)
                        raise RuntimeError("the transaction failed on the server: not committed")
                    committing = True
                    conn.commit()
                else:
                    conn.rollback()
                if self._pipelined:
                    settle(conn)  # its transaction began in its pipeline (Pipeline.begin)
                if tainted:  # see adapters/db/pipeline.py: a fresh connection for what follows
                    conn = self._discard(conn)
        except Exception as exc:
            if kept and not committing and not reconnected and (_gone(conn) or _lost(exc)):
                log.info("the writer's connection was gone (%s): the group runs again", exc)
                self._discard(conn)
                self._track(None, batch)
                return self._commit(None, batch, keep=keep, held=held, reconnected=True)
            # The transaction itself failed (commit refused, connection lost): nothing of this
            # batch was written. Every item that had succeeded fails with it.
            conn = self._discard(conn)
            outcomes = [(item, False, exc if ok else value) for item, ok, value in outcomes]
            done = {id(item) for item, _, _ in outcomes} | {id(item) for item in again}
            outcomes += [(item, False, exc) for item in batch if id(item) not in done]
        self._track(None, batch)
        refusing = self._refusing
        if refusing is not None:
            # Stopping: a deadlock victim is not run again, and a unit whose statement
            # `refuse_waiting` cancelled (or whose transaction that ended) was not written.
            outcomes += [(item, False, refusing) for item in again]
            again = []
            outcomes = [
                (item, ok, refusing if not ok and _sqlstate_in(value, _CANCELLED) else value)
                for item, ok, value in outcomes
            ]
        if again:
            # Deadlock victims: in the queue again (threads), or run once more right now.
            if self._on_loop:
                conn = self._commit(conn, again, keep=keep, held=held)
            else:
                for item in again:
                    self._queue_of(item).put(item)
        if not keep and conn is not None:
            conn.close()
            conn = None
        for item, ok, value in outcomes:
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
        return conn

    def _track(self, conn: Connection | None, batch: list[_Item]) -> None:
        """Note the group a writer thread runs now on `conn` (None: it is done), for
        `refuse_waiting` to cancel."""
        if self._on_loop:
            return
        driver = None if conn is None else conn.connection.driver_connection
        with self._lock:
            if driver is None:
                self._running.pop(threading.get_ident(), None)
            else:
                self._running[threading.get_ident()] = (driver, batch)

    def _run_deferred(
        self, conn: Connection, batch: list[_Item]
    ) -> tuple[list[tuple[_Item, bool, Any]] | None, bool]:
        """Run a group of items in one pipeline with a single sync at its end, which carries
        the group's COMMIT too (PostgreSQL).

        Nothing is read back that a later statement can find for itself (adapters/db/
        pipeline.py `deferring`), so a group of creates costs about one round trip instead
        of two per item. The price is that an error is known only at the end, and not whose:
        so any error at all (a unit's own included) rolls the whole group back, and the
        caller runs it again item by item (`_run_items`), where every error is its unit's.
        Answers (outcomes, or None for "run it again"; whether the connection is tainted).
        """
        driver_in_transaction(conn)  # begin, as `_run_items` does
        uow = BoundUnitOfWork(conn, self._ids)
        outcomes: list[tuple[_Item, bool, Any]] = []
        pipe = Pipeline(conn, deferred=True)
        try:
            # No savepoints: an error undoes the whole group anyway. The group's BEGIN is
            # queued with its first statements, not sent and waited for by psycopg.
            pipe.begin()
            for item in batch:
                pipe.start()
                outcomes.append((item, True, item.work(uow)))
            if aborted(conn):  # an error a unit caught and kept quiet: the group is void
                raise RuntimeError("the deferred group's transaction failed")
            # The COMMIT rides on the group's sync, one round trip less a group: the writer's
            # `conn.commit()` then finds nothing to commit. (No pipeline running, a Core
            # statement having ended it: nothing is sent here, and that commit does it.)
            pipe.end_committing()
        except Exception as exc:
            pipe.abandon(exc)
            try:
                conn.rollback()
            except Exception:  # a broken connection: the caller replaces it
                log.debug("rolling back a deferred group failed", exc_info=True)
                return None, True
            settle(conn)  # before the group runs again unit by unit, each in its savepoint
            return None, pipe.tainted
        return outcomes, False

    def _run_unguarded(
        self, conn: Connection, batch: list[_Item], outcomes: list[tuple[_Item, bool, Any]]
    ) -> bool:
        """Run a SQLite group's items without a savepoint each, adding their outcomes to
        `outcomes`; False: nothing of it stands, run it again unit by unit.

        A savepoint costs its two statements, and SQLite copies into its journal every page
        the unit changes that the group changed before it: a create changes ~28 of them (a
        row's page and the last leaf of each index, shared by the whole group), ~0.015 ms of
        a create's ~0.08 ms of SQL in a group of eight (bench/profiles.md, eighteenth round).
        Most failures come before a unit writes anything (validation, a missing lead, a
        mismatched `If-Match`): a unit whose failure left the connection's change count
        where it was changed nothing (SQLite undoes a failed statement's own rows and does
        not count them), and fails alone, as in its savepoint. A unit that fails after it
        wrote rolls the group back to the one savepoint the group keeps, and the caller runs
        the group again unit by unit, each in its savepoint (`_run_items`), where every
        failure is its unit's alone.

        The change count counts rows inserted, updated and deleted: units change rows and
        nothing else (no DDL, no `PRAGMA` that writes), as every unit of the services does.
        Should SQLite end the transaction itself (an I/O error, a full disk where it rolls
        back more than the statement), this raises whether or not the unit caught the
        error: nothing of the group was written, and `_commit` fails the units that had
        not failed alone.
        """
        driver = unread(conn)
        uow = BoundUnitOfWork(conn, self._ids)
        driver.execute(_SAVEPOINT_GROUP)
        for item in batch:
            changes = driver.total_changes
            try:
                value = item.work(uow)
                if not driver.in_transaction:
                    raise RuntimeError(_ENDED)
            except Exception as exc:
                uow.forget()
                if not driver.in_transaction:
                    raise
                if driver.total_changes == changes:
                    outcomes.append((item, False, exc))  # SQLite has no deadlock to retry
                    continue
                driver.execute(_ROLLBACK_GROUP)
                driver.execute(_RELEASE_GROUP)
                return False
            outcomes.append((item, True, value))
        driver.execute(_RELEASE_GROUP)
        return True

    def _run_items(
        self, conn: Connection, batch: list[_Item]
    ) -> tuple[list[tuple[_Item, bool, Any]], list[_Item], bool]:
        """Run each item in its savepoint (none if it is alone); answer the outcomes, the
        deadlock victims to run again, and whether the connection must be replaced."""
        driver = unread(conn)
        uow = BoundUnitOfWork(conn, self._ids)
        alone = len(batch) == 1
        outcomes: list[tuple[_Item, bool, Any]] = []
        again: list[_Item] = []
        pipe = Pipeline(conn) if self._pipelined else None
        begun = False
        try:
            for item in batch:
                if self._refusing is not None:  # stopping: see `refuse_waiting`
                    outcomes.append((item, False, self._refusing))
                    continue
                item.runs += 1
                if pipe is not None:
                    # The first item's BEGIN rides with its first read (Pipeline.begin).
                    if not begun:
                        pipe.begin()
                    else:
                        pipe.start()
                begun = True
                if not alone:
                    driver.execute(_SAVEPOINT)
                try:
                    value = item.work(uow)
                    if pipe is None and not driver.in_transaction:  # see `_run_unguarded`
                        raise RuntimeError(_ENDED)
                    if not alone:
                        driver.execute(_RELEASE_ITEM)
                    if pipe is not None:
                        pipe.sync()  # an error of the item's last statements is still its own
                except Exception as exc:
                    if pipe is not None:
                        pipe.abandon(exc)
                    if alone:
                        conn.rollback()
                    else:
                        if pipe is None and not driver.in_transaction:
                            raise  # SQLite ended the transaction: as in `_run_unguarded`
                        driver.execute(_ROLLBACK_ITEM)
                        driver.execute(_RELEASE_ITEM)
                        uow.forget()  # a lock taken in the savepoint went with it
                    if _retryable(exc) and item.runs < _MAX_RUNS:
                        again.append(item)
                    else:
                        outcomes.append((item, False, exc))
                    continue
                outcomes.append((item, True, value))
        finally:
            if pipe is not None:
                pipe.end()
        return outcomes, again, pipe is not None and pipe.tainted

    @staticmethod
    def _discard(conn: Connection | None) -> None:
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # already broken: nothing more to release
                log.debug("closing a failed writer connection failed", exc_info=True)
        return None
