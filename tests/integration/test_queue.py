"""The delivery queue contract: lease, order, record, release.

Every test runs on the in-memory queue (`adapters/memory/queue.py`, which the dispatcher's unit
tests use) and on the SQL queue over SQLite and PostgreSQL, so the three keep one set of rules.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from queue_support import MemoryContainer, empty_database
from sqlalchemy import update

from leadhook.adapters.db import queue as queue_module
from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import WriteGate, make_engine
from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.adapters.memory.queue import MemoryDeliveryQueue
from leadhook.api import bodies
from leadhook.bootstrap import Container, build
from leadhook.domain.errors import ConflictError, NotFoundError, ValidationError
from leadhook.domain.operator import Operator
from leadhook.domain.targets import TargetError
from leadhook.domain.times import rfc3339
from leadhook.services.lanes import LANE_DEPTH, MAX_IN_FLIGHT, claim_cap
from leadhook.services.leads import BehaviourRequest
from leadhook.services.ports import Attempt, DeliveryStatus, Disable, Job, Verdict
from leadhook.settings import Settings

MID = "acme"
REQ = BehaviourRequest(mid=MID, operator=Operator())


def setup(c: Backend, **sub: Any) -> dict[str, Any]:
    c.tenants.create(MID)
    return create(c, MID, {"url": "http://127.0.0.1:9/hook", "event_types": ["*"], **sub})


# The services answer domain objects; these show them as the API does.
def create(c: Backend, mid: str, fields: dict[str, Any]) -> dict[str, Any]:
    made = c.subscriptions.create(mid, fields)
    return bodies.subscription_with_secret(made, c.clock()).model_dump()


def subscription(c: Backend, sub_id: str) -> dict[str, Any]:
    return bodies.subscription(c.subscriptions.get(MID, sub_id), c.clock()).model_dump()


def delivery(c: Backend, delivery_id: str) -> dict[str, Any]:
    return bodies.delivery(c.subscriptions.delivery(MID, delivery_id)).model_dump()


def deliveries(c: Backend, sub_id: str) -> list[dict[str, Any]]:
    page = c.subscriptions.deliveries(MID, sub_id, None, None, 10)
    return bodies.deliveries(page).model_dump()["data"]


def half_open(c: Container, sub_id: str, now: float) -> None:
    """Put the subscription's circuit half open: its retry is due and nobody probes it."""
    with c.engine.begin() as conn:
        conn.execute(
            update(t.subscriptions)
            .where(t.subscriptions.c.id == sub_id)
            .values(circuit_failures=5, circuit_opened_at=now - 60, circuit_retry_at=now - 1)
        )


def new_lead(c: Backend, notes: int = 0) -> str:
    _, body = c.leads.create(REQ, {"fields": {}})
    lead_id: str = json.loads(body)["lead"]["id"]
    for i in range(notes):
        c.leads.perform(REQ, "notes", lead_id, {"notes": f"note {i}", "is_follow_up": False})
    return lead_id


Backend = Container | MemoryContainer
Queue = SqlDeliveryQueue | MemoryDeliveryQueue


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def container(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """The services and the queue over each backend in turn (this module's contract)."""
    c = open_backend(request.param, request, tmp_path)
    yield c
    c.close()


def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Any) -> Backend:
    """The services over the memory store, or a container over an empty database of `name`."""
    if name == "memory":
        return MemoryContainer()
    url = empty_database(name, request, tmp_path)
    return build(Settings(database_url=url, allow_private_targets=True), run_migrations=False)


def queue_of(c: Backend) -> Queue:
    if isinstance(c, MemoryContainer):
        return c.queue()
    return SqlDeliveryQueue(c.engine, c.gate)


def independent_queue(c: Backend) -> tuple[Queue, Callable[[], None]]:
    """A queue as another worker process would have it (its own engine), and how to close it."""
    if isinstance(c, MemoryContainer):
        return c.queue(), lambda: None
    engine = make_engine(c.settings.database_url)
    return SqlDeliveryQueue(engine, WriteGate(engine)), engine.dispose


def claim(q: Queue, now: float, *, worker: str = "w1", **kw: Any) -> list[Job]:
    args: dict[str, Any] = {"limit": 100, "lease_until": now + 60, "exclude": (), **kw}
    return q.claim(worker_id=worker, now=now, **args)


def outcome(
    job: Job,
    status: DeliveryStatus,
    *,
    code: int | None = 200,
    at: float | None = None,
    disable: Disable | None = None,
) -> Verdict:
    error = None if status == "delivered" else f"HTTP {code}"
    attempt = Attempt(time.time(), code, 12.5, error, "x" * 10)
    return Verdict(job, attempt, status, at, error, disable)


def failing_since(c: Backend, sub_id: str) -> str | None:
    since: str | None = subscription(c, sub_id)["failing_since"]
    return since


def test_claim_returns_all_a_send_needs_and_leases_it(container: Backend) -> None:
    sub = setup(container)
    leads = {new_lead(container) for _ in range(3)}
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    assert {j.entity_id for j in jobs} == leads and len(jobs) == 3
    for job in jobs:
        stored = container.events.get(MID, job.event_id)
        assert job.body == stored.encode()  # the stored bytes, exactly
        assert (job.url, job.secret, job.subscription_id) == (sub["url"], sub["secret"], sub["id"])
        assert job.max_in_flight == sub["max_in_flight"] and job.attempt_count == 0
        assert job.lease_until == now + 60 and job.mid == MID
    assert claim(q, now, worker="w2") == []  # leased
    again = claim(q, now + 61, worker="w2")  # the lease ran out: anyone may take it
    assert sorted(j.seq for j in again) == sorted(j.seq for j in jobs)


def test_a_lead_is_claimed_one_event_at_a_time_in_version_order(container: Backend) -> None:
    setup(container)
    lead = new_lead(container, notes=2)  # versions 1, 2, 3
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    assert v1.entity_version == 1
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 5)], now=now)
    assert claim(q, now) == []  # v1 waits for its retry and v2 waits for v1
    (v1b,) = claim(q, now + 6)
    assert (v1b.seq, v1b.attempt_count) == (v1.seq, 1)
    q.record(worker_id="w1", verdicts=[outcome(v1b, "dead", code=500)], now=now)
    (v2,) = claim(q, now + 6)  # dead counts as finished: the lead moves on
    assert (v2.entity_id, v2.entity_version) == (lead, 2)
    q.record(worker_id="w1", verdicts=[outcome(v2, "delivered")], now=now)
    (v3,) = claim(q, now + 6)
    assert v3.entity_version == 3


def later_versions(c: Backend, sub_id: str) -> list[tuple[str, str | None]]:
    """(status, next_attempt_at) of the subscription's deliveries after a lead's first, oldest
    first (these tests write one lead)."""
    shown = sorted(deliveries(c, sub_id), key=lambda d: d["entity_version"])
    return [(d["status"], d["next_attempt_at"]) for d in shown if d["entity_version"] > 1]


def test_a_failed_deliverys_later_versions_wait_for_its_retry_then_go_when_it_is_delivered(
    container: Backend,
) -> None:
    """Catches: a lead's later deliveries left due while an earlier one waits for its retry:
    per-lead order holds them back anyway, and every claim stepped over each of them (behind a
    dead endpoint, tens of thousands: a worker busy walking them, every tenant's deliveries
    late); and, once held back, one left waiting when the earlier one went early."""
    sub = setup(container)
    new_lead(container, notes=2)  # versions 1, 2, 3
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 600)], now=now)
    assert later_versions(container, sub["id"]) == [("pending", rfc3339(now + 600))] * 2
    # Sent before its schedule says (a replay of what failed): once it is delivered, the lead's
    # next delivery is due at once, and each after it when the one before it finishes.
    assert container.subscriptions.replay(MID, sub["id"], 0, "failed") == 1
    (again,) = claim(q, now + 1)
    assert again.seq == v1.seq
    q.record(worker_id="w1", verdicts=[outcome(again, "delivered")], now=now + 2)
    # The next one goes now; the one after it waits for it in turn, out of the claims' way.
    waiting = [("pending", rfc3339(now + 2)), ("pending", rfc3339(now + 600))]
    assert later_versions(container, sub["id"]) == waiting
    (v2,) = claim(q, now + 2)
    assert v2.entity_version == 2
    q.record(worker_id="w1", verdicts=[outcome(v2, "delivered")], now=now + 3)
    assert later_versions(container, sub["id"])[-1] == ("pending", rfc3339(now + 3))
    (v3,) = claim(q, now + 3)
    assert v3.entity_version == 3


def test_a_dead_deliverys_later_versions_are_due_at_once(container: Backend) -> None:
    sub = setup(container)
    new_lead(container, notes=1)
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 600)], now=now)
    assert container.subscriptions.replay(MID, sub["id"], 0, "failed") == 1
    (again,) = claim(q, now + 1)
    q.record(worker_id="w1", verdicts=[outcome(again, "dead", code=410)], now=now + 2)
    assert later_versions(container, sub["id"]) == [("pending", rfc3339(now + 2))]
    (v2,) = claim(q, now + 2)
    assert v2.entity_version == 2


def test_a_late_failure_of_a_delivery_another_worker_delivered_holds_nothing_back(
    container: Backend,
) -> None:
    setup(container)
    new_lead(container, notes=1)
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now, lease_until=now + 10)
    (taken,) = claim(q, now + 11, worker="w2")  # w1's lease ran out: w2 sends it again
    q.record(worker_id="w2", verdicts=[outcome(taken, "delivered")], now=now + 12)
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 600)], now=now + 13)
    (v2,) = claim(q, now + 13)
    assert v2.entity_version == 2


def test_a_late_failure_of_a_delivery_another_worker_is_sending_holds_nothing_back(
    container: Backend,
) -> None:
    """Catches: a verdict of a lease that ran out, recorded while another worker sends the
    delivery again, holding the lead's next one back until that worker's lease ends (a
    review: 30 s after the delivery was delivered, on PostgreSQL)."""
    sub = setup(container)
    new_lead(container, notes=1)
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now, lease_until=now + 10)
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 11)], now=now)
    (mine,) = claim(q, now + 11, lease_until=now + 21)
    (taken,) = claim(q, now + 22, worker="w2", lease_until=now + 52)  # w1's lease ran out
    late = outcome(mine, "failed", code=500, at=now + 40)
    q.record(worker_id="w1", verdicts=[late], now=now + 23)  # w2 is sending it meanwhile
    # Nothing held back: on PostgreSQL w2's record may run beside this one and not see it.
    ((_, due),) = later_versions(container, sub["id"])
    assert due is not None and due < rfc3339(now + 23)
    q.record(worker_id="w2", verdicts=[outcome(taken, "delivered")], now=now + 24)
    (v2,) = claim(q, now + 24)
    assert v2.entity_version == 2


def test_a_new_events_delivery_behind_a_waiting_one_is_moved_out_of_the_claims_way(
    container: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: deliveries of a lead's new events, written due at once behind an earlier one
    that waits for its retry, left in every claim's walk until that retry."""
    monkeypatch.setattr(queue_module, "SWEEP_EVERY", 0.0)  # every claim sweeps
    sub = setup(container)
    lead = new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(v1, "failed", code=500, at=now + 600)], now=now)
    container.leads.perform(REQ, "notes", lead, {"notes": "later", "is_follow_up": False})
    ((status, due),) = later_versions(container, sub["id"])
    assert status == "pending" and due is not None and due < rfc3339(now + 1)
    assert claim(q, now + 1) == []
    assert later_versions(container, sub["id"]) == [("pending", rfc3339(now + 600))]
    # A delivery in flight holds nothing back this way: it ends soon, and the next is due then.
    (v1b,) = claim(q, now + 601)
    container.leads.perform(REQ, "notes", lead, {"notes": "later still", "is_follow_up": False})
    assert claim(q, now + 601) == []
    assert later_versions(container, sub["id"])[-1][1] < rfc3339(now + 601)  # type: ignore[operator]
    q.record(worker_id="w1", verdicts=[outcome(v1b, "delivered")], now=now + 602)
    assert [j.entity_version for j in claim(q, now + 602)] == [2]


def test_a_replayed_earlier_version_waits_while_a_later_one_is_in_flight(
    container: Backend,
) -> None:
    # One event of a lead and subscription in flight at a time: a replay (or retry) of v1
    # while v2 is being sent must not put v1 beside it.
    sub = setup(container)
    new_lead(container, notes=1)  # versions 1, 2
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(v1, "delivered")], now=now)
    (v2,) = claim(q, now)
    assert v2.entity_version == 2
    assert container.subscriptions.replay(MID, sub["id"], 0) == 1  # v1 is queued again
    assert claim(q, now + 1, worker="w2") == []  # v2 is in flight: v1 waits
    q.record(worker_id="w1", verdicts=[outcome(v2, "delivered")], now=now + 1)
    (again,) = claim(q, now + 2, worker="w2")
    assert (again.seq, again.entity_version) == (v1.seq, 1)


def test_a_delivery_in_flight_when_its_subscription_is_deleted_stays_dead(
    container: Backend,
) -> None:
    sub = setup(container, max_in_flight=10)
    new_lead(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    a, b = claim(q, now)
    container.subscriptions.delete(MID, sub["id"])
    verdicts = [outcome(a, "failed", code=500, at=now + 5), outcome(b, "delivered")]
    q.record(worker_id="w1", verdicts=verdicts, now=now + 1)
    for job in (a, b):
        state = delivery(container, job.id)
        assert (state["status"], state["next_attempt_at"], state["last_error"]) == (
            "dead",
            None,
            "subscription deleted",
        )
        assert len(state["attempts"]) == 1  # the attempt itself is on record
    assert claim(q, now + 10) == []


def old_backlog(c: Backend, leads: int) -> tuple[Queue, float]:
    """`leads` new leads' deliveries, made due an hour before the rest (the memory queue has
    no due index to walk); the queue and a time at which they are due."""
    for _ in range(leads):
        new_lead(c)
    q, now = queue_of(c), time.time() + 1
    if not isinstance(q, MemoryDeliveryQueue):
        with c.engine.begin() as conn:
            conn.execute(update(t.deliveries).values(next_attempt_at=now - 3600))
    return q, now


def test_a_claim_skipping_a_backlog_still_finds_every_other_delivery(container: Backend) -> None:
    # A claim skipping a subscription starts its walk after that one's backlog (the SQL queue
    # remembers where): whatever else is due, or becomes due later, is still found.
    busy = setup(container, max_in_flight=50)
    q, now = old_backlog(container, 30)
    other = create(container, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
    del other  # every event now goes to both; the busy one's backlog is skipped below
    lead = new_lead(container, notes=1)  # v1 and v2 to both subscriptions
    skip = [busy["id"]]
    jobs = claim(q, now, exclude=skip)
    assert [(j.entity_id, j.entity_version) for j in jobs] == [(lead, 1)]
    assert jobs[0].subscription_id != busy["id"]
    q.record(worker_id="w1", verdicts=[outcome(jobs[0], "delivered")], now=now)
    (v2,) = claim(q, now + 1, exclude=skip)  # unblocked after the walk's starting point
    assert (v2.entity_id, v2.entity_version) == (lead, 2)
    later = new_lead(container)  # written after that point was found
    (fresh,) = claim(q, time.time() + 2, exclude=skip)
    assert fresh.entity_id == later and fresh.subscription_id != busy["id"]
    # Skipping less (nothing): the backlog is claimed again, oldest first.
    again = claim(q, time.time() + 3, limit=500)
    assert {j.subscription_id for j in again} == {busy["id"]} and len(again) >= 30


def test_a_disabled_subscription_s_backlog_is_walked_past_and_found_once_enabled(
    container: Backend,
) -> None:
    """Catches (a scale review): a disabled subscription's 450,000 due deliveries stayed first
    in the due index, and every claim walked them all and dropped each (300 ms a claim, the
    worker busy for ever). A claim now starts past them, as past a skipped subscription's
    backlog; enabled again, they are claimed at once, oldest first."""
    off = setup(container)
    q, now = old_backlog(container, 30)
    container.subscriptions.update(MID, off["id"], {"enabled": False})
    other = create(container, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
    lead = new_lead(container)
    (job,) = claim(q, now)
    assert (job.subscription_id, job.entity_id) == (other["id"], lead)
    if isinstance(q, SqlDeliveryQueue):  # the walk started after the disabled backlog
        assert any(off["id"] in memo.excluded for memo in q._skips.values())
    q.record(worker_id="w1", verdicts=[outcome(job, "delivered")], now=now)
    container.subscriptions.update(MID, off["id"], {"enabled": True})
    again = claim(q, now + 1, limit=500)
    assert {j.subscription_id for j in again} == {off["id"]} and len(again) >= 30


def test_a_claim_takes_a_bounded_share_of_one_subscription(container: Backend) -> None:
    narrow = setup(container, max_in_flight=1)
    wide = create(
        container, MID, {"url": "http://127.0.0.1:9/b", "event_types": ["*"], "max_in_flight": 50}
    )
    slow = create(
        container,
        MID,
        {"url": "http://127.0.0.1:9/c", "event_types": ["*"], "rate_limit_per_s": 0.5},
    )
    for _ in range(10):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    per_sub = {s["id"]: sum(j.subscription_id == s["id"] for j in jobs) for s in (narrow, wide)}
    assert per_sub == {narrow["id"]: LANE_DEPTH, wide["id"]: 10}
    assert sum(j.subscription_id == slow["id"] for j in jobs) == 1
    assert claim_cap(1, None) == LANE_DEPTH and claim_cap(10, 3.7) == 3 and claim_cap(2, 50) == 2
    # A row written before the API refused more is clamped; a half-open circuit gives a probe.
    assert claim_cap(1000, None) == MAX_IN_FLIGHT * LANE_DEPTH and claim_cap(8, None, now) == 1
    rest = claim(q, now, exclude=[narrow["id"]])
    assert rest and all(j.subscription_id == slow["id"] for j in rest)


def test_a_subscription_at_its_cap_does_not_hold_others_behind_its_backlog(
    container: Backend,
) -> None:
    # An endpoint that fails at once never fills its slots, so the dispatcher never skips it;
    # a claim takes its cap of its backlog and goes on past the rest of that backlog to what
    # else is due (a tenant's deliveries due later waited behind all of it).
    failing = setup(container, max_in_flight=1)  # a cap of LANE_DEPTH a claim
    for _ in range(60):
        new_lead(container)
    other = create(container, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
    lead = new_lead(container)  # due after the whole backlog, to both
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now, limit=10)  # a first walk of 20 rows holds only the backlog
    mine = [j for j in jobs if j.subscription_id == failing["id"]]
    assert len(mine) == LANE_DEPTH
    assert [(j.subscription_id, j.entity_id) for j in jobs if j not in mine] == [
        (other["id"], lead)
    ]
    # The next claim takes the next of the backlog, oldest first.
    more = claim(q, now + 1, limit=10)
    assert len(more) == LANE_DEPTH and {j.subscription_id for j in more} == {failing["id"]}
    assert max(j.seq for j in mine) < min(j.seq for j in more)


def test_the_heartbeat_tells_which_subscriptions_were_stopped(container: Backend) -> None:
    live = setup(container)
    off = create(container, MID, {"url": "http://127.0.0.1:9/off", "event_types": ["*"]})
    gone = create(container, MID, {"url": "http://127.0.0.1:9/gone", "event_types": ["*"]})
    q = queue_of(container)
    ids = [live["id"], off["id"], gone["id"], "sub_unknown"]
    assert q.stopped(subscription_ids=ids) == {"sub_unknown"}
    container.subscriptions.update(MID, off["id"], {"enabled": False})
    container.subscriptions.delete(MID, gone["id"])
    assert q.stopped(subscription_ids=ids) == {off["id"], gone["id"], "sub_unknown"}
    assert q.stopped(subscription_ids=[]) == set()


def test_disabled_deleted_and_not_yet_due_deliveries_are_not_claimed(
    container: Backend,
) -> None:
    sub = setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    assert claim(q, time.time() - 60) == []  # not due yet
    container.subscriptions.update(MID, sub["id"], {"enabled": False})
    assert claim(q, now) == []
    container.subscriptions.update(MID, sub["id"], {"enabled": True})
    (job,) = claim(q, now)
    q.release(worker_id="w1", seqs=[job.seq], now=now)
    container.subscriptions.delete(MID, sub["id"])
    assert claim(q, now) == []
    assert delivery(container, job.id)["status"] == "dead"


def test_record_stores_attempts_states_and_the_failure_streak(container: Backend) -> None:
    sub = setup(container, max_in_flight=10)
    for _ in range(3):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    a, b, c = claim(q, now)
    q.record(
        worker_id="w1",
        verdicts=[
            outcome(a, "failed", code=503, at=now + 30),
            outcome(b, "dead", code=None),
            outcome(c, "failed", code=500, at=now + 60),
        ],
        now=now,
    )
    assert failing_since(container, sub["id"]) == rfc3339(now)
    page = deliveries(container, sub["id"])
    by_id = {d["id"]: d for d in page}
    assert by_id[a.id]["status"] == "failed" and by_id[a.id]["next_attempt_at"] == rfc3339(now + 30)
    assert by_id[a.id]["attempt_count"] == 1 and by_id[a.id]["last_error"] == "HTTP 503"
    (attempt,) = by_id[a.id]["attempts"]
    assert attempt["status_code"] == 503 and attempt["latency_ms"] == 12.5
    assert by_id[b.id]["status"] == "dead" and by_id[b.id]["next_attempt_at"] is None
    (a2,) = [j for j in claim(q, now + 31) if j.seq == a.seq]
    q.record(worker_id="w1", verdicts=[outcome(a2, "delivered")], now=now + 31)
    assert failing_since(container, sub["id"]) is None  # a success ends the streak
    done = delivery(container, a.id)
    assert done["status"] == "delivered" and len(done["attempts"]) == 2
    assert done["attempts"][0]["attempted_at"] <= done["attempts"][1]["attempted_at"]


def test_a_late_record_does_not_overwrite_the_next_lease_holder(container: Backend) -> None:
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (job,) = claim(q, now, lease_until=now + 1)
    (taken,) = claim(q, now + 2, worker="w2")
    q.record(worker_id="w1", verdicts=[outcome(job, "delivered")], now=now + 3)
    state = delivery(container, job.id)
    assert state["status"] == "pending" and len(state["attempts"]) == 1
    q.record(worker_id="w2", verdicts=[outcome(taken, "delivered")], now=now + 3)
    assert delivery(container, job.id)["status"] == "delivered"


def test_410_disables_at_once_and_auto_disable_respects_a_recent_success(
    container: Backend,
) -> None:
    gone = setup(container)
    failing = create(container, MID, {"url": "http://127.0.0.1:9/f", "event_types": ["*"]})
    new_lead(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    g = [j for j in jobs if j.subscription_id == gone["id"]]
    f = [j for j in jobs if j.subscription_id == failing["id"]]
    q.record(
        worker_id="w1",
        verdicts=[
            outcome(g[0], "dead", code=410, disable=Disable("endpoint answered HTTP 410 Gone")),
            # The streak starts now: "failing since before now - 10" is not true yet.
            outcome(f[0], "failed", code=500, at=now + 1, disable=Disable("auto", now - 10)),
        ],
        now=now,
    )
    assert subscription(container, gone["id"])["disabled_reason"] == (
        "endpoint answered HTTP 410 Gone"
    )
    assert subscription(container, gone["id"])["enabled"] is False
    assert subscription(container, failing["id"])["enabled"] is True
    q.record(
        worker_id="w1",
        verdicts=[outcome(f[1], "failed", code=500, at=now + 1, disable=Disable("auto", now))],
        now=now + 1,
    )
    shown = subscription(container, failing["id"])
    assert shown["enabled"] is False and shown["disabled_reason"] == "auto"
    assert shown["failing_since"] == rfc3339(now)


def test_released_deliveries_are_claimable_at_once(container: Backend) -> None:
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (job,) = claim(q, now)
    q.release(worker_id="w2", seqs=[job.seq], now=now)  # not its lease: nothing happens
    assert claim(q, now) == []
    q.release(worker_id="w1", seqs=[job.seq], now=now)
    assert [j.seq for j in claim(q, now, worker="w3")] == [job.seq]


def test_concurrent_workers_never_claim_the_same_delivery(container: Backend) -> None:
    setup(container, max_in_flight=100)
    container.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/b", "event_types": ["*"], "max_in_flight": 100}
    )
    container.leads.create_many(REQ, [{"fields": {}} for _ in range(300)])
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        q, close = independent_queue(container)  # a process of its own has its own engine
        mine: list[int] = []
        try:
            while True:
                jobs = q.claim(
                    worker_id=name,
                    limit=25,
                    now=time.time(),
                    lease_until=time.time() + 60,
                    exclude=(),
                )
                if not jobs:
                    break
                mine.extend(j.seq for j in jobs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close()
            claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    everything = [seq for seqs in claimed.values() for seq in seqs]
    assert len(everything) == len(set(everything)) == 600


def test_a_lease_makes_the_delivery_due_at_its_end_and_a_release_due_at_once(
    container: Backend,
) -> None:
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (job,) = claim(q, now, lease_until=now + 15)
    shown = delivery(container, job.id)
    assert shown["status"] == "pending" and shown["next_attempt_at"] == rfc3339(now + 15)
    assert q.renew(worker_id="w1", seqs=[job.seq], lease_until=now + 30) == {job.seq}
    assert delivery(container, job.id)["next_attempt_at"] == rfc3339(now + 30)
    # Lost with its worker, it is due when the lease runs out, not before.
    assert claim(q, now + 29, worker="w2") == []
    q.release(worker_id="w1", seqs=[job.seq], now=now + 2)
    assert delivery(container, job.id)["next_attempt_at"] == rfc3339(now + 2)
    assert [j.seq for j in claim(q, now + 2, worker="w2")] == [job.seq]


def test_a_small_claim_finds_due_deliveries_behind_many_in_flight(container: Backend) -> None:
    # The claim reads at most twice its limit of due rows: deliveries in flight must not be
    # among them (they would fill the read and starve the claim).
    setup(container, max_in_flight=100)
    for _ in range(12):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    held = claim(q, now, limit=10)
    assert len(held) == 10
    got = claim(q, now, limit=1, worker="w2")
    assert len(got) == 1 and got[0].seq not in {j.seq for j in held}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_container(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Container]:
    """A container over an empty SQL database: what only the SQL queue does."""
    c = open_backend(request.param, request, tmp_path)
    assert isinstance(c, Container)
    yield c
    c.close()


def _claimed(c: Container, n: int, max_in_flight: int) -> tuple[Any, Any, float, list[Any]]:
    """A subscription, `n` new leads and their `n` deliveries claimed by worker w1:
    (the subscription, the queue, the claim's time, the jobs)."""
    sub = setup(c, max_in_flight=max_in_flight)
    for _ in range(n):
        new_lead(c)
    q, now = queue_of(c), time.time() + 1
    jobs = claim(q, now, limit=n)
    assert len(jobs) == n
    return sub, q, now, jobs


def test_a_large_record_stores_every_verdict_as_given(sql_container: Container) -> None:
    """A record of many verdicts (one statement per table on PostgreSQL): every attempt and
    state lands as given; an answer's NUL (PostgreSQL's text holds none) is stored
    as U+FFFD instead of failing the record, which would resend everything it carried."""
    c = sql_container
    sub, q, now, jobs = _claimed(c, 150, max_in_flight=100)
    verdicts = []
    for i, job in enumerate(jobs):
        if i % 3 == 0:
            attempt = Attempt(now + i, 200, 7, None, "ok\x00done")  # an int latency, a NUL
            verdicts.append(Verdict(job, attempt, DeliveryStatus.DELIVERED, None, None))
        else:
            attempt = Attempt(now + i, None if i % 3 == 1 else 500, 1.5, f"e\x00{i}", "")
            verdicts.append(Verdict(job, attempt, DeliveryStatus.FAILED, now + 60 + i, f"e{i}"))
    q.record(worker_id="w1", verdicts=verdicts, now=now)
    for i, job in enumerate(jobs):
        state = delivery(c, job.id)
        (attempt,) = state["attempts"]
        if i % 3 == 0:
            assert state["status"] == "delivered" and state["next_attempt_at"] is None
            assert attempt["response_body"] == "ok\ufffddone" and attempt["latency_ms"] == 7
        else:
            assert state["status"] == "failed" and state["last_error"] == f"e{i}"
            assert state["next_attempt_at"] == rfc3339(now + 60 + i)
            assert attempt["error"] == f"e\ufffd{i}"
            assert attempt["status_code"] == (None if i % 3 == 1 else 500)
        assert state["attempt_count"] == 1
    assert failing_since(c, sub["id"]) is None  # some succeeded


@pytest.mark.parametrize("sql_container", ["postgresql"], indirect=True)
def test_the_heartbeat_and_a_record_of_the_same_leases_never_deadlock(
    sql_container: Container,
) -> None:
    """Catches: the heartbeat's renew and a record (or release) of jobs it still holds taking
    the same rows' locks in different orders: PostgreSQL broke each such deadlock after a
    second by failing one of them (seen under load: `DeadlockDetected` in the finish
    statement). A delivery process runs both at once, on two threads."""
    from sqlalchemy.exc import OperationalError

    c = sql_container
    _, q, now, jobs = _claimed(c, 60, max_in_flight=256)
    other, close = independent_queue(c)
    assert isinstance(other, SqlDeliveryQueue)
    errors: list[BaseException] = []
    rounds = 40

    def beat() -> None:
        for _ in range(rounds):
            try:
                other.renew(worker_id="w1", seqs=[j.seq for j in jobs], lease_until=now + 60)
            except OperationalError as exc:
                errors.append(exc)

    def settle() -> None:
        for i in range(rounds):
            # Outcomes arrive in any order: newest first here, half of them each time.
            mine = sorted(jobs, key=lambda j: -j.seq)[i % 2 :: 2]
            try:
                if i % 4 < 2:
                    q.release(worker_id="w1", seqs=[j.seq for j in mine], now=now)
                else:
                    verdicts = [outcome(j, DeliveryStatus.FAILED, code=500, at=now) for j in mine]
                    q.record(worker_id="w1", verdicts=verdicts, now=now)
            except OperationalError as exc:
                errors.append(exc)
            # Held again, as a claim would take them back (the rows stay this worker's),
            # their locks taken in seq order as the heartbeat takes them: this test's own
            # write must not be the deadlock it looks for.
            with c.engine.begin() as conn:
                conn.exec_driver_sql(
                    "SELECT seq FROM deliveries WHERE seq = ANY(%s) ORDER BY seq FOR UPDATE",
                    ([j.seq for j in mine],),
                )
                conn.execute(
                    update(t.deliveries)
                    .where(t.deliveries.c.seq.in_([j.seq for j in mine]))
                    .values(locked_by="w1", locked_until=now + 60)
                )

    threads = [threading.Thread(target=beat), threading.Thread(target=settle)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        close()
    assert errors == []


@pytest.mark.parametrize("sql_container", ["postgresql"], indirect=True)
def test_deleting_a_subscription_locks_its_deliveries_in_the_heartbeats_order(
    sql_container: Container,
) -> None:
    """Catches: a subscription's delete ending its unfinished deliveries in the order of an
    index on (status, seq), a failed one before a pending one of a lower seq, while the
    heartbeat (renew, seq order) holds the pending one and wants the failed one next: each
    waits for the other and PostgreSQL fails one of them after a second. The plan that walks
    that index is forced here; the stand-in for the heartbeat locks as renew does."""
    from sqlalchemy import text

    from leadhook.adapters.db.outbox import SqlSubscriptions

    c = sql_container
    sub = setup(c)
    new_lead(c)
    new_lead(c)
    q, now = queue_of(c), time.time() + 1
    low, high = sorted(claim(q, now, limit=10), key=lambda j: j.seq)
    q.record(worker_id="w1", verdicts=[outcome(high, DeliveryStatus.FAILED, at=now)], now=now)
    (again,) = claim(q, now + 1)  # held again, failed: it comes first in (status, seq)
    assert again.seq == high.seq
    lock = text("SELECT seq FROM deliveries WHERE seq = :seq FOR UPDATE")
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            with c.engine.begin() as conn:
                conn.execute(text("SET LOCAL enable_seqscan = off"))
                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                SqlSubscriptions(conn).delete(MID, sub["id"], now + 2)
        except Exception as exc:  # the deadlock's victim, if it is this side
            errors.append(exc)

    with c.engine.connect() as heartbeat:
        heartbeat.execute(lock, {"seq": low.seq})  # renew's order: the lower seq first
        deleting = threading.Thread(target=delete)
        deleting.start()
        time.sleep(0.5)  # the delete is waiting now (and, locking out of order, holds `high`)
        try:
            heartbeat.execute(lock, {"seq": high.seq})
            heartbeat.commit()
        except Exception as exc:
            heartbeat.rollback()
            errors.append(exc)
        deleting.join(30)
    assert not deleting.is_alive()
    assert errors == []
    assert [delivery(c, j.id)["status"] for j in (low, high)] == ["dead", "dead"]


def test_a_claim_records_what_finished_first_in_its_own_transaction(
    sql_container: Container,
) -> None:
    """Catches: the settling claim claiming before it records (the lead's next event would
    wait a round), or recording only part of what it carried."""
    c = sql_container
    setup(c)
    lead = new_lead(c, notes=1)  # versions 1 and 2
    q, now = SqlDeliveryQueue(c.engine, c.gate), time.time() + 1
    (v1,) = claim(q, now)
    (v2,) = q.settle_and_claim(
        worker_id="w1",
        verdicts=[outcome(v1, "delivered")],
        releases=[],
        limit=100,
        now=now,
        lease_until=now + 60,
        exclude=(),
    )
    assert (v2.entity_id, v2.entity_version) == (lead, 2)  # v1 finished before the claim read
    shown = delivery(c, v1.id)
    assert (shown["status"], shown["attempt_count"]) == ("delivered", 1)
    assert len(c.deliveries.attempts(MID, v1.id).attempts) == 1
    # A release rides along the same way: given back, and claimable by another worker.
    assert q.settle_and_claim(
        worker_id="w1", verdicts=[], releases=[v2.seq], limit=0, now=now,
        lease_until=now + 60, exclude=(),
    ) == []  # fmt: skip
    assert [j.seq for j in claim(q, now, worker="w2")] == [v2.seq]


@pytest.mark.parametrize("step", ["_claim_in", "_jobs"])
def test_a_claim_that_fails_writes_nothing_it_carried_or_leased(
    sql_container: Container, step: str
) -> None:
    """Catches: the record and the claim in two transactions (`_claim_in` failing), or the jobs
    built after the commit (`_jobs` failing: a secret the key cannot open). Either would leave
    the carried attempt written while the dispatcher, told the claim failed, writes it again,
    or leave leases that nobody holds."""
    c = sql_container
    setup(c)
    new_lead(c)

    def fails(self: SqlDeliveryQueue, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{step} failed")

    broken = type("Broken", (SqlDeliveryQueue,), {step: fails})(c.engine, c.gate)
    q, now = SqlDeliveryQueue(c.engine, c.gate), time.time() + 1
    (job,) = claim(q, now)
    with pytest.raises(RuntimeError, match="failed"):
        broken.settle_and_claim(
            worker_id="w1", verdicts=[outcome(job, "delivered")], releases=[], limit=10,
            now=now, lease_until=now + 60, exclude=(),
        )  # fmt: skip
    shown = delivery(c, job.id)
    assert (shown["status"], shown["attempt_count"]) == ("pending", 0)
    assert c.deliveries.attempts(MID, job.id).attempts == ()
    with pytest.raises(RuntimeError, match="failed"):  # the lease has run out: w2 may claim
        broken.claim(worker_id="w2", limit=10, now=now + 61, lease_until=now + 120, exclude=())
    assert [j.seq for j in claim(q, now + 61, worker="w3")] == [job.seq]  # never leased to w2
    q.record(worker_id="w3", verdicts=[outcome(job, "delivered")], now=now + 61)
    assert delivery(c, job.id)["status"] == "delivered"
    assert len(c.deliveries.attempts(MID, job.id).attempts) == 1


def test_a_half_open_circuit_gives_one_probe_even_when_a_claim_walks_past_a_backlog(
    sql_container: Container,
) -> None:
    """Catches: on SQLite, a pass that took a subscription's whole cap without meeting another
    of its rows did not count it as capped, so the claim's next pass (after another
    subscription's backlog) took a second probe of a half-open circuit: two deliveries sent at
    once to an endpoint that had not answered."""
    c = sql_container
    probed = setup(c)
    first = new_lead(c)  # the probe's first due delivery
    c.subscriptions.update(MID, probed["id"], {"enabled": False})
    failing = {"url": "http://127.0.0.1:9/failing", "event_types": ["*"], "max_in_flight": 1}
    create(c, MID, failing)  # a cap of LANE_DEPTH a claim
    for _ in range(60):  # its backlog, between the half-open endpoint's two deliveries
        new_lead(c)
    c.subscriptions.update(MID, probed["id"], {"enabled": True})
    second = new_lead(c)
    now = time.time() + 1
    half_open(c, probed["id"], now)
    jobs = claim(queue_of(c), now, limit=10)  # a first walk of 20 rows: the probe, the backlog
    probes = [j.entity_id for j in jobs if j.subscription_id == probed["id"]]
    assert probes == [first]
    assert len(jobs) == 1 + LANE_DEPTH  # the backlog's cap, then nothing else is due
    assert second not in {j.entity_id for j in jobs}


@pytest.mark.postgres
def test_a_probe_held_by_another_transaction_is_skipped_not_waited_for(
    request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """Catches: the probe reservation waiting for a subscription row another transaction holds
    (a settling claim records, locking its subscriptions, before it reserves probes: two of
    them waiting for each other's rows deadlocked)."""
    from sqlalchemy import text

    c = open_backend("postgresql", request, tmp_path)
    assert isinstance(c, Container)
    try:
        sub = setup(c)
        new_lead(c)
        now = time.time() + 1
        half_open(c, sub["id"], now)
        holder = c.engine.connect()
        holder.execute(
            text("SELECT id FROM subscriptions WHERE id = :id FOR UPDATE"), {"id": sub["id"]}
        )
        got: list[list[Job]] = []
        worker = threading.Thread(target=lambda: got.append(claim(queue_of(c), now)))
        worker.start()
        worker.join(5)
        finished = not worker.is_alive()
        holder.rollback()
        holder.close()
        worker.join(30)
        assert finished, "the claim waited for the row another transaction held"
        assert got == [[]]  # skipped: its open circuit admits no delivery without the probe
        assert [j.subscription_id for j in claim(queue_of(c), now)] == [sub["id"]]  # the probe
    finally:
        c.close()


def test_try_now_runs_at_once_on_sqlite_and_declines_while_another_holds_the_write_gate(
    sql_container: Container,
) -> None:
    """Catches: an event loop waiting for the write gate another process holds (the API's
    transaction), a call run twice or not at all, and PostgreSQL's round trips on the loop."""
    c = sql_container
    setup(c)
    lead = new_lead(c, notes=1)
    q, now = SqlDeliveryQueue(c.engine, c.gate), time.time() + 1
    args: dict[str, Any] = {
        "worker_id": "w1", "limit": 100, "now": now, "lease_until": now + 60, "exclude": (),
    }  # fmt: skip
    if c.engine.dialect.name != "sqlite":
        assert q.try_now("claim", **args) == (False, None)  # a round trip: on a thread
        return
    other, dispose = independent_queue(c)  # another process's gate on the same file
    assert isinstance(other, SqlDeliveryQueue)
    other._gate.acquire()
    try:
        started = time.monotonic()
        assert q.try_now("claim", **args) == (False, None)
        assert time.monotonic() - started < 0.5  # declined at once, not waited
    finally:
        other._gate.release()
        dispose()
    done, jobs = q.try_now("claim", **args)
    assert done and [(j.entity_id, j.entity_version) for j in jobs] == [(lead, 1)]
    done, _ = q.try_now("record", worker_id="w1", verdicts=[outcome(jobs[0], "delivered")], now=now)
    assert done and delivery(c, jobs[0].id)["status"] == "delivered"
    assert len(c.deliveries.attempts(MID, jobs[0].id).attempts) == 1
    # The gate was given back: a transaction on a thread takes it as before.
    (v2,) = claim(q, now)
    assert (v2.entity_id, v2.entity_version) == (lead, 2)
    assert q.try_now("renew", worker_id="w1", seqs=[v2.seq], lease_until=now + 90) == (
        False, None,
    )  # fmt: skip  # only the calls of one short write transaction run inline


def test_one_deliverys_retries_open_the_circuit_and_the_log_says_so(
    sql_container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches: the warning `circuit opened` came only from a worker's lane tripping on five
    silent attempts in a burst; one delivery retried five times without an answer opened the
    stored circuit (every worker stopped sending) with nothing in the log."""
    c = sql_container
    sub = setup(c)
    new_lead(c)
    q, now = queue_of(c), time.time() + 1
    caplog.set_level(logging.WARNING, logger="leadhook.queue")
    for attempt in range(5):  # one delivery at a time: no lane ever sees a burst
        (job,) = claim(q, now + attempt)
        q.record(worker_id="w1", verdicts=[_silent(job, now + attempt)], now=now + attempt)
    opened = [r for r in caplog.records if r.getMessage().startswith("circuit opened")]
    assert len(opened) == 1
    assert opened[0].levelno == logging.WARNING
    assert opened[0].__dict__["subscription_id"] == sub["id"]
    assert opened[0].__dict__["consecutive_failures"] == 5
    assert opened[0].__dict__["reopened"] is False
    assert subscription(c, sub["id"])["circuit"]["state"] == "open"
    # Half open; its probe gets no answer either: open again, for twice as long, and said.
    later = now + 30
    half_open(c, sub["id"], later)
    (probe,) = claim(q, later)
    q.record(worker_id="w1", verdicts=[_silent(probe, later)], now=later)
    opened = [r for r in caplog.records if r.getMessage().startswith("circuit opened")]
    assert len(opened) == 2
    assert opened[1].__dict__["reopened"] is True


def _silent(job: Job, at: float) -> Verdict:
    """An attempt started at `at` that got no answer (a timeout), to be retried a second on."""
    attempt = Attempt(at, None, 10_000.0, "timed out", "")
    return Verdict(job, attempt, "failed", at + 1, "timed out")


def test_a_replay_sends_again_only_the_types_the_subscription_receives_now(
    container: Backend,
) -> None:
    """Catches: a subscriber that narrowed its `event_types` got the types it had dropped
    again from a replay. What was queued before the change is still sent (it was wanted when
    its event happened); a replay is asked now, and follows the filter as it is now."""
    c = container
    sub = setup(c)
    new_lead(c, notes=2)  # object_create, then two object_add_notes
    q, now = queue_of(c), time.time() + 1
    jobs = claim(q, now)
    assert len(jobs) == 1  # per-lead order: one at a time
    for _ in range(3):
        (job,) = jobs or claim(q, now)
        jobs = []
        q.record(worker_id="w1", verdicts=[outcome(job, "delivered")], now=now)
    new_lead(c)  # queued while the subscription still wanted object_create
    c.subscriptions.update(MID, sub["id"], {"event_types": ["object_add_notes"]})
    assert c.subscriptions.replay(MID, sub["id"], 0) == 2
    by_type = sorted((d["event_type"], d["status"]) for d in deliveries(c, sub["id"]))
    assert by_type == [
        ("object_add_notes", "pending"),
        ("object_add_notes", "pending"),
        ("object_create", "delivered"),
        ("object_create", "pending"),  # queued before the change: still to be sent
    ]
    # Back to every type: the create is replayable again.
    c.subscriptions.update(MID, sub["id"], {"event_types": ["*"]})
    assert c.subscriptions.replay(MID, sub["id"], 0, "delivered") == 1


def test_a_large_replay_is_queued_in_batches_of_their_own_transactions(
    container: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches (a scale review): a replay of 463,651 deliveries was one UPDATE that held
    SQLite's write lock for 17 s, and every tenant's behaviours waited behind it."""
    from leadhook.services import subscriptions as subs_module

    c = container
    sub = setup(c)
    other = create(c, MID, {"url": "https://other.test/hook", "event_types": ["*"]})
    for _ in range(7):
        new_lead(c)
    q, now = queue_of(c), time.time() + 1
    done = 0
    while jobs := claim(q, now):
        verdicts = [outcome(j, "delivered" if j.seq % 3 else "dead") for j in jobs]
        q.record(worker_id="w1", verdicts=verdicts, now=now)
        done += len(jobs)
    assert done == 14  # seven events, two subscriptions
    monkeypatch.setattr(subs_module, "REPLAY_BATCH", 2)
    writes: list[int] = []
    opened = c.subscriptions._uow  # type: ignore[attr-defined]

    def counted() -> Any:
        writes.append(1)
        return opened()

    monkeypatch.setattr(c.subscriptions, "_uow", counted)
    assert c.subscriptions.replay(MID, sub["id"], 0) == 7
    mine = deliveries(c, sub["id"])
    assert sorted(d["status"] for d in mine) == ["pending"] * 7
    assert {d["status"] for d in deliveries(c, other["id"])} <= {"delivered", "dead"}
    # Each status walked in batches of two, each its own transaction (one more for the last,
    # which finds the end): never one statement over the whole window.
    assert len(writes) >= 5
    writes.clear()
    assert c.subscriptions.replay(MID, sub["id"], 0) == 0  # nothing finished to send again
    assert len(writes) == 2  # one look a status


def test_a_replay_of_failed_deliveries_sends_them_now_but_not_one_a_worker_holds(
    container: Backend,
) -> None:
    """An endpoint that answered 500 is mended: its failed deliveries waited for their next
    retry, hours away later in the schedule, with no way to send them all now (a review)."""
    c = container
    sub = setup(c)
    leads = [new_lead(c) for _ in range(3)]
    q, now = queue_of(c), time.time() + 1
    jobs = claim(q, now)
    assert len(jobs) == 3
    later = now + 3600
    q.record(
        worker_id="w1", verdicts=[outcome(j, "failed", code=500, at=later) for j in jobs], now=now
    )
    # A worker re-attempts one of them: it keeps its status, and its lease, until recorded.
    (held,) = claim(q, later + 1, limit=1)
    assert c.subscriptions.replay(MID, sub["id"], 0, "dead") == 0  # not what failed means
    assert c.subscriptions.replay(MID, sub["id"], 0, "failed") == 2
    shown = {d["entity_id"]: d for d in deliveries(c, sub["id"])}
    assert sorted(d["status"] for d in shown.values()) == ["failed", "pending", "pending"]
    assert shown[held.entity_id]["status"] == "failed"  # left to its worker
    again = claim(q, now + 2)  # due now, with a fresh schedule: long before `later`
    assert {j.entity_id for j in again} == set(leads) - {held.entity_id}
    assert all(d["attempt_count"] == 0 for k, d in shown.items() if k != held.entity_id)
    # Omitted, a replay still means the finished ones only.
    assert c.subscriptions.replay(MID, sub["id"], 0) == 0
    assert c.delivery_outcomes() == {"failed": 3}  # each backend counts what it recorded


def test_a_late_record_of_a_lease_taken_over_counts_no_dead_delivery(
    container: Backend,
) -> None:
    """Catches: after an outage longer than a lease, the worker that had sent a delivery and
    the one that took its lease over both recorded it dead, and `/metrics` counted 328 dead
    deliveries where 300 had died (an operator's review)."""
    c = container
    setup(c)
    new_lead(c)
    q, now = queue_of(c), time.time() + 1
    (first,) = claim(q, now, worker="w1", lease_until=now + 1)
    (again,) = claim(q, now + 2, worker="w2")  # w1's lease ran out: w2 holds it now
    q.record(worker_id="w1", verdicts=[outcome(first, "dead", code=500)], now=now + 3)
    assert c.delivery_outcomes() == {"failed": 1}  # its attempt, but no delivery ended
    q.record(worker_id="w2", verdicts=[outcome(again, "dead", code=500)], now=now + 4)
    assert c.delivery_outcomes() == {"failed": 2, "dead": 1}


def test_an_attempt_to_a_url_the_subscription_left_says_nothing_of_its_endpoint(
    container: Backend,
) -> None:
    # Deliveries were in flight to the old URL when the subscription moved to a new one: their
    # answers are still stored with the deliveries, but the old endpoint's 410, silence or
    # errors neither disable the subscription nor start its streak nor open its circuit.
    sub = setup(container)
    for _ in range(6):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    assert len(jobs) == 6
    container.subscriptions.update(MID, sub["id"], {"url": "http://127.0.0.1:9/new"})
    q.record(
        worker_id="w1",
        verdicts=[
            outcome(jobs[0], "dead", code=410, disable=Disable("endpoint answered HTTP 410 Gone")),
            outcome(jobs[1], "failed", code=500, at=now + 60),
            *[outcome(j, "failed", code=None, at=now + 60) for j in jobs[2:]],
        ],
        now=now,
    )
    shown = subscription(container, sub["id"])
    assert shown["enabled"] is True and shown["failing_since"] is None
    assert shown["circuit"]["state"] == "closed" and shown["circuit"]["consecutive_failures"] == 0
    statuses = {d["id"]: d["status"] for d in deliveries(container, sub["id"])}
    assert sorted(statuses.values()) == ["dead"] + ["failed"] * 5  # the deliveries' own states


def test_a_write_lock_another_program_holds_neither_freezes_the_loop_nor_a_stop(
    request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    # SQLite only: another program (the sqlite3 shell, a backup) holds the write lock without
    # leadhook's gate. `try_now` (the loop's way) waited out SQLite's 30 s busy timeout on the
    # loop; a claim on a thread held a stop for as long (a review: serve took 27 s to stop).
    import sqlite3

    c = open_backend("sqlite", request, tmp_path)
    try:
        setup(c)
        lead = new_lead(c)
        q = SqlDeliveryQueue(c.engine, c.gate)
        holder = sqlite3.connect(c.engine.url.database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        now = time.time() + 1
        args = {"worker_id": "w1", "limit": 10, "now": now, "lease_until": now + 60}
        started = time.monotonic()
        assert q.try_now("claim", exclude=(), **args) == (False, None)
        assert time.monotonic() - started < 0.5  # declined at once: a thread waits instead
        failed: list[BaseException] = []

        def waiting() -> None:
            try:
                q.claim(exclude=(), **args)
            except Exception as exc:
                failed.append(exc)

        thread = threading.Thread(target=waiting)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive() and not failed  # it waits for the lock, in slices
        told = time.monotonic()
        q.stop_waiting()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - told < 1.0
        assert "locked" in str(failed[0])
        holder.execute("ROLLBACK")
        holder.close()
        # The connections went back to the pool with SQLite's usual wait, and nothing was taken.
        with c.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        fresh = SqlDeliveryQueue(c.engine, c.gate)
        assert [j.entity_id for j in fresh.claim(exclude=(), **args)] == [lead]
    finally:
        c.close()


def test_replay_missing_queues_what_a_subscription_never_got_once_in_log_order(
    container: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Svix's "replay missing": the events of a period a subscription was disabled were
    never queued for it, and a replay re-sends only deliveries that exist; a subscription
    made after the events had no way to be backfilled from the log."""
    c = container
    sub = setup(c)
    first = new_lead(c)
    c.subscriptions.update(MID, sub["id"], {"enabled": False})
    quiet = new_lead(c, notes=1)  # object_create and object_add_notes, queued for nobody
    c.leads.perform(REQ, "notes", first, {"notes": "while off", "is_follow_up": False})
    c.subscriptions.update(MID, sub["id"], {"enabled": True})
    assert len(deliveries(c, sub["id"])) == 1
    assert c.subscriptions.replay(MID, sub["id"], 0) == 0  # nothing finished to re-send
    assert c.subscriptions.replay_missing(MID, sub["id"], 0) == (3, False)
    queued = sorted(
        (d["entity_id"], d["entity_version"], d["status"]) for d in deliveries(c, sub["id"])
    )
    expected = [(first, 1), (first, 2), (quiet, 1), (quiet, 2)]
    assert queued == sorted((lead, version, "pending") for lead, version in expected)
    assert c.subscriptions.replay_missing(MID, sub["id"], 0) == (0, False)  # once only
    # Per-lead order holds: the first lead's note waits for its create.
    q, now = queue_of(c), time.time() + 1
    assert sorted((j.entity_id, j.entity_version) for j in claim(q, now)) == sorted(
        [(first, 1), (quiet, 1)]
    )
    # A subscription made afterwards is backfilled from the log, its event types only, at
    # most the limit a call: `more` says to call again.
    late = create(c, MID, {"url": "http://127.0.0.1:9/late", "event_types": ["object_create"]})
    monkeypatch.setattr("leadhook.services.subscriptions.REPLAY_MISSING_LIMIT", 1)
    assert c.subscriptions.replay_missing(MID, late["id"], "1970-01-01T00:00:00Z") == (1, True)
    assert c.subscriptions.replay_missing(MID, late["id"], 0) == (1, False)
    made = [(d["entity_id"], d["event_type"]) for d in deliveries(c, late["id"])]
    assert sorted(made) == sorted([(first, "object_create"), (quiet, "object_create")])
    # A window: nothing before `since`, nothing from `until` on.
    other = create(c, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
    assert c.subscriptions.replay_missing(MID, other["id"], time.time() + 60) == (0, False)
    assert c.subscriptions.replay_missing(MID, other["id"], 0, 1) == (0, False)
    assert deliveries(c, other["id"]) == []
    with pytest.raises(ValidationError, match="until: must be later than since"):
        c.subscriptions.replay_missing(MID, other["id"], 10, 10)
    with pytest.raises(NotFoundError):
        c.subscriptions.replay_missing(MID, "no-such-subscription", 0)


def test_a_backfill_in_several_calls_resumes_where_the_last_one_stopped(
    container: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches (a scale review): each call of a backfill walked the log from `since` again,
    past everything the calls before it had queued (~126 calls over 1.26 million events,
    each slower than the last). The same call again now resumes about where the last one
    stopped; every event is still queued once, in order."""
    c = container
    c.tenants.create(MID)
    leads = [new_lead(c, notes=1) for _ in range(4)]  # eight events, no subscription yet
    late = create(c, MID, {"url": "http://127.0.0.1:9/late", "event_types": ["*"]})
    monkeypatch.setattr("leadhook.services.subscriptions.REPLAY_MISSING_LIMIT", 3)
    resumed: list[int | None] = []
    read = c.subscriptions._resumed  # type: ignore[attr-defined]

    def spy(window: Any) -> int | None:
        got: int | None = read(window)
        resumed.append(got)
        return got

    monkeypatch.setattr(c.subscriptions, "_resumed", spy)
    calls = [c.subscriptions.replay_missing(MID, late["id"], 0) for _ in range(3)]
    assert calls == [(3, True), (3, True), (2, False)]
    assert resumed[0] is None and resumed[1] is not None and resumed[2] is not None
    assert resumed[1] < resumed[2]  # each call resumes past the one before
    made = sorted((d["entity_id"], d["entity_version"]) for d in deliveries(c, late["id"]))
    assert made == sorted((lead, v) for lead in leads for v in (1, 2))  # each event once
    assert c.subscriptions.replay_missing(MID, late["id"], 0) == (0, False)
    assert resumed[3] is None  # a window done is forgotten


@pytest.mark.postgres
def test_replay_missing_holds_off_the_events_purge_and_a_delete_it_waited_for(
    request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """Catches (a review, PostgreSQL): the events purge deletes an event with no delivery and
    did not see the deliveries an open replay-missing was adding: they pointed at nothing,
    were never claimable and filled every claim's window. And a replay that waited for a
    delete of its subscription queued pending deliveries for the deleted subscription."""
    from leadhook.adapters.db.retention import SqlRetention

    c = open_backend("postgresql", request, tmp_path)
    assert isinstance(c, Container)
    try:
        c.tenants.create(MID)
        lead = new_lead(c, notes=2)  # no subscription yet: its events are settled at once
        late = create(c, MID, {"url": "http://127.0.0.1:9/late", "event_types": ["*"]})
        purge = SqlRetention(c.engine, c.gate)
        with c.readonly_uow() as reading:
            seqs, more = reading.deliveries.missing_events(MID, late["id"], 0, None, None, 100)
        assert len(seqs) == 3 and not more
        with c.uow() as uow:
            assert uow.deliveries.queue_missing(MID, late["id"], seqs, time.time()) == 3
            # Meanwhile, in another transaction, the purge of everything before now skips.
            done = purge.purge("events", before=time.time() + 60, limit=100, now=time.time())
            assert done == {}
            uow.commit()
        assert [d["entity_id"] for d in deliveries(c, late["id"])] == [lead] * 3
        assert len(claim(queue_of(c), time.time() + 1)) == 1  # claimable, in lead order
        # A delete committed while a replay waited on the subscription's row: nothing queued.
        other = create(c, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
        with c.uow() as deleting:
            deleting.subscriptions.delete(MID, other["id"], time.time())
            result: list[Any] = []

            def replay() -> None:
                try:
                    result.append(c.subscriptions.replay_missing(MID, other["id"], 0))
                except Exception as exc:
                    result.append(exc)

            waiting = threading.Thread(target=replay)
            waiting.start()
            time.sleep(0.5)  # it passed its own check and waits on the row lock
            deleting.commit()
        waiting.join(10)
        assert isinstance(result[0], NotFoundError), result
        with c.engine.connect() as conn:
            queued = conn.execute(
                t.deliveries.select().where(t.deliveries.c.subscription_id == other["id"])
            ).all()
        assert queued == []
    finally:
        c.close()


def test_a_name_is_looked_up_with_no_connection_held(container: Backend) -> None:
    """Catches (a review): a URL change looked its name up inside a read transaction,
    holding a pooled connection (and SQLite's snapshot) for up to seconds."""
    if not isinstance(container, Container):
        pytest.skip("the memory store has no connections")
    c = container
    sub = setup(c)
    held: list[int] = []

    def look_up(host: str) -> None:
        held.append(c.engine.pool.checkedout())  # type: ignore[attr-defined]

    c.subscriptions._check_name = look_up  # type: ignore[attr-defined]
    c.subscriptions._allow_private = False  # type: ignore[attr-defined]
    create(c, MID, {"url": "https://hooks.example/new", "event_types": ["*"]})
    c.subscriptions.update(MID, sub["id"], {"url": "https://hooks.example/moved"})
    c.subscriptions.update(MID, sub["id"], {"url": "https://hooks.example/moved"})  # kept
    assert held == [0, 0]  # the create's and the change's; a URL kept is not looked up


def test_a_retried_create_answers_its_subscription_without_looking_the_name_up(
    container: Backend,
) -> None:
    """Catches (a review): a create retried with its Idempotency-Key looked the URL's name up
    again before finding the stored answer: a name that stopped resolving to a public address
    (or a resolver that timed out) turned the retry into a 422 though the subscription had
    been made."""
    c = container
    setup(c)
    looked: list[str] = []

    def look_up(host: str) -> None:
        looked.append(host)
        if len(looked) > 1:
            raise TargetError(f"{host} resolves to a private address")

    c.subscriptions._check_name = look_up  # type: ignore[attr-defined]
    c.subscriptions._allow_private = False  # type: ignore[attr-defined]
    body = {"url": "https://hooks.example/new", "event_types": ["*"]}
    first = c.subscriptions.create(MID, body, once=("key-1", "fp-1"))
    again = c.subscriptions.create(MID, body, once=("key-1", "fp-1"))
    assert again.id == first.id and again.secret == first.secret
    assert looked == ["hooks.example"]  # the first request's lookup only
    with pytest.raises(ValidationError):  # a new request is looked up, and refused
        c.subscriptions.create(MID, body, once=("key-2", "fp-2"))
    with pytest.raises(ConflictError):  # the key with another request: 409, no lookup
        c.subscriptions.create(MID, {**body, "description": "x"}, once=("key-1", "fp-other"))
    assert looked == ["hooks.example", "hooks.example"]


def test_replay_missing_does_not_send_again_what_delivery_retention_purged(
    container: Backend,
) -> None:
    """Catches (an integrator): once retention purged a subscription's delivered deliveries,
    replay-missing found their events "missing" and sent the whole log again."""
    if not isinstance(container, Container):
        pytest.skip("the memory store purges nothing")
    from leadhook.adapters.db.retention import SqlRetention

    c = container
    sub = setup(c)
    lead = new_lead(c, notes=1)
    q, now = queue_of(c), time.time() + 1
    for _ in range(2):  # its create, then its note: per-lead order
        (job,) = claim(q, now)
        q.record(worker_id="w1", verdicts=[outcome(job, "delivered")], now=now)
    done = SqlRetention(c.engine, c.gate).purge(
        "deliveries", before=time.time() + 5, limit=100, now=time.time()
    )
    assert done["deliveries"] == 2 and deliveries(c, sub["id"]) == []
    assert c.subscriptions.replay_missing(MID, sub["id"], 0) == (0, False)
    # A subscription made after those events never had them: its backfill still sends them.
    time.sleep(1.1)  # event times are whole seconds
    late = create(c, MID, {"url": "http://127.0.0.1:9/late", "event_types": ["*"]})
    assert c.subscriptions.replay_missing(MID, late["id"], 0) == (2, False)
    assert {d["entity_id"] for d in deliveries(c, late["id"])} == {lead}
