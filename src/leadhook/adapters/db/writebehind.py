"""A deferred group's inserts held back and sent as one statement a table (PostgreSQL).

In psycopg's pipeline mode every `execute` still sends its statement at once: a `poll` and a
`send` of the socket, and the writer thread lets go of the GIL for each. The API's event loop
takes it meanwhile, and the writer waits to get it back, several times a behaviour (a create
is four statements). In a deferred group (adapters/db/pipeline.py) nothing reads what those
inserts wrote until the group's end, so `WriteBehind` keeps their rows instead and sends each
table's rows as one multi-row `INSERT ... VALUES (...), (...)` (`sql.many_rows`, in the order
the rows were added: events take their seqs in that order), in PostgreSQL's numbered
parameters on a raw cursor, whose text psycopg does not parse again on every execute. A
group of creates then sends its inserts in three statements (and one log lock a tenant),
whatever its size.

The held rows go out before anything else is sent on the connection (`flush`): a read, a
statement of another kind, the end of the pipeline or its COMMIT. The kinds go out in one
fixed order, each after those it depends on (the tenant's log lock, then leads, then events,
then the deliveries that find their events by id), so holding back never moves a statement
before one it needs. An error of a held statement surfaces at the group's sync, like any
error of a deferred group: the writer then runs the group again unit by unit, where nothing is
held (`deferring` is false there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leadhook.adapters.db.sql import Statements, many_rows

# Rows a statement at most: PostgreSQL takes up to 65,535 parameters a statement (a lead row
# has 14), and a batch import's group can hold tens of thousands of rows.
CHUNK = 500


class WriteBehind:
    """Where a deferred group's unread statements go (`repositories.unread`): the log lock
    and the three inserts of a behaviour are held, anything else is sent after them."""

    def __init__(self, cursor: Any, raw: Any, sql: Statements) -> None:
        """`cursor`: where the held statements' own texts go; `raw`: a `psycopg.RawCursor`
        on the same connection, for the multi-row texts (`sql.many_rows`)."""
        self._cursor = cursor
        self._raw = raw
        kinds = (
            sql.log_lock_shared,
            sql.insert_lead,
            sql.insert_event_unread,
            sql.insert_delivery_by_event,
        )
        self._lock = sql.log_lock_shared
        # In the order they are sent: each kind after those it depends on.
        self._held: dict[str, list[Sequence[Any]]] = {k: [] for k in kinds if k is not None}
        self.pending = False

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        if not self._hold(statement, (params,)):
            self._cursor.execute(statement, params)

    def executemany(self, statement: str, params: Sequence[Sequence[Any]]) -> None:
        if not self._hold(statement, params):
            self._cursor.executemany(statement, params)

    def _hold(self, statement: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Hold `rows` of `statement` if it is held; else send what is held and answer False."""
        held = self._held.get(statement)
        if held is None:
            self.flush()
            return False
        held.extend(rows)
        self.pending = self.pending or bool(held)
        return True

    def flush(self) -> None:
        """Send what is held: a statement a kind (in chunks of `CHUNK` rows), a lock a key."""
        if not self.pending:
            return
        cursor = self._cursor
        try:
            for statement, rows in self._held.items():
                if not rows:
                    continue
                held = rows.copy()
                rows.clear()
                if statement == self._lock:
                    for key in dict.fromkeys(tuple(p) for p in held):
                        cursor.execute(statement, key)
                    continue
                for at in range(0, len(held), CHUNK):
                    chunk = held[at : at + CHUNK]
                    if len(chunk) == 1:
                        cursor.execute(statement, chunk[0])
                    else:
                        params = [p for row in chunk for p in row]
                        self._raw.execute(many_rows(statement, len(chunk)), params)
        finally:
            # A send that raised leaves the kinds after it held, and a later flush sends them
            # (the group is void anyway once its error is seen, and `drop` forgets them).
            self.pending = any(self._held.values())

    def drop(self) -> None:
        """Forget what is held (its group failed and is rolled back)."""
        for rows in self._held.values():
            rows.clear()
        self.pending = False
