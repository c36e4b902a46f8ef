"""The delivery engine's SQL on SQLite and PostgreSQL: circuit breaker, lease renewal, crash
recovery and retention."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from test_queue import MID, REQ, claim, create, deliveries, new_lead, outcome, queue_of, setup

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.retention import SqlRetention
from leadhook.api import bodies
from leadhook.bootstrap import Container
from leadhook.domain import circuit
from leadhook.domain.attempts import NO_RESPONSE, TURNED_AWAY
from leadhook.domain.errors import BadRequestError, NotFoundError
from leadhook.domain.times import rfc3339
from leadhook.services.ports import Attempt, Job, Verdict
from leadhook.services.retention import Retention, RetentionPolicy


def silent(job: Job, at: float) -> Verdict:
    """A failed attempt that got no answer (a timeout)."""
    attempt = Attempt(at, None, 2000.0, "timeout after 2s", "")
    return Verdict(job, attempt, "failed", at + 0.001, "timeout after 2s")


def shown(c: Container, sub_id: str) -> dict[str, Any]:
    return bodies.circuit(c.subscriptions.get(MID, sub_id).circuit, c.clock()).model_dump()


def test_a_silent_endpoint_opens_its_circuit_then_one_probe_closes_or_reopens_it(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leadhook.queue")
    sub = setup(container, max_in_flight=10)
    other = create(container, MID, {"url": "http://127.0.0.1:9/other", "event_types": ["*"]})
    for _ in range(8):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1

    def mine(jobs: list[Job]) -> list[Job]:
        return [j for j in jobs if j.subscription_id == sub["id"]]

    claimed = claim(q, now)
    jobs = [j for j in claimed if j.subscription_id == sub["id"]]
    q.release(
        worker_id="w1", seqs=[j.seq for j in claimed if j.subscription_id == other["id"]], now=now
    )
    assert len(jobs) == 8 and shown(container, sub["id"])["state"] == "closed"
    q.record(worker_id="w1", verdicts=[silent(j, now) for j in jobs[:4]], now=now)
    assert shown(container, sub["id"]) == {
        "state": "closed",
        "opened_at": None,
        "retry_at": None,
        "consecutive_failures": 4,
    }
    q.record(worker_id="w1", verdicts=[silent(jobs[4], now)], now=now)
    opened = shown(container, sub["id"])
    assert opened["state"] == "open" and opened["opened_at"] == rfc3339(now)
    assert opened["retry_at"] == rfc3339(now + circuit.BASE_COOLDOWN)
    # Open: its due deliveries are claimed to be turned away (not sent); the other
    # subscription's are claimed to be sent, as before.
    later = now + 1
    got = claim(q, later, lease_until=later + 1)
    away = mine(got)
    assert [j.seq for j in away] == [j.seq for j in jobs[:5]]  # the failed ones, due again
    assert {j.circuit_open_until for j in away} == {now + circuit.BASE_COOLDOWN}
    assert [j.circuit_open_until for j in got if j not in away] == [None] * (len(got) - 5)
    assert {j.subscription_id for j in got} == {sub["id"], other["id"]}
    q.release(worker_id="w1", seqs=[j.seq for j in got], now=later)
    # Stragglers (started before it opened) count, but do not push the retry further.
    q.record(worker_id="w1", verdicts=[silent(j, now - 0.5) for j in jobs[5:7]], now=later)
    assert shown(container, sub["id"])["retry_at"] == rfc3339(now + circuit.BASE_COOLDOWN)
    assert shown(container, sub["id"])["consecutive_failures"] == 7
    # Half open: one probe, to one worker; nothing more while it is out.
    probe_time = now + circuit.BASE_COOLDOWN + 0.5
    assert shown(container, sub["id"])["state"] == "open"
    (probe,) = mine(claim(q, probe_time, worker="w2"))
    assert probe.subscription_id == sub["id"]
    assert mine(claim(q, probe_time, worker="w3")) == []
    with container.engine.connect() as conn:
        probe_until = conn.execute(
            select(t.subscriptions.c.circuit_probe_until).where(t.subscriptions.c.id == sub["id"])
        ).scalar()
    assert probe_until == probe_time + 60  # reserved for the probe's lease
    # No answer again: open for twice as long.
    q.record(worker_id="w2", verdicts=[silent(probe, probe_time)], now=probe_time + 2)
    reopened = shown(container, sub["id"])
    assert reopened["state"] == "open" and reopened["opened_at"] == rfc3339(probe_time + 2)
    assert reopened["retry_at"] == rfc3339(probe_time + 2 + 2 * circuit.BASE_COOLDOWN)
    # The next probe gets an answer (even an error): closed, the count starts again.
    second = probe_time + 2 + 2 * circuit.BASE_COOLDOWN + 0.5
    (probe2,) = mine(claim(q, second, worker="w2"))
    q.record(worker_id="w2", verdicts=[outcome(probe2, "failed", code=500, at=second)], now=second)
    assert shown(container, sub["id"])["state"] == "closed"
    assert shown(container, sub["id"])["consecutive_failures"] == 0
    # Its close is said once, as its openings were (the operator saw only the openings).
    said = [r for r in caplog.records if r.name == "leadhook.queue"]
    closed = [r for r in said if r.getMessage().startswith("circuit closed")]
    assert [(r.levelname, r.subscription_id) for r in closed] == [("INFO", sub["id"])]  # type: ignore[attr-defined]
    assert closed[0].open_for_s == round(second - (probe_time + 2), 1)  # type: ignore[attr-defined]
    assert len([r for r in said if r.getMessage().startswith("circuit opened")]) == 2
    # Nothing was lost on the way: every delivery is still there, unfinished.
    statuses = [d["status"] for d in deliveries(container, sub["id"])]
    assert len(statuses) == 8 and set(statuses) <= {"pending", "failed"}
    # Counted as it was recorded, both workers' summed: nine failed attempts, two openings.
    assert container.delivery_outcomes() == {"failed": 9, "circuit_opened": 2}


def test_an_open_circuit_turns_away_what_comes_due_and_its_close_makes_that_due(
    container: Container,
) -> None:
    """Catches: an open circuit holding deliveries without spending their attempts (a dead
    endpoint's backlog then outlived the retry schedule by hours), a turned-away attempt
    counted as the endpoint's silence (it would reopen the circuit for ever longer), and what
    was turned away waiting for its next retry once the endpoint answers again."""
    sub = setup(container, max_in_flight=10)
    for _ in range(7):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now, lease_until=now + 2)
    assert len(jobs) == 7
    q.record(worker_id="w1", verdicts=[silent(j, now) for j in jobs[:5]], now=now)
    retry_at = now + circuit.BASE_COOLDOWN
    assert shown(container, sub["id"])["retry_at"] == rfc3339(retry_at)
    # The five failed ones come due while it is open: claimed with the circuit's end, to be
    # turned away. The dispatcher records each as an attempt not sent, on the schedule.
    later = now + 1
    away = claim(q, later)
    assert sorted(j.seq for j in away) == sorted(j.seq for j in jobs[:5])
    assert {j.circuit_open_until for j in away} == {retry_at}
    turned = [
        Verdict(
            j,
            Attempt(later, None, 0.0, TURNED_AWAY, ""),
            "failed",
            later + 100,
            f"{TURNED_AWAY}; retry 2 in 100s",
            sent=False,
        )
        for j in away
    ]
    q.record(worker_id="w1", verdicts=turned, now=later)
    # Another worker's straggler, started after the circuit opened but claimed before: it
    # counts, but it was not the probe, so the circuit keeps its wait. Its next retry is far.
    straggler = jobs[5]
    error = f"{NO_RESPONSE}: timeout after 2s"
    attempt = Attempt(now + 0.5, None, 2000.0, "timeout after 2s", "")
    late = Verdict(straggler, attempt, "failed", now + 1000, f"{error}; retry 1 in 999s")
    q.record(worker_id="w1", verdicts=[late], now=later)
    assert shown(container, sub["id"])["consecutive_failures"] == 6
    # Not the endpoint's silence: the circuit is as it was.
    assert shown(container, sub["id"]) == {
        "state": "open",
        "opened_at": rfc3339(now),
        "retry_at": rfc3339(retry_at),
        "consecutive_failures": 6,
    }
    rows = {d["id"]: d for d in deliveries(container, sub["id"])}
    for j in away:
        assert rows[j.id]["attempt_count"] == 2 and rows[j.id]["status"] == "failed"
        assert rows[j.id]["last_error"].startswith(TURNED_AWAY)
    # Half open: the probe is the one whose lease ran out; it gets an answer.
    probe_time = retry_at + 0.5
    (probe,) = claim(q, probe_time)
    assert probe.seq == jobs[6].seq and probe.probe and probe.circuit_open_until is None
    q.record(worker_id="w1", verdicts=[outcome(probe, "delivered")], now=probe_time)
    assert shown(container, sub["id"])["state"] == "closed"
    # Closed: what got no answer, turned away or not, is due at once, not at its retry.
    again = claim(q, probe_time + 0.1)
    assert {j.seq for j in again} == {j.seq for j in (*away, straggler)}
    assert not any(j.circuit_open_until or j.probe for j in again)


def test_an_answer_leaves_failures_on_schedule_while_the_circuit_never_opened(
    container: Container,
) -> None:
    """Catches: any answer from an endpoint with one unanswered attempt behind it (its
    circuit still closed) making that delivery due at once: a payload the endpoint times out
    on was retried after every answered delivery, its attempts spent in minutes."""
    sub = setup(container, max_in_flight=10)
    new_lead(container)
    new_lead(container)
    q, now = queue_of(container), time.time() + 1
    timed_out, answered = claim(q, now)
    attempt = Attempt(now, None, 2000.0, "timeout after 2s", "")
    error = f"{NO_RESPONSE}: timeout after 2s; retry 1 in 3600s"
    late = Verdict(timed_out, attempt, "failed", now + 3600, error)
    q.record(worker_id="w1", verdicts=[late], now=now)
    assert shown(container, sub["id"])["consecutive_failures"] == 1
    assert shown(container, sub["id"])["state"] == "closed"
    q.record(worker_id="w1", verdicts=[outcome(answered, "delivered")], now=now + 1)
    assert shown(container, sub["id"])["consecutive_failures"] == 0
    assert claim(q, now + 2) == []  # the timed-out one keeps its retry an hour away
    assert claim(q, now + 3601)[0].seq == timed_out.seq


def test_a_reserved_probe_with_nothing_due_is_handed_back(container: Container) -> None:
    sub = setup(container)
    with container.engine.begin() as conn:
        conn.execute(
            update(t.subscriptions)
            .where(t.subscriptions.c.id == sub["id"])
            .values(circuit_failures=5, circuit_opened_at=1.0, circuit_retry_at=2.0)
        )
    q, now = queue_of(container), time.time()
    assert claim(q, now) == []  # no delivery: the probe is not kept reserved
    with container.engine.connect() as conn:
        probe = conn.execute(
            select(t.subscriptions.c.circuit_probe_until).where(t.subscriptions.c.id == sub["id"])
        ).scalar()
    assert probe is None
    new_lead(container)
    assert len(claim(q, now + 1)) == 1


def test_renew_extends_only_this_workers_leases(container: Container) -> None:
    setup(container, max_in_flight=10)
    for _ in range(3):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now, lease_until=now + 2)
    seqs = [j.seq for j in jobs]
    assert q.renew(worker_id="w2", seqs=seqs, lease_until=now + 30) == set()
    assert q.renew(worker_id="w1", seqs=seqs, lease_until=now + 30) == set(seqs)
    assert claim(q, now + 10, worker="w2") == []  # renewed: still held at now + 10
    q.record(worker_id="w1", verdicts=[outcome(jobs[0], "delivered")], now=now)
    assert q.renew(worker_id="w1", seqs=seqs, lease_until=now + 60) == set(seqs[1:])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_starting_worker_frees_the_leases_of_dead_local_workers(container: Container) -> None:
    setup(container, max_in_flight=10)
    for _ in range(3):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    host = socket.gethostname()[:32]
    dead, alive = f"{host}:{_dead_pid()}:dead", f"{host}:{os.getppid()}:alive"
    a, b, c = claim(q, now, worker=dead)
    d = t.deliveries.c
    with container.engine.begin() as conn:
        conn.execute(update(t.deliveries).where(d.seq == b.seq).values(locked_by=alive))
        conn.execute(update(t.deliveries).where(d.seq == c.seq).values(locked_by="elsewhere:1:x"))
    freed = q.recover(worker_id=f"{host}:1:me", now=now)
    if container.engine.dialect.name == "sqlite":
        assert freed == 1
        assert [j.seq for j in claim(q, now, worker="w2")] == [a.seq]
    else:  # other hosts' workers cannot be checked: their leases expire on their own
        assert freed == 0 and claim(q, now, worker="w2") == []


# ---- retention -------------------------------------------------------------------------------

DAY = 86400.0


def _age(c: Container, days: float) -> None:
    """Make every row so far `days` old."""
    then = time.time() - days * DAY
    with c.engine.begin() as conn:
        conn.execute(update(t.events).values(create_time=int(then)))
        conn.execute(update(t.deliveries).values(created_at=then, updated_at=then))
        conn.execute(update(t.idempotency_keys).values(created_at=then))


def _count(c: Container, table: Any) -> int:
    with c.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _finish_all(c: Container, status: str = "delivered") -> None:
    q, now = queue_of(c), time.time() + 1
    while jobs := claim(q, now):
        q.record(worker_id="w1", verdicts=[outcome(j, status) for j in jobs], now=now)  # type: ignore[arg-type]


def test_retention_purges_in_batches_and_counts_what_it_purged(container: Container) -> None:
    setup(container, max_in_flight=50)
    for i in range(5):
        container.leads.create(replace(REQ, idempotency_key=f"k{i}"), {"fields": {}})
    _finish_all(container)
    _age(container, 40)
    for i in range(2):  # recent: kept
        container.leads.create(replace(REQ, idempotency_key=f"new{i}"), {"fields": {}})
    assert _count(container, t.idempotency_keys) == 7
    policy = RetentionPolicy(batch=2, event_retention=None)
    retention = Retention(SqlRetention(container.engine, container.gate), policy, time.time)
    purged = retention.purge_all()
    assert purged == {"idempotency_keys": 5, "deliveries": 5, "delivery_attempts": 5}
    assert _count(container, t.idempotency_keys) == 2
    assert _count(container, t.deliveries) == 2 and _count(container, t.delivery_attempts) == 0
    assert _count(container, t.events) == 7  # the log is kept by default
    assert container.purge_counts() == purged
    assert retention.purge_all() == {}  # nothing more
    # Cumulative across runs.
    _finish_all(container)
    _age(container, 40)
    retention.purge_all()
    assert container.purge_counts()["deliveries"] == 7


def test_event_retention_keeps_events_with_unfinished_deliveries(container: Container) -> None:
    setup(container, max_in_flight=50)
    leads = [new_lead(container) for _ in range(4)]
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    q.record(
        worker_id="w1",
        verdicts=[
            outcome(jobs[0], "delivered"),
            outcome(jobs[1], "dead", code=500),
            outcome(jobs[2], "failed", code=500, at=now + 3600),
        ],
        now=now,
    )  # jobs[3] stays pending (leased)
    _age(container, 400)
    policy = RetentionPolicy(event_retention=365 * DAY, delivery_retention=None)
    retention = Retention(SqlRetention(container.engine, container.gate), policy, time.time)
    purged = retention.purge_all()
    assert purged == {"events": 2, "deliveries": 2, "delivery_attempts": 2}
    with container.engine.connect() as conn:
        kept = set(conn.execute(select(t.events.c.entity_id)).scalars())
    assert kept == {jobs[2].entity_id, jobs[3].entity_id} and kept <= set(leads)
    assert _count(container, t.deliveries) == 2


def test_purge_counts_reach_metrics(container: Container) -> None:
    from fastapi.testclient import TestClient

    from leadhook.api.app import create_app

    with container.engine.begin() as conn:
        conn.execute(
            insert(t.purge_counts).values(table_name="deliveries", rows=12, last_purge_at=1.0)
        )
    with TestClient(create_app(container)) as client:
        text = client.get("/metrics").text
    assert 'leadhook_retention_purged_rows_total{table="deliveries"} 12.0' in text
    assert 'leadhook_retention_purged_rows_total{table="events"} 0.0' in text
    if container.engine.dialect.name == "sqlite":
        # A scrape reads: it does not wait for the write lock another connection holds.
        import sqlite3

        path = container.engine.url.database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            assert container.purge_counts()["deliveries"] == 12
            assert time.monotonic() - started < 1.0
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_delivery_outcomes_are_counted_as_recorded_and_reach_metrics(
    container: Container,
) -> None:
    from fastapi.testclient import TestClient

    from leadhook.api.app import create_app

    setup(container)
    for _ in range(4):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    turned = Verdict(jobs[3], Attempt(now, None, 0.0, TURNED_AWAY, ""), "failed", now + 5, None)
    verdicts = [
        outcome(jobs[0], "delivered"),
        outcome(jobs[1], "failed", code=500, at=now + 5),
        outcome(jobs[2], "dead", code=500),
        replace(turned, sent=False),
    ]
    q.record(worker_id="w1", verdicts=verdicts[:3], now=now)  # w1 holds their leases
    q.record(worker_id="another-worker", verdicts=verdicts[3:], now=now)
    counts = {"delivered": 1, "failed": 2, "dead": 1, "turned_away": 1}
    assert container.delivery_outcomes() == counts
    with TestClient(create_app(container)) as client:
        text = client.get("/metrics").text
    assert 'leadhook_delivery_attempts_total{result="delivered"} 1.0' in text
    assert 'leadhook_delivery_attempts_total{result="failed"} 2.0' in text
    assert 'leadhook_delivery_attempts_total{result="turned_away"} 1.0' in text
    assert "leadhook_deliveries_dead_total 1.0" in text
    assert "leadhook_circuit_openings_total 0.0" in text
    q.record(worker_id="w1", verdicts=[outcome(jobs[1], "failed", code=500)], now=now)
    assert container.delivery_outcomes()["failed"] == 3
    with container.engine.connect() as conn:  # a row per outcome and worker slot, not a record
        rows = conn.execute(select(func.count()).select_from(t.delivery_outcomes)).scalar()
    assert rows == 4  # w1's delivered, failed and dead; the other worker's turned_away


def test_event_retention_walks_past_old_unsettled_events_a_window_at_a_time(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches: the purge looking for settled events in one statement that walked every
    unsettled event past the horizon, under the write lock, every round; and a walk that
    never got past a block of old unsettled events to the settled ones behind it."""
    from leadhook.adapters.db import retention as sql_retention

    monkeypatch.setattr(sql_retention, "EVENT_WINDOW", 4)
    monkeypatch.setattr(sql_retention, "EVENT_BUDGET", 8)
    setup(container, max_in_flight=50)
    for _ in range(20):  # older: their deliveries stay pending (the endpoint is failing)
        new_lead(container)
    _age(container, 400)
    old_events = _count(container, t.events)
    for _ in range(6):  # newer, and delivered
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    newer = [j for j in claim(q, now) if j.seq > old_events]
    q.record(worker_id="w1", verdicts=[outcome(j, "delivered") for j in newer], now=now)
    with container.engine.begin() as conn:
        conn.execute(
            update(t.events)
            .values(create_time=int(time.time() - 300 * DAY))
            .where(t.events.c.seq > old_events)
        )
    store = SqlRetention(container.engine, container.gate)
    seen = []
    for _ in range(5):  # each call examines at most 8 events, going on from the last
        seen.append(store.purge("events", before=time.time() - 200 * DAY, limit=100, now=1.0))
    assert sum(d.get("events", 0) for d in seen) == len(newer) == 6
    assert seen[0].get("events", 0) == 0  # the first 8 examined were all unsettled
    assert _count(container, t.events) == 20  # the unsettled ones are kept


def test_event_retention_walks_the_log_in_order_and_stops_at_the_horizon(
    container: Container,
) -> None:
    """The purge reads the log by `seq` (no index of `create_time`, migration 0006): it stops at
    the first event inside the horizon, and an older event logged after it is purged by a later
    walk, once the event ahead of it is past the horizon too. Catches a walk that skips young
    events and reads on (the whole log each round), and one that never comes back for the rest."""
    old, young = int(time.time() - 400 * DAY), int(time.time())
    seqs = _three_events_stamped(container, (old, young, old))
    store = SqlRetention(container.engine, container.gate)
    horizon = time.time() - 365 * DAY
    assert store.purge("events", before=horizon, limit=100, now=time.time())["events"] == 1
    assert store.purge("events", before=horizon, limit=100, now=time.time())["events"] == 0
    with container.engine.connect() as conn:
        left = list(conn.execute(select(t.events.c.seq).order_by(t.events.c.seq)).scalars())
    assert left == seqs[1:]
    with container.engine.begin() as conn:  # the event ahead grows old too
        conn.execute(update(t.events).values(create_time=old).where(t.events.c.seq == seqs[1]))
    assert store.purge("events", before=horizon, limit=100, now=time.time())["events"] == 2
    assert _count(container, t.events) == 0


def test_event_retention_passes_over_an_event_stamped_in_the_future(container: Container) -> None:
    """An event stamped far ahead (a writer whose clock ran ahead) is kept, and does not end the
    walk as a young event does: the old events logged after it are purged. Catches a walk that
    stops at it, which kept every event logged after it until that date."""
    old, ahead = int(time.time() - 400 * DAY), int(time.time() + 3650 * DAY)
    seqs = _three_events_stamped(container, (old, ahead, old))
    store = SqlRetention(container.engine, container.gate)
    horizon = time.time() - 365 * DAY
    assert store.purge("events", before=horizon, limit=100, now=time.time())["events"] == 2
    with container.engine.connect() as conn:
        left = list(conn.execute(select(t.events.c.seq)).scalars())
    assert left == [seqs[1]]


def _three_events_stamped(c: Container, stamps: tuple[int, int, int]) -> list[int]:
    """Three leads' creates, delivered, their events stamped `stamps` in log order: the seqs."""
    setup(c, max_in_flight=50)
    for _ in range(3):
        new_lead(c)
    _finish_all(c)
    with c.engine.begin() as conn:
        seqs = list(conn.execute(select(t.events.c.seq).order_by(t.events.c.seq)).scalars())
        for seq, when in zip(seqs, stamps, strict=True):
            conn.execute(update(t.events).values(create_time=when).where(t.events.c.seq == seq))
    return seqs


def test_the_log_read_after_an_event_retention_purged_goes_on_from_where_it_was(
    container: Container,
) -> None:
    """Catches: `GET /v1/events?after=` naming an event retention purged answered 400, so a
    consumer that had read up to it (or whose `next_cursor` named it) could not go on."""
    import json

    from leadhook.bootstrap import build

    keep = 1.0
    policy = RetentionPolicy(event_retention=keep, delivery_retention=None)
    c = build(replace(container.settings, retention=policy), run_migrations=False)
    try:
        container.tenants.create(MID, MID)

        def log(after: str | None) -> list[str]:
            page = c.events.list(MID, after=after, event_type=None, entity_id=None, limit=100)
            return [e["event_id"] for e in json.loads(page)["data"]]

        new_lead(container, notes=1)  # no subscription: its events are settled at once
        read_up_to = log(None)[-1]
        time.sleep(keep + 1.1)  # retention compares whole seconds
        later = new_lead(container)
        purged = Retention(SqlRetention(c.engine, c.gate), policy, time.time).purge_all()
        assert purged.get("events") == 2, purged
        with pytest.raises(NotFoundError):
            container.events.get(MID, read_up_to)
        (created,) = log(read_up_to)
        assert json.loads(container.events.get(MID, created))["extra_data"]["entity_id"] == later
        # A process without the retention setting (the API, when only the worker has it)
        # resumes alike: the purge kept its horizon in the database (an operator's review).
        assert container.settings.retention.event_retention is None
        again = container.events.list(
            MID, after=read_up_to, event_type=None, entity_id=None, limit=9
        )
        assert [e["event_id"] for e in json.loads(again)["data"]] == [created]
        with pytest.raises(BadRequestError):  # an id that was never this tenant's: still 400
            log("01" + "Z" * 24)
    finally:
        c.close()


def test_deleting_a_subscription_while_a_worker_records_for_it_does_not_deadlock(
    container: Container,
) -> None:
    """Catches: the delete locked the subscription's row, then its deliveries; a worker's
    record locks the deliveries it holds, then their subscription's row (its failure streak):
    on PostgreSQL the two deadlocked and one was aborted (a review, under load)."""
    import threading

    sub = setup(container)
    for _ in range(3):
        new_lead(container)
    q, now = queue_of(container), time.time() + 1
    jobs = claim(q, now)
    assert len(jobs) == 3
    named, paused = q._named, threading.Event()  # type: ignore[union-attr]

    def slow(conn: Any, stmt: Any, params: Any) -> Any:
        if stmt is q._streak_start and not paused.is_set():  # type: ignore[union-attr]
            paused.set()  # the deliveries are this record's now; the delete comes here
            time.sleep(1.0)
        return named(conn, stmt, params)

    q._named = slow  # type: ignore[union-attr,method-assign]
    errors: list[BaseException] = []

    def record() -> None:
        try:
            verdicts = [outcome(j, "failed", code=500, at=now + 60) for j in jobs]
            q.record(worker_id="w1", verdicts=verdicts, now=now)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=record)
    worker.start()
    assert paused.wait(10)
    container.subscriptions.delete(MID, sub["id"])  # waits for the record, then ends them
    worker.join(15)
    assert errors == [] and not worker.is_alive()
    with container.engine.connect() as conn:
        ended = conn.execute(select(t.deliveries.c.status)).scalars().all()
    assert sorted(ended) == ["dead"] * 3  # recorded failed, then ended by the delete
