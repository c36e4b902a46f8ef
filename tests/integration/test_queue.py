"""The SQL delivery queue on SQLite and PostgreSQL: lease, order, record, release."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy import select

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import WriteGate, make_engine
from leadhook.adapters.db.queue import SqlDeliveryQueue, claim_cap
from leadhook.bootstrap import Container
from leadhook.domain.operator import Operator
from leadhook.services.delivery import LANE_DEPTH, Disable, Job, Outcome
from leadhook.services.leads import Request
from leadhook.services.ports import Attempt, DeliveryStatus

MID = "acme"
REQ = Request(mid=MID, operator=Operator())


def setup(c: Container, **sub: Any) -> dict[str, Any]:
    c.tenants.create(MID)
    return c.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/hook", "event_types": ["*"], **sub}
    )


def new_lead(c: Container, notes: int = 0) -> str:
    _, body = c.leads.create(REQ, {"fields": {}})
    lead_id: str = json.loads(body)["lead"]["id"]
    for i in range(notes):
        c.leads.perform(REQ, "notes", lead_id, {"notes": f"note {i}", "is_follow_up": False})
    return lead_id


def queue_of(c: Container) -> SqlDeliveryQueue:
    return SqlDeliveryQueue(c.engine, c.gate)


def claim(q: SqlDeliveryQueue, now: float, *, worker: str = "w1", **kw: Any) -> list[Job]:
    args: dict[str, Any] = {"limit": 100, "lease_until": now + 60, "exclude": (), **kw}
    return q.claim(worker_id=worker, now=now, **args)


def outcome(
    job: Job,
    status: DeliveryStatus,
    *,
    code: int | None = 200,
    at: float | None = None,
    disable: Disable | None = None,
) -> Outcome:
    error = None if status == "delivered" else f"HTTP {code}"
    attempt = Attempt(time.time(), code, 12.5, error, "x" * 10)
    return Outcome(job, attempt, status, at, error, disable)


def sub_row(c: Container, sub_id: str) -> Any:
    with c.engine.connect() as conn:
        return conn.execute(select(t.subscriptions).where(t.subscriptions.c.id == sub_id)).one()


def test_claim_returns_all_a_send_needs_and_leases_it(container: Container) -> None:
    sub = setup(container)
    leads = {new_lead(container) for _ in range(3)}
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    assert {j.entity_id for j in jobs} == leads and len(jobs) == 3
    with container.engine.connect() as conn:
        payloads = dict(conn.execute(select(t.events.c.event_id, t.events.c.payload)).all())
    for job in jobs:
        assert job.body == payloads[job.event_id].encode()  # the stored bytes, exactly
        assert (job.url, job.secret, job.subscription_id) == (sub["url"], sub["secret"], sub["id"])
        assert job.max_in_flight == sub["max_in_flight"] and job.attempt_count == 0
        assert job.lease_until == now + 60 and job.mid == MID
    assert claim(q, now, worker="w2") == []  # leased
    again = claim(q, now + 61, worker="w2")  # the lease ran out: anyone may take it
    assert sorted(j.seq for j in again) == sorted(j.seq for j in jobs)


def test_a_lead_is_claimed_one_event_at_a_time_in_version_order(container: Container) -> None:
    setup(container)
    lead = new_lead(container, notes=2)  # versions 1, 2, 3
    q, now = queue_of(container), time.time() + 1
    (v1,) = claim(q, now)
    assert v1.entity_version == 1
    q.record(worker_id="w1", outcomes=[outcome(v1, "failed", code=500, at=now + 5)], now=now)
    assert claim(q, now) == []  # v1 waits for its retry and v2 waits for v1
    (v1b,) = claim(q, now + 6)
    assert (v1b.seq, v1b.attempt_count) == (v1.seq, 1)
    q.record(worker_id="w1", outcomes=[outcome(v1b, "dead", code=500)], now=now)
    (v2,) = claim(q, now + 6)  # dead counts as finished: the lead moves on
    assert (v2.entity_id, v2.entity_version) == (lead, 2)
    q.record(worker_id="w1", outcomes=[outcome(v2, "delivered")], now=now)
    (v3,) = claim(q, now + 6)
    assert v3.entity_version == 3


def test_a_claim_takes_a_bounded_share_of_one_subscription(container: Container) -> None:
    narrow = setup(container, max_in_flight=1)
    wide = container.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/b", "event_types": ["*"], "max_in_flight": 50}
    )
    slow = container.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/c", "event_types": ["*"], "rate_limit_per_s": 0.5}
    )
    for _ in range(10):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    per_sub = {s["id"]: sum(j.subscription_id == s["id"] for j in jobs) for s in (narrow, wide)}
    assert per_sub == {narrow["id"]: LANE_DEPTH, wide["id"]: 10}
    assert sum(j.subscription_id == slow["id"] for j in jobs) == 1
    assert claim_cap(1, None) == LANE_DEPTH and claim_cap(10, 3.7) == 3 and claim_cap(2, 50) == 2
    rest = claim(q, now, exclude=[narrow["id"]])
    assert rest and all(j.subscription_id == slow["id"] for j in rest)


def test_disabled_deleted_and_not_yet_due_deliveries_are_not_claimed(
    container: Container,
) -> None:
    sub = setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    assert claim(q, time.time() - 60) == []  # not due yet
    container.subscriptions.update(MID, sub["id"], {"enabled": False})
    assert claim(q, now) == []
    container.subscriptions.update(MID, sub["id"], {"enabled": True})
    (job,) = claim(q, now)
    q.release(worker_id="w1", seqs=[job.seq])
    container.subscriptions.delete(MID, sub["id"])
    assert claim(q, now) == []
    assert container.subscriptions.delivery(MID, job.id)["status"] == "dead"


def test_record_stores_attempts_states_and_the_failure_streak(container: Container) -> None:
    sub = setup(container, max_in_flight=10)
    for _ in range(3):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    a, b, c = claim(q, now)
    q.record(
        worker_id="w1",
        outcomes=[
            outcome(a, "failed", code=503, at=now + 30),
            outcome(b, "dead", code=None),
            outcome(c, "failed", code=500, at=now + 60),
        ],
        now=now,
    )
    assert sub_row(container, sub["id"]).first_failure_at == now
    page = container.subscriptions.deliveries(MID, sub["id"], None, None, 10)["data"]
    by_id = {d["id"]: d for d in page}
    assert by_id[a.id]["status"] == "failed" and by_id[a.id]["next_attempt_at"] == now + 30
    assert by_id[a.id]["attempt_count"] == 1 and by_id[a.id]["last_error"] == "HTTP 503"
    (attempt,) = by_id[a.id]["attempts"]
    assert attempt["status_code"] == 503 and attempt["latency_ms"] == 12.5
    assert by_id[b.id]["status"] == "dead" and by_id[b.id]["next_attempt_at"] is None
    (a2,) = [j for j in claim(q, now + 31) if j.seq == a.seq]
    q.record(worker_id="w1", outcomes=[outcome(a2, "delivered")], now=now + 31)
    assert sub_row(container, sub["id"]).first_failure_at is None  # a success ends the streak
    done = container.subscriptions.delivery(MID, a.id)
    assert done["status"] == "delivered" and len(done["attempts"]) == 2
    assert done["attempts"][0]["attempted_at"] <= done["attempts"][1]["attempted_at"]


def test_a_late_record_does_not_overwrite_the_next_lease_holder(container: Container) -> None:
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (job,) = claim(q, now, lease_until=now + 1)
    (taken,) = claim(q, now + 2, worker="w2")
    q.record(worker_id="w1", outcomes=[outcome(job, "delivered")], now=now + 3)
    state = container.subscriptions.delivery(MID, job.id)
    assert state["status"] == "pending" and len(state["attempts"]) == 1
    q.record(worker_id="w2", outcomes=[outcome(taken, "delivered")], now=now + 3)
    assert container.subscriptions.delivery(MID, job.id)["status"] == "delivered"


def test_410_disables_at_once_and_auto_disable_respects_a_recent_success(
    container: Container,
) -> None:
    gone = setup(container)
    failing = container.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/f", "event_types": ["*"]}
    )
    new_lead(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    g = [j for j in jobs if j.subscription_id == gone["id"]]
    f = [j for j in jobs if j.subscription_id == failing["id"]]
    q.record(
        worker_id="w1",
        outcomes=[
            outcome(g[0], "dead", code=410, disable=Disable("endpoint answered HTTP 410 Gone")),
            # The streak starts now: "failing since before now - 10" is not true yet.
            outcome(f[0], "failed", code=500, at=now + 1, disable=Disable("auto", now - 10)),
        ],
        now=now,
    )
    assert container.subscriptions.get(MID, gone["id"])["disabled_reason"] == (
        "endpoint answered HTTP 410 Gone"
    )
    assert container.subscriptions.get(MID, gone["id"])["enabled"] is False
    assert container.subscriptions.get(MID, failing["id"])["enabled"] is True
    q.record(
        worker_id="w1",
        outcomes=[outcome(f[1], "failed", code=500, at=now + 1, disable=Disable("auto", now))],
        now=now + 1,
    )
    shown = container.subscriptions.get(MID, failing["id"])
    assert shown["enabled"] is False and shown["disabled_reason"] == "auto"
    assert shown["failing_since"] == now


def test_released_deliveries_are_claimable_at_once(container: Container) -> None:
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    (job,) = claim(q, now)
    q.release(worker_id="w2", seqs=[job.seq])  # not its lease: nothing happens
    assert claim(q, now) == []
    q.release(worker_id="w1", seqs=[job.seq])
    assert [j.seq for j in claim(q, now, worker="w3")] == [job.seq]


def test_concurrent_workers_never_claim_the_same_delivery(container: Container) -> None:
    setup(container, max_in_flight=100)
    container.subscriptions.create(
        MID, {"url": "http://127.0.0.1:9/b", "event_types": ["*"], "max_in_flight": 100}
    )
    container.leads.create_many(REQ, [{"fields": {}} for _ in range(300)])
    url = container.settings.database_url
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        engine = make_engine(url)  # a process of its own would have its own engine and gate
        q = SqlDeliveryQueue(engine, WriteGate(engine))
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
            engine.dispose()
            claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    everything = [seq for seqs in claimed.values() for seq in seqs]
    assert len(everything) == len(set(everything)) == 600
