"""The queue's named SQL: what the statements spell out agrees with the code and the schema."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from leadhook.adapters.db import queue_sql
from leadhook.adapters.db.queue_sql import POSTGRES, SQLITE, QueueStatements, queue_statements
from leadhook.adapters.db.tables import deliveries
from leadhook.services.ports import UNFINISHED, DeliveryStatus

STATUS_IN = re.compile(r"status IN \(([^)]*)\)")


def _texts(statements: QueueStatements) -> dict[str, str]:
    return {
        f.name: value
        for f in fields(statements)
        if isinstance(value := getattr(statements, f.name), str)
    }


@pytest.mark.parametrize("statements", [SQLITE, POSTGRES], ids=["sqlite", "postgresql"])
def test_every_status_literal_is_the_unfinished_statuses(statements: QueueStatements) -> None:
    found = 0
    for name, sql in _texts(statements).items():
        for literal in STATUS_IN.findall(sql):
            found += 1
            assert [v.strip().strip("'") for v in literal.split(",")] == list(UNFINISHED), name
        # No other status is spelled in a statement: it is bound, or it is one of these.
        for word in re.findall(r"'(\w+)'", sql):
            assert word in set(DeliveryStatus), (name, word)
    assert found >= 2  # the due rows, the earlier unfinished delivery of a lead (and PG: picked)
    # ... and the partial index the claim walks says the same.
    index = next(i for i in deliveries.indexes if i.name == "ix_deliveries_due")
    where = str(index.dialect_options["sqlite"]["where"])
    assert STATUS_IN.search(where) and STATUS_IN.findall(where)[0] == "'pending', 'failed'"


def test_each_dialect_uses_its_driver_markers() -> None:
    for name in ("insert_attempts", "finish"):
        assert "%s" not in getattr(SQLITE, name) and "?" in getattr(SQLITE, name)
        assert "?" not in getattr(POSTGRES, name) and "%s" in getattr(POSTGRES, name)
    assert SQLITE.lease and SQLITE.jobs and POSTGRES.lease is None and POSTGRES.jobs is None


def test_lists_travel_as_one_value() -> None:
    assert SQLITE.id_list(["a", "b"]) == '["a", "b"]' and SQLITE.id_list([]) == "[]"
    assert POSTGRES.id_list(("a", "b")) == ["a", "b"]


def test_statements_by_dialect() -> None:
    assert queue_statements("sqlite") is queue_sql.SQLITE
    assert queue_statements("postgresql") is queue_sql.POSTGRES


STATUS_WORDS = re.compile(r"status\s*(?:=\s*'(\w+)'|IN\s*\(([^)]*)\))")


def _status_words(sql: str) -> list[str]:
    words: list[str] = []
    for one, many in STATUS_WORDS.findall(sql):
        words += [one] if one else [w.strip().strip("'") for w in many.split(",")]
    return words


def test_every_status_spelled_in_sql_is_a_delivery_status() -> None:
    """Where SQL must spell a status (a literal the planner matches to a partial index, or a
    fixed value of a write), it is one of `DeliveryStatus`: renaming one breaks this test."""
    from sqlalchemy import TextClause

    from leadhook.adapters.db import retention, sql

    texts = [*_texts(SQLITE).values(), *_texts(POSTGRES).values()]
    texts += [v.text for v in vars(retention).values() if isinstance(v, TextClause)]
    for statements in (sql.SQLITE, sql.POSTGRES):
        texts += [v for v in vars(statements).values() if isinstance(v, str)]
    texts += [str(i.dialect_options[d]["where"]) for i in deliveries.indexes for d in ("sqlite",)]
    words = [w for t in texts for w in _status_words(t)]
    assert {"pending", "failed", "delivered", "dead"} <= set(words)
    assert set(words) <= {s.value for s in DeliveryStatus}
