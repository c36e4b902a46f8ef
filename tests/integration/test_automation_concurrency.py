"""Pool automation under real concurrency on PostgreSQL: several workers, concurrent creates.

Two containers (two engines, two connection pools: as two worker processes would have) run the
reclaim rule at the same instant over 1,000 due leads; concurrent creates share one
round-robin turn. Nothing is done twice, nothing is skipped.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from leadhook.adapters.db import tables as t
from leadhook.adapters.memory import FakeClock
from leadhook.bootstrap import Container, build
from leadhook.domain.operator import SYSTEM
from leadhook.services.leads import BehaviourRequest
from leadhook.settings import Settings

pytestmark = pytest.mark.postgres

START = 1_676_962_253.0
DAY = 86400.0
LEADS = 1000


@pytest.fixture
def workers(postgres_url: str) -> Iterator[tuple[Container, Container, FakeClock]]:
    """Two containers over one fresh PostgreSQL database, sharing a clock the test moves."""
    clock = FakeClock(START)
    a = build(Settings(database_url=postgres_url), clock=clock)
    b = build(Settings(database_url=postgres_url), run_migrations=False, clock=clock)
    try:
        a.tenants.create("t1")
        for member in ("m1", "m2", "m3"):
            a.tenants.put_catalog_entry("t1", "members", member, {"name": member})
        yield a, b, clock
    finally:
        a.close()
        b.close()


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    if errors:
        raise errors[0]
    return results


def test_two_workers_reclaim_1000_due_leads_each_once(
    workers: tuple[Container, Container, FakeClock],
) -> None:
    a, b, clock = workers
    a.tenants.put_catalog_entry(
        "t1", "lead_pools", "east", {"name": "东区", "reclaim": {"after_days": 1}}
    )
    items = [{"lead_pool": "east", "owner": ("m1", "m2", "m3")[i % 3]} for i in range(LEADS)]
    status, body = a.leads.create_many(BehaviourRequest("t1", SYSTEM), items)
    assert status == 201
    ids = {d["lead"]["id"] for d in json.loads(body)["data"]}
    clock.advance(DAY)

    runs_a, runs_b = _together(a.automation.run_due, b.automation.run_due)
    moved_a = [i for r in runs_a for i in r.lead_ids]
    moved_b = [i for r in runs_b for i in r.lead_ids]
    assert len(moved_a) + len(moved_b) == LEADS
    assert set(moved_a).isdisjoint(moved_b) and set(moved_a) | set(moved_b) == ids

    # The log agrees: one reclaim event per lead, and every lead is at version 2, unowned.
    with a.engine.connect() as conn:
        e = t.events.c
        per_lead = Counter(
            conn.execute(select(e.entity_id).where(e.event_type == "object_change_owner")).scalars()
        )
        c = t.leads.c
        states = conn.execute(select(c.version, c.owner, func.count()).group_by(c.version, c.owner))
        assert [tuple(row) for row in states] == [(2, None, LEADS)]
    assert set(per_lead) == ids and set(per_lead.values()) == {1}
    # Running again, from either worker, changes nothing.
    assert _together(a.automation.run_due, b.automation.run_due) == [[], []]


def test_concurrent_creates_never_share_a_round_robin_turn(
    workers: tuple[Container, Container, FakeClock],
) -> None:
    a, b, _ = workers
    a.tenants.put_catalog_entry(
        "t1",
        "lead_pools",
        "east",
        {"name": "东区", "assignment": {"mode": "round_robin", "members": ["m1", "m2", "m3"]}},
    )

    def create_30(container: Container) -> Callable[[], list[str]]:
        def run() -> list[str]:
            owners = []
            for _ in range(30):
                _, body = container.leads.create(
                    BehaviourRequest("t1", SYSTEM), {"lead_pool": "east"}
                )
                owners.append(json.loads(body)["lead"]["owner"])
            return owners

        return run

    got = _together(create_30(a), create_30(b), create_30(a), create_30(b))
    assert Counter(o for owners in got for o in owners) == {"m1": 40, "m2": 40, "m3": 40}
    with a.engine.connect() as conn:
        turns = conn.execute(select(t.pool_turns.c.turns)).scalar_one()
    assert turns == 120
