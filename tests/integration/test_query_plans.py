"""Every list endpoint's queries and every purge use an index: no full scan of a big table.

The statements are captured as the repositories and the purge really run them, then explained:
SQLite with `EXPLAIN QUERY PLAN` (a full scan reads `SCAN <table>`), PostgreSQL with `EXPLAIN`
with sequential scans discouraged (`enable_seqscan = off`: a `Seq Scan` left in the plan means
no index can serve the query; on a table this small the planner would pick one anyway).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text, update
from test_queue import MID, REQ, claim, new_lead, outcome, queue_of, setup

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.queue_sql import queue_statements
from leadhook.adapters.db.retention import SqlRetention
from leadhook.bootstrap import Container
from leadhook.services import cursor as cursors
from leadhook.services.ports import LeadFilter

BIG = ("leads", "events", "deliveries", "delivery_attempts", "idempotency_keys")


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Collect the (statement, parameters) of every single execution in the block."""
    seen: list[tuple[str, Any]] = []

    def before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "DELETE", "WITH")):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def full_scans(engine: Engine, statement: str, params: Any) -> list[str]:
    """Return the plan lines that read a whole big table."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            lines = [str(r[-1]) for r in rows]
            pattern = r"^SCAN (\w+)(?! USING (COVERING )?INDEX)"
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
            lines = [str(r[0]) for r in rows]
            pattern = r"Seq Scan on (\w+)"
    bad = []
    for line in lines:
        match = re.search(pattern, line.strip())
        if match and match.group(1) in BIG:
            bad.append(line)
    return bad


def _populate(c: Container) -> dict[str, Any]:
    sub = setup(c, max_in_flight=50)
    leads = [new_lead(c, notes=1) for _ in range(5)]
    c.leads.create(replace(REQ, idempotency_key="k1"), {"fields": {}})
    q, now = queue_of(c), time.time() + 1
    jobs = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(j, "delivered") for j in jobs], now=now)
    with c.engine.connect() as conn:
        event_id = conn.execute(t.events.select().limit(1)).first().event_id  # type: ignore[union-attr]
    return {"sub": sub, "lead": leads[0], "event_id": event_id}


def _check(c: Container, what: str, run: Callable[[], Any]) -> None:
    with captured(c.engine) as statements:
        run()
    assert statements, f"{what}: no statement captured"
    for statement, params in statements:
        bad = full_scans(c.engine, statement, params)
        assert not bad, f"{what} scans a whole table:\n{statement}\n{bad}"


def test_list_endpoints_use_indexes(container: Container) -> None:
    c = container
    seeded = _populate(c)
    sub_id, lead, event_id = seeded["sub"]["id"], seeded["lead"], seeded["event_id"]

    def in_uow(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with c.readonly_uow() as uow:
                return fn(uow)

        return run

    checks: dict[str, Callable[[], Any]] = {
        "leads": in_uow(lambda u: u.leads.page(MID, LeadFilter(), None, 50)),
        "leads by owner": in_uow(
            lambda u: u.leads.page(MID, LeadFilter(owner="x"), cursors.encode(2), 50)
        ),
        "events": in_uow(
            lambda u: u.events.page(MID, after=None, event_type=None, entity_id=None, limit=50)
        ),
        "events after": in_uow(
            lambda u: u.events.page(MID, after=event_id, event_type=None, entity_id=None, limit=5)
        ),
        "events of a lead": in_uow(
            lambda u: u.events.page(MID, after=None, event_type=None, entity_id=lead, limit=5)
        ),
        "timeline": in_uow(
            lambda u: u.events.timeline(MID, lead, is_follow_up=None, cursor=None, limit=50)
        ),
        "subscriptions": in_uow(lambda u: u.subscriptions.page(MID, None, 50)),
        "deliveries": in_uow(lambda u: u.deliveries.page(MID, sub_id, None, cursors.encode(9), 50)),
        "deliveries by status": in_uow(lambda u: u.deliveries.page(MID, sub_id, "dead", None, 50)),
        "api keys": in_uow(lambda u: u.tenants.list_keys(MID)),
    }
    for what, run in checks.items():
        _check(c, what, run)


def test_purges_use_indexes(container: Container) -> None:
    c = container
    _populate(c)
    with c.engine.begin() as conn:  # everything old, so every purge statement runs
        conn.execute(update(t.events).values(create_time=0))
        conn.execute(update(t.deliveries).values(updated_at=0.0))
        conn.execute(update(t.idempotency_keys).values(created_at=0.0))
    store = SqlRetention(c.engine, c.gate)
    for kind in ("idempotency_keys", "deliveries", "events"):
        _check(c, f"purge of {kind}", lambda k=kind: store.purge(k, before=1.0, limit=10, now=1.0))  # type: ignore[misc]


def test_the_claim_walks_the_due_index_in_order(container: Container) -> None:
    # A claim must stop after reading twice its limit of due rows: the plan walks
    # ix_deliveries_due in next_attempt_at order, with no sort of every due row (what the
    # planner chose on its own, 26 ms a claim behind 10,000 due deliveries).
    c = container
    setup(c, max_in_flight=50)
    for _ in range(30):
        new_lead(c)
    q, now = queue_of(c), time.time() + 1
    if c.engine.dialect.name == "sqlite":
        # SQLite's queue runs its statements on sqlite3 itself, past SQLAlchemy's events: the
        # claim's text is the named one, its parameters as the queue gives them.
        assert len(claim(q, now, limit=5)) == 5
        sql = queue_statements("sqlite")
        statement = sql.claim
        params: Any = {
            "now": now,
            "limit": 5,
            "scan": 10,
            "exclude": "[]",
            "probes": "[]",
            "after": -1.0,
        }
    else:
        with captured(c.engine) as statements:
            claim(q, now, limit=5)
        (statement, params), *_ = [(s, p) for s, p in statements if "ranked AS" in s]
    with c.engine.connect() as conn:
        if c.engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "USING INDEX ix_deliveries_due" in plan, plan
            assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        else:
            conn.exec_driver_sql("SET enable_bitmapscan = off")  # as the claim sets it
            rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
            plan = "\n".join(str(r[0]) for r in rows)
            assert "Index Scan using ix_deliveries_due" in plan, plan


def test_the_lead_order_check_is_a_probe_per_due_row_whatever_the_statistics(
    container: Container,
) -> None:
    """Catches: PostgreSQL planning the claim's per-lead order check as an anti join that
    scans the whole partial index once per due row, when the statistics were taken while
    nothing was due (a claim behind a burst of 6,000 took 8.9 s until autoanalyze ran)."""
    c = container
    if c.engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's; SQLite runs a correlated subquery per row")
    setup(c, max_in_flight=50)
    for _ in range(40):
        new_lead(c)
    with c.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE deliveries SET status = 'delivered', next_attempt_at = NULL")
        conn.exec_driver_sql("ANALYZE deliveries")  # statistics of a queue with nothing due
    for _ in range(200):
        new_lead(c)
    q, now = queue_of(c), time.time() + 1
    with captured(c.engine) as statements:
        claim(q, now, limit=5)
    (statement, params), *_ = [(s, p) for s, p in statements if "ranked AS" in s]
    with c.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_bitmapscan = off")  # as the claim sets it
        plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
    assert "Anti Join" not in plan, plan
    assert re.search(
        r"SubPlan \d+\n\s+->  Index (Only )?Scan using ix_deliveries_lead_order", plan
    ), plan


def test_where_a_skipping_claim_starts_is_found_on_the_due_index(container: Container) -> None:
    # The lookup a claim that skips subscriptions starts from (`SqlDeliveryQueue._skip_to`)
    # walks the due index in order and stops at its first row, like the claim itself.
    c = container
    setup(c, max_in_flight=50)
    for _ in range(10):
        new_lead(c)
    sql = queue_statements(c.engine.dialect.name)
    exclude = sql.id_list(["nobody"])
    with c.engine.connect() as conn:
        if c.engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql.first_due_outside.replace(":exclude", "?"), (exclude,)
            ).all()
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "USING INDEX ix_deliveries_due" in plan, plan
            assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        else:
            conn.exec_driver_sql("SET enable_bitmapscan = off")
            conn.exec_driver_sql("SET enable_seqscan = off")
            from sqlalchemy import text as sql_text

            rows = conn.execute(
                sql_text("EXPLAIN " + sql.first_due_outside), {"exclude": exclude}
            ).all()
            plan = "\n".join(str(r[0]) for r in rows)
            # PostgreSQL picks between the due index walked in order and the order index of
            # the few other rows, by its statistics: either reads an index, never the table.
            assert "Seq Scan on deliveries" not in plan, plan
            assert "ix_deliveries_due" in plan or "ix_deliveries_lead_order" in plan, plan


def _indexes_read(engine: Engine, statement: str, params: Any) -> str:
    """The plan of a statement, as text naming the indexes it reads."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
        return "\n".join(str(r[0]) for r in rows)


def test_the_partial_indexes_serve_their_queries(container: Container) -> None:
    """Migration 0006 keeps out of the indexes what no query reads through them (a lead with no
    owner, every lead not voided, a delivery not delivered); each query that needs one must
    still be planned on it, on both dialects, and with its values as parameters (a cached
    plan): catches a filter the planner cannot prove implies the index's condition, which
    would walk all of a tenant's leads or all deliveries instead."""
    c = container
    seeded = _populate(c)
    c.leads.perform(replace(REQ, idempotency_key="void"), "void", seeded["lead"], {})

    def in_uow(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with c.readonly_uow() as uow:
                return fn(uow)

        return run

    checks: dict[str, tuple[Callable[[], Any], str]] = {
        "voided leads": (
            in_uow(lambda u: u.leads.page(MID, LeadFilter(voided=True), None, 50)),
            "ix_leads_voided_seq",
        ),
        "an owner's leads": (
            in_uow(lambda u: u.leads.page(MID, LeadFilter(owner="x"), None, 50)),
            "ix_leads_mid_owner_seq",
        ),
        "members' open leads": (
            in_uow(lambda u: u.pools.open_leads(MID, ["x", "y"])),
            "ix_leads_mid_owner_seq",
        ),
    }
    for what, (run, index) in checks.items():
        with captured(c.engine) as statements:
            run()
        plans = [_indexes_read(c.engine, s, p) for s, p in statements if "leads" in s]
        assert any(index in plan for plan in plans), f"{what}: not on {index}:\n{plans}"
    # A lead's events walk the index of its versions, in order: no sort, and not the tenant's
    # whole log (`ix_events_mid_seq`), which holds no lead (0006 dropped `(mid, entity_id, seq)`),
    # a cursor included, whichever lead's event it names.
    lead = seeded["lead"]
    with c.engine.connect() as conn:
        others = select(t.events.c.event_id).where(t.events.c.entity_id != lead).limit(1)
        other_event = conn.execute(others).scalar_one()

    def log_by_lead(after: str | None) -> Callable[[], Any]:
        return in_uow(
            lambda u: u.events.page(MID, after=after, event_type=None, entity_id=lead, limit=5)
        )

    lead_events: dict[str, Callable[[], Any]] = {
        "the log by lead": log_by_lead(None),
        "the log by lead, after its own event": log_by_lead(seeded["event_id"]),
        "the log by lead, after another lead's event": log_by_lead(other_event),
        "the console's log by lead": lambda: c.console.events(MID, None, lead, None, 5),
        "the console's log by lead, a next page": lambda: c.console.events(
            MID, None, lead, "99", 5
        ),
    }
    versions = "(entity_id=?" if c.engine.dialect.name == "sqlite" else "uq_events_entity_version"
    for what, run in lead_events.items():
        with captured(c.engine) as statements:
            run()
        # Not the cursor's own lookup by event id.
        plans = [_indexes_read(c.engine, s, p) for s, p in statements if "entity_id = " in s]
        assert plans, what
        for plan in plans:
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, f"{what} sorts:\n{plan}"
            assert "ix_events_mid_seq" not in plan, f"{what} walks the tenant's log:\n{plan}"
            assert versions in plan, f"{what} is not on the lead's versions:\n{plan}"
    with c.engine.begin() as conn:
        conn.execute(update(t.deliveries).values(updated_at=0.0))
    store = SqlRetention(c.engine, c.gate)
    with captured(c.engine) as statements:
        store.purge("deliveries", before=1.0, limit=10, now=1.0)
    plans = [_indexes_read(c.engine, s, p) for s, p in statements if "deliveries" in s]
    assert any("ix_deliveries_delivered_at" in plan for plan in plans), plans


def test_a_delivery_listing_walks_the_index_its_filters_name(container: Container) -> None:
    """Catches (a scale review, 1.8 million deliveries): SQLite's planner, with no statistics,
    listed a subscription's dead deliveries through the tenant's (mid, status, seq) index
    (300-570 ms) and sorted every delivery a `created_after` matched (2.9 s)."""
    from leadhook.services.ports import DeliveryFilter

    c = container
    if c.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner reads the table's statistics")
    seeded = _populate(c)
    sub_id, lead = seeded["sub"]["id"], seeded["lead"]
    now = time.time()
    cases = {
        "ix_deliveries_subscription_status_seq": DeliveryFilter(
            status="dead", subscription_id=sub_id
        ),
        "ix_deliveries_subscription_seq": DeliveryFilter(
            subscription_id=sub_id, created_after=now - 60
        ),
        "ix_deliveries_mid_entity_id_seq": DeliveryFilter(entity_id=lead, subscription_id=sub_id),
        "ix_deliveries_mid_seq": DeliveryFilter(created_after=now - 60, created_before=now + 60),
        "ix_deliveries_mid_status_seq": DeliveryFilter(status="dead", created_before=now),
    }
    # A window that begins after every delivery: an empty range, and an empty page.
    with c.readonly_uow() as uow:
        assert (
            uow.deliveries.search(MID, DeliveryFilter(created_after=now + 3600), None, 50).data
            == []
        )
    for index, filters in cases.items():
        with captured(c.engine) as statements, c.readonly_uow() as uow:
            uow.deliveries.search(MID, filters, None, 50)
        listing = [(s, p) for s, p in statements if "ORDER BY deliveries.seq DESC" in s]
        assert len(listing) == 1, statements
        with c.engine.connect() as conn:
            plan = [
                str(r[-1])
                for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + listing[0][0], listing[0][1])
            ]
        assert any(f"USING INDEX {index} " in line for line in plan), (filters, plan)
        assert not any("TEMP B-TREE" in line for line in plan), (filters, plan)


def test_duplicates_walk_the_keys_indexes_not_the_tenant(container: Container) -> None:
    """Catches (a scale review): asked with both keys at once, SQLite's planner walked the
    tenant's leads in seq order (148 ms for one duplicate among 300,000)."""
    c = container
    if c.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner reads the table's statistics")
    setup(c)
    lead_id = json.loads(
        c.leads.create(REQ, {"fields": {"mobile": "13800138000", "email": "a@x.cn"}})[1]
    )["lead"]["id"]
    with c.readonly_uow() as uow:
        lead = uow.leads.get(MID, lead_id)
    assert lead is not None
    with captured(c.engine) as statements, c.readonly_uow() as uow:
        assert uow.pools.duplicates(lead, 50) == []
    plans = [_indexes_read(c.engine, s, p) for s, p in statements if "leads" in s]
    assert len(plans) == 2, plans
    assert any("ix_leads_mobile_key" in plan for plan in plans), plans
    assert any("ix_leads_email_key" in plan for plan in plans), plans
    assert not any("ix_leads_mid_seq" in plan for plan in plans), plans


def test_a_leads_later_deliveries_are_held_back_and_let_go_on_its_order_index(
    container: Container,
) -> None:
    """What a record runs for each failed or finished delivery (`wait_behind`, `come_due`)
    probes the lead's unfinished deliveries on ix_deliveries_lead_order, the claims' sweep
    (`wait_sweep`) walks the due index in order and looks each row's lead up there too, and
    its move (`wait_until`) finds each row by its seq: catches a plan that walks all of a
    subscription's pending deliveries once per verdict (PostgreSQL took its (status, seq)
    index: 300 ms a record of 64 behind 12,000, then a bitmap of the due index: 450 ms behind
    33,000), or the due index backwards for a `MAX`, or joins the sweep's rows to a scan of
    the whole table."""
    c = container
    setup(c, max_in_flight=50)
    for _ in range(5):
        new_lead(c, notes=1)
    sql = queue_statements(c.engine.dialect.name)
    now = time.time()
    with c.engine.connect() as conn:
        seq = conn.execute(select(t.deliveries.c.seq).limit(1)).scalar_one()
    sweep: dict[str, Any] = {"now": now, "after": -1.0, "walk": 100}
    if c.engine.dialect.name == "sqlite":
        params: dict[str, Any] = {
            "wait_behind": (now, "s", "l", 1, seq),
            "come_due": ("s", "l", 1, now),
            "wait_until": (seq, now, seq),
        }
        sweep["exclude"] = "[]"
    else:
        with c.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE deliveries")
        params = {
            "wait_behind": (["s"], ["l"], [1], [now], [seq]),
            "come_due": (now, ["s"], ["l"], [1], now),
            "wait_until": ([seq], [now], [seq], [seq]),
        }
        sweep["exclude"] = []
    plans = {name: _indexes_read(c.engine, getattr(sql, name), p) for name, p in params.items()}
    with c.engine.connect() as conn:
        if c.engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql.wait_sweep, sweep).all()
            plans["wait_sweep"] = "\n".join(str(r[-1]) for r in rows)
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.execute(text("EXPLAIN " + sql.wait_sweep), sweep).all()
            plans["wait_sweep"] = "\n".join(str(r[0]) for r in rows)
    order = "ix_deliveries_lead_order"
    for name in ("wait_behind", "come_due", "wait_sweep"):
        assert order in plans[name], f"{name}:\n{plans[name]}"
    assert "ix_deliveries_due" in plans["wait_sweep"], plans["wait_sweep"]
    assert "Backward" not in plans["wait_sweep"], plans["wait_sweep"]
    pk = "INTEGER PRIMARY KEY" if c.engine.dialect.name == "sqlite" else "pk_deliveries"
    assert pk in plans["wait_until"], plans["wait_until"]
    for name in ("wait_behind", "come_due", "wait_until"):  # no walk of every unfinished one
        assert "ix_deliveries_due" not in plans[name], f"{name}:\n{plans[name]}"
    for name, plan in plans.items():
        assert "TEMP B-TREE" not in plan and "Seq Scan on deliveries" not in plan, plan
        assert not re.search(r"^SCAN deliveries(?! USING)", plan, re.M), f"{name}:\n{plan}"
