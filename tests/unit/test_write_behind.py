"""WriteBehind: a deferred group's inserts held and sent as one statement a table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhook.adapters.db.sql import POSTGRES, many_rows
from leadhook.adapters.db.writebehind import CHUNK, WriteBehind


class Recorder:
    """A cursor that records what it was asked to run."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def execute(self, statement: str, params: Any = ()) -> None:
        self.sent.append((statement, list(params)))

    def executemany(self, statement: str, rows: Any) -> None:
        self.sent.append((statement, [list(r) for r in rows]))


LEAD, EVENT, DELIVERY, LOCK = (
    POSTGRES.insert_lead,
    POSTGRES.insert_event_unread,
    POSTGRES.insert_delivery_by_event,
    POSTGRES.log_lock_shared,
)


def _behind() -> tuple[WriteBehind, Recorder]:
    cur = Recorder()  # the raw cursor records into the same list: the order is what counts
    return WriteBehind(cur, cur, POSTGRES), cur


def test_many_rows_numbers_each_rows_parameters_and_refuses_what_it_cannot_number() -> None:
    """Catches: a multi-row text that drops, doubles or misnumbers a row's parameters."""
    text = many_rows("INSERT INTO t (a, b) VALUES (%s, (SELECT x FROM y WHERE z = %s))", 3)
    rows = ", ".join(f"(${i}, (SELECT x FROM y WHERE z = ${i + 1}))" for i in (1, 3, 5))
    assert text == f"INSERT INTO t (a, b) VALUES {rows}"
    for statement in (LEAD, EVENT, DELIVERY):
        assert statement is not None
        one = statement.count("%s")
        numbered = many_rows(statement, 7)
        assert "%s" not in numbered
        assert [f"${i}" in numbered for i in (1, 7 * one, 7 * one + 1)] == [True, True, False]
    for bad in (
        "SELECT 1",
        "INSERT INTO t VALUES (%s) ON CONFLICT DO NOTHING",
        "INSERT INTO t VALUES (%(a)s)",
        "INSERT INTO t VALUES (%s, '100%%')",
    ):
        with pytest.raises(ValueError):
            many_rows(bad, 2)


def test_rows_are_held_until_another_statement_and_go_out_a_table_at_a_time() -> None:
    """Catches: a held insert sent after a statement that came later (a read would miss it),
    or sent before one it depends on (a delivery before its event, an event before its lock)."""
    behind, cur = _behind()
    assert LOCK is not None and EVENT is not None and DELIVERY is not None
    for i in range(3):  # three behaviours, in the order a create runs them
        behind.execute(LEAD, (f"L{i}", "m"))
        behind.execute(LOCK, ("m",))
        behind.execute(EVENT, (f"E{i}", "m"))
        behind.execute(DELIVERY, (f"D{i}", f"E{i}"))
    assert cur.sent == [] and behind.pending
    behind.execute("SELECT 1", ())
    assert [s for s, _ in cur.sent] == [
        LOCK,  # once for the tenant
        many_rows(LEAD, 3),
        many_rows(EVENT, 3),
        many_rows(DELIVERY, 3),
        "SELECT 1",
    ]
    assert cur.sent[1][1] == ["L0", "m", "L1", "m", "L2", "m"]  # rows in the order added
    assert cur.sent[3][1] == ["D0", "E0", "D1", "E1", "D2", "E2"]
    assert not behind.pending
    behind.flush()  # nothing held: nothing sent
    assert len(cur.sent) == 5


def test_a_lone_row_goes_as_the_one_row_statement_and_many_are_chunked() -> None:
    """Catches: one row paying for a text of its own, or a batch import's group exceeding
    PostgreSQL's 65,535 parameters in one statement."""
    behind, cur = _behind()
    behind.execute(LEAD, ("L", "m"))
    behind.flush()
    assert cur.sent == [(LEAD, ["L", "m"])]
    behind, cur = _behind()
    n = 2 * CHUNK + 3
    behind.executemany(LEAD, [(f"L{i}",) for i in range(n)])
    behind.flush()
    assert [s for s, _ in cur.sent] == [many_rows(LEAD, CHUNK)] * 2 + [many_rows(LEAD, 3)]
    assert [p for _, params in cur.sent for p in params] == [f"L{i}" for i in range(n)]
    assert 14 * CHUNK <= 65_535


def test_dropped_rows_are_never_sent_and_other_statements_pass_through() -> None:
    """Catches: a failed group's rows sent with the next group's."""
    behind, cur = _behind()
    behind.execute(EVENT, ("E0",))
    behind.drop()
    assert not behind.pending
    behind.executemany("INSERT INTO other VALUES (%s)", [(1,), (2,)])
    behind.flush()
    assert cur.sent == [("INSERT INTO other VALUES (%s)", [[1], [2]])]


def test_a_send_that_raises_leaves_the_rest_held_for_the_next_flush() -> None:
    """Catches: a flush that failed half way marking nothing held, so that the kinds it had
    not reached yet were never sent by the flush before the COMMIT (found in review)."""

    class FailsOnce(Recorder):
        failed = False

        def execute(self, statement: str, params: Any = ()) -> None:
            if statement.startswith("INSERT INTO leads") and not self.failed:
                self.failed = True
                raise ValueError("cannot adapt")
            super().execute(statement, params)

    cur = FailsOnce()
    behind = WriteBehind(cur, cur, POSTGRES)
    behind.execute(LEAD, ("L",))
    behind.execute(EVENT, ("E",))
    behind.execute(DELIVERY, ("D",))
    with pytest.raises(ValueError):
        behind.flush()
    assert behind.pending
    behind.flush()
    assert cur.sent == [(EVENT, ["E"]), (DELIVERY, ["D"])]
    assert not behind.pending


@given(st.lists(st.sampled_from(["lead", "lock", "event", "delivery", "other"]), max_size=40))
def test_every_row_is_sent_once_and_in_order_among_its_kind(script: list[str]) -> None:
    """Catches: a row lost, sent twice or overtaking a row of its own kind, or a statement
    that is not held overtaking one that is, whatever the mix of statements."""
    kinds = {"lead": LEAD, "event": EVENT, "delivery": DELIVERY}
    behind, cur = _behind()
    assert LOCK is not None
    expected: dict[str, list[str]] = {kind: [] for kind in [*kinds, "other"]}
    for i, kind in enumerate(script):
        if kind == "lock":
            behind.execute(LOCK, ("m",))
            continue
        statement = kinds.get(kind) or f"UPDATE other SET n = {i}"
        assert statement is not None
        behind.execute(statement, (f"{kind}{i}",))
        expected[kind].append(f"{kind}{i}")
    behind.flush()
    seen: dict[str, list[str]] = {kind: [] for kind in expected}
    for statement, params in cur.sent:
        if statement == LOCK:
            continue
        kind = next(
            (k for k, s in kinds.items() if s and statement.startswith(s.partition("VALUES")[0])),
            "other",
        )
        seen[kind].extend(params)
        if kind == "other":  # everything held before it was sent before it
            n = int(statement.rpartition(" ")[2])
            earlier = [f"{k}{j}" for j, k in enumerate(script[:n]) if k in kinds]
            sent_so_far = {
                p for s, ps in cur.sent[: cur.sent.index((statement, params))] for p in ps
            }
            assert set(earlier) <= sent_so_far
    assert seen == expected
