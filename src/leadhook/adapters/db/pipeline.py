"""psycopg's pipeline mode for a PostgreSQL writer's behaviours.

A behaviour on PostgreSQL is six to eight statements (savepoint, lead, log lock, events,
deliveries, release), and without a pipeline each one is a round trip: the writer thread sends
it, waits for the server, reads the answer. In pipeline mode the statements whose answers
nobody reads at once (the inserts, the lock, the savepoints) are sent without waiting, and a
behaviour costs two round trips: one where it reads what it inserted (the events' `seq`), one
at its end (`Pipeline.sync`), so that an error of its last statements is still its own and
rolls back its savepoint only (adapters/db/writer.py). A *deferred* pipeline (`deferring`)
goes further for a whole group: the events' seqs are not read back (their deliveries find them
by event id), and the group syncs once, at its end; an error there sends the group back to
the writer, which runs it again unit by unit. Its inserts are not even sent one by one: they
are held and go out a table at a time (adapters/db/writebehind.py), before anything else.

Two things read a result the moment a statement was sent and do not work in a pipeline:
SQLAlchemy Core (it reads the cursor's description right after `execute`) and a `rowcount`.
So a Core statement ends the pipeline first (`end_before_core`, an engine event), and the
statements then go one by one until the next behaviour starts it again; a repository that
reads a `rowcount` of named SQL calls `flushed` first.

And one thing psycopg gets wrong: a statement it decided to prepare (on its fifth execution)
in the part of a pipeline that an error aborted counts as prepared though the server skipped
it, and its next execution fails with "prepared statement does not exist". So after an error
from the server (`abandon`) the connection prepares nothing more, and the writer replaces it
once its transaction is over (`tainted`). Errors leadhook raises itself (a lead not found, a
version that does not match) come before anything was aborted and cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from leadhook.adapters.db.sql import Statements
from leadhook.adapters.db.writebehind import WriteBehind

_KEY = "leadhook_pipeline"
_RAW = "leadhook_raw_cursor"  # the held inserts' raw cursor (`held_writes`)
_BEGUN = "leadhook_begun_in_pipeline"  # set while psycopg's autocommit is on for a group
log = logging.getLogger("leadhook.writer")


class Pipeline:
    """The pipeline of one SQLAlchemy connection's driver, started and ended per behaviour."""

    def __init__(self, conn: Connection, *, deferred: bool = False) -> None:
        self._conn = conn
        self._driver: Any = conn.connection.driver_connection
        self._ctx: Any = None  # the context manager of `driver.pipeline()`
        self._pipe: Any = None  # the psycopg Pipeline it entered
        self.tainted = False  # an error aborted the pipeline: replace the connection
        # Deferred: the statements read back nothing they can do without (`deferring`).
        self.deferred = deferred
        # A deferred group's held inserts (adapters/db/writebehind.py), made at the first.
        self.behind: WriteBehind | None = None

    def begin(self) -> None:
        """Start the pipeline with the transaction's BEGIN queued in it (a batch's first unit).

        psycopg begins a transaction itself before the first statement, and in pipeline mode
        it sends that BEGIN with a sync and waits for its answer: a round trip of its own
        before the group's first read. With the connection in autocommit psycopg begins
        nothing, and the BEGIN queued here rides with the group's first read. The server is
        in a transaction block all the same, so what follows (and a Core statement, should
        one end the pipeline) runs in it, and COMMIT or ROLLBACK ends it as before; `settle`
        gives psycopg its own BEGIN back once the transaction is over.
        """
        driver = self._driver
        if driver.autocommit or driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.start()  # in a transaction already (or not ours to change): as before
            return
        driver.autocommit = True  # before the pipeline starts: in one, the setter would sync
        self._conn.info[_BEGUN] = True
        self.start()
        driver.execute("BEGIN", prepare=False)  # queued; its answer comes with the next read

    def start(self) -> None:
        """Send the following statements without waiting for each answer."""
        if self._ctx is None:
            ctx = self._driver.pipeline()
            self._pipe = ctx.__enter__()
            self._ctx = ctx
            self._conn.info[_KEY] = self

    def sync(self) -> None:
        """Wait for the answer of every statement sent so far; raise the first error."""
        if self._pipe is not None:
            self._pipe.sync()

    def send_held(self) -> None:
        """Send the inserts held back (`WriteBehind`), before anything else is sent."""
        if self.behind is not None:
            self.behind.flush()

    def end(self) -> None:
        """Sync and leave pipeline mode (raising the first error of what was still unread)."""
        if self._ctx is not None:
            self.send_held()
        ctx, self._ctx, self._pipe = self._ctx, None, None
        self._conn.info.pop(_KEY, None)
        if ctx is not None:
            try:
                ctx.__exit__(None, None, None)
            except psycopg.Error:  # an error of the pipeline, read only now
                self._taint()
                raise

    def end_committing(self) -> bool:
        """Commit behind what was sent, in the same round trip: COMMIT is queued after the
        group's statements, then the pipeline syncs and ends. Answers False, having done
        nothing, when the pipeline is not running (a Core statement ended it): the caller
        then commits as usual.

        A statement of the group that failed makes the server skip the COMMIT behind it, and
        the sync raises that error: nothing was committed, as when the group fails before
        its commit. A COMMIT that the server answered with anything but COMMIT (a
        transaction that had failed already is answered with ROLLBACK) raises too.
        """
        if self._ctx is None:
            return False
        self.send_held()  # before the COMMIT, not behind it
        cur = self._driver.cursor()
        try:
            cur.execute("COMMIT", prepare=False)  # queued: sent with the sync below
            self.end()
            if cur.statusmessage != "COMMIT":
                raise RuntimeError(f"the group's COMMIT was answered {cur.statusmessage!r}")
        finally:
            cur.close()
        return True

    def _taint(self) -> None:
        self.tainted = True
        self._driver.prepare_threshold = None

    def abandon(self, error: BaseException) -> None:
        """Leave pipeline mode after `error`, raised already.

        The statements queued after a failed one were skipped by the server ("pipeline
        aborted"): reading their answers raises again, and that is no news. A connection that
        broke fails the statement sent next (the rollback to the savepoint), so nothing is
        hidden here. After an error from the server, psycopg's record of what it prepared
        may be wrong (see above): nothing more is prepared on this connection.
        """
        in_pipeline = self._ctx is not None
        if self.behind is not None:
            self.behind.drop()  # rolled back with the rest of the group
        try:
            self.end()
        except Exception:  # the error itself was raised and handled already
            log.debug("leaving an aborted pipeline", exc_info=True)
        cause = error.orig if isinstance(error, DBAPIError) else error
        if in_pipeline and isinstance(cause, psycopg.Error):
            self._taint()


def settle(conn: Connection) -> None:
    """After the COMMIT or ROLLBACK of a transaction `Pipeline.begin` began: autocommit off
    again, so that psycopg begins the next transaction itself. A connection that cannot take
    it back is invalidated (replaced at its next use): none may run a transaction's
    statements one by one in autocommit."""
    if not conn.info.pop(_BEGUN, False):
        return
    try:
        driver: Any = conn.connection.driver_connection
        driver.autocommit = False
    except Exception:  # still in a transaction: never after a COMMIT or ROLLBACK that ran
        log.warning("a writer connection kept autocommit: replacing it", exc_info=True)
        conn.invalidate()


def aborted(conn: Connection) -> bool:
    """Whether the transaction on `conn` failed on the server (every later statement, and its
    COMMIT, would be refused: PostgreSQL answers a COMMIT there with a ROLLBACK)."""
    driver: Any = conn.connection.driver_connection
    return bool(driver.info.transaction_status == psycopg.pq.TransactionStatus.INERROR)


def deferring(conn: Connection) -> bool:
    """Whether `conn` runs a deferred group: write without reading anything back that a later
    statement can find for itself (an event's `seq`); an error surfaces at the group's end."""
    pipe = conn.info.get(_KEY)
    return pipe is not None and bool(pipe.deferred)


def kept_cursor(conn: Connection, key: str, make: Callable[[], Any]) -> Any:
    """The cursor kept under `key` with `conn`'s DB-API connection (it lives and dies with
    it), made by `make` the first time or once it was closed."""
    info = conn.connection.info
    cur = info.get(key)
    if cur is None or cur.closed:
        cur = info[key] = make()
    return cur


def held_writes(conn: Connection, cursor: Any, sql: Statements) -> WriteBehind | None:
    """Where a deferred group's unread statements go (`WriteBehind`); None outside one."""
    pipe = conn.info.get(_KEY)
    if pipe is None or not pipe.deferred:
        return None
    if pipe.behind is None:
        raw = kept_cursor(conn, _RAW, lambda: psycopg.RawCursor(cursor.connection))
        pipe.behind = WriteBehind(cursor, raw, sql)
    behind: WriteBehind = pipe.behind
    return behind


def send_held(conn: Connection) -> None:
    """Before a statement that is not held goes out on `conn`: send the held ones first."""
    pipe = conn.info.get(_KEY)
    if pipe is not None:
        pipe.send_held()


def flushed(conn: Connection) -> None:
    """Make the answers of the statements sent so far readable (their `rowcount`)."""
    pipe = conn.info.get(_KEY)
    if pipe is not None:
        pipe.send_held()
        pipe.sync()


def end_before_core(conn: Connection, *_args: Any) -> None:
    """`before_cursor_execute`: SQLAlchemy Core reads a result at once; no pipeline for it."""
    pipe = conn.info.get(_KEY)
    if pipe is not None:
        pipe.end()
