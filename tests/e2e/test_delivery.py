"""API → outbox → dispatcher → a receiver on 127.0.0.1 that verifies every signature."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from delivery_support import (
    ON_EVERY_BACKEND,
    Receiver,
    Stack,
    e2e_settings,
    make_stack,
    wait_for,
)
from sqlalchemy import func, select

from leadhook.adapters.db import tables as t
from leadhook.domain import circuit
from leadhook.domain.attempts import TURNED_AWAY
from leadhook.domain.retry import RetryPolicy
from leadhook.domain.times import parse_rfc3339
from leadhook.settings import Settings

WORKER = Path(__file__).with_name("_worker_main.py")


def test_deliveries_are_signed_and_carry_the_stored_event(stack: Stack) -> None:
    sub = stack.subscribe()
    assert (
        sub["secret"].startswith("whsec_")
        and "secret" not in stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()
    )
    stack.dispatch()
    lead = stack.lead(notes=1)
    wait_for(lambda: len(stack.receiver.acked()) == 2, what="2 deliveries")
    for rec in stack.receiver.acked():
        assert rec.verified_with == [sub["secret"]]
        stored = stack.call("GET", f"/v1/events/{rec.msg_id}")
        assert rec.body == stored.content  # byte for byte what the log keeps
        assert rec.event["event_id"] == rec.msg_id
        assert rec.headers["content-type"] == "application/json"
        assert rec.headers["user-agent"].startswith("leadhook/")
        assert rec.headers["webhook-signature"].startswith("v1,")
        assert abs(int(rec.headers["webhook-timestamp"]) - time.time()) < 60
    assert [r.event["entity_version"] for r in stack.receiver.acked()] == [1, 2]
    assert {r.event["extra_data"]["entity_id"] for r in stack.receiver.acked()} == {lead}
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 2, what="recorded")
    (newest, _) = stack.deliveries(sub["id"])
    assert newest["status"] == "delivered" and newest["attempt_count"] == 1
    (attempt,) = newest["attempts"]
    assert attempt["status_code"] == 200 and attempt["response_body"] == "answer 200"
    assert attempt["error"] is None and attempt["latency_ms"] > 0
    one = stack.call("GET", f"/v1/deliveries/{newest['id']}")
    assert one.status_code == 200 and one.json() == newest


@ON_EVERY_BACKEND
def test_failures_are_retried_then_delivered(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (500 if seen < 2 else 200, {}, 0.0)
    sub = stack.subscribe()
    stack.dispatch()
    stack.lead()
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 1, what="delivered")
    (d,) = stack.deliveries(sub["id"])
    assert [a["status_code"] for a in d["attempts"]] == [500, 500, 200]
    assert d["attempts"][0]["response_body"] == "answer 500"
    assert d["attempt_count"] == 3 and len(stack.receiver.all()) == 3
    assert len({r.body for r in stack.receiver.all()}) == 1  # the same bytes every time


@ON_EVERY_BACKEND
def test_dead_after_the_last_attempt_then_replay_and_retry_send_again(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (500, {}, 0.0)
    sub = stack.subscribe()
    stack.dispatch(patient(stack))
    since = int(time.time()) - 1
    stack.lead()
    wait_for(lambda: len(stack.deliveries(sub["id"], "dead")) == 1, what="dead")
    (dead,) = stack.deliveries(sub["id"], "dead")
    assert dead["attempt_count"] == 3 and "retries exhausted" in dead["last_error"]
    assert stack.deliveries(sub["id"], "pending") == []
    stack.receiver.behaviour = lambda rec, seen: (200, {}, 0.0)
    resp = stack.call(
        "POST", f"/v1/subscriptions/{sub['id']}/replay", json={"since": since, "status": "dead"}
    )
    assert resp.status_code == 202 and resp.json() == {"replayed": 1}
    wait_for(lambda: len(stack.receiver.acked()) == 1, what="replayed delivery")
    wait_for(lambda: stack.deliveries(sub["id"])[0]["status"] == "delivered", what="recorded")
    # A delivered delivery can be sent once more on request; while it is being sent, not again.
    stack.receiver.behaviour = lambda rec, seen: (200, {}, HOLD)  # the resend stays in flight
    resp = stack.call("POST", f"/v1/deliveries/{dead['id']}/retry")
    assert resp.status_code == 202 and resp.json()["status"] == "pending"
    wait_for(lambda: len(stack.receiver.all()) == 5, what="the resend in flight")  # 3 + 1 + 1
    assert_problem(stack.call("POST", f"/v1/deliveries/{dead['id']}/retry"), 409)
    wait_for(lambda: len(stack.receiver.acked()) == 2, what="retried delivery")
    assert stack.receiver.acked()[0].body == stack.receiver.acked()[1].body
    wait_for(lambda: stack.deliveries(sub["id"])[0]["status"] == "delivered", what="recorded")
    assert len(stack.receiver.all()) == 5  # the refused retry sent nothing


@ON_EVERY_BACKEND
def test_a_subscription_made_later_is_backfilled_from_the_log_signed_and_in_order(
    stack: Stack,
) -> None:
    first, second = stack.lead(notes=2), stack.lead()
    sub = stack.subscribe()  # after the events: nothing is queued for it
    stack.dispatch()
    path = f"/v1/subscriptions/{sub['id']}/replay-missing"
    for bad in ({}, {"since": "yesterday"}, {"since": 0, "until": 0}, {"since": 0, "x": 1}):
        assert_problem(stack.call("POST", path, json=bad), 422)
    assert stack.deliveries(sub["id"]) == []  # the refused calls queued nothing
    resp = stack.call("POST", path, json={"since": "2000-01-01T00:00:00Z"})
    assert resp.status_code == 202 and resp.json() == {"replayed": 4, "more": False}
    wait_for(lambda: len(stack.receiver.acked()) == 4, what="4 backfilled deliveries")
    for rec in stack.receiver.acked():
        assert rec.verified_with == [sub["secret"]]
        assert rec.msg_id == rec.event["event_id"]
        assert rec.body == stack.call("GET", f"/v1/events/{rec.msg_id}").content
    versions = [
        r.event["entity_version"]
        for r in stack.receiver.acked()
        if r.event["extra_data"]["entity_id"] == first
    ]
    assert versions == [1, 2, 3]  # in order per lead
    assert {r.event["extra_data"]["entity_id"] for r in stack.receiver.acked()} == {first, second}
    again = stack.call("POST", path, json={"since": 0})
    assert again.json() == {"replayed": 0, "more": False}  # nothing is missing any more
    assert_problem(
        stack.call("POST", "/v1/subscriptions/nope/replay-missing", json={"since": 0}), 404
    )


# How long the receiver holds an attempt that a test retries while it is in flight: long enough
# for the test's calls on a loaded machine, within the attempt timeout of `patient`.
HOLD = 2.5


def patient(stack: Stack) -> Settings:
    """Settings of a dispatcher that waits up to 5 s for an answer (HOLD fits in an attempt)."""
    return e2e_settings(stack.container.settings.database_url, delivery_timeout=5.0)


def assert_problem(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["status"] == status


@ON_EVERY_BACKEND
def test_retry_while_a_worker_re_attempts_a_failed_delivery_is_409(stack: Stack) -> None:
    """Catches: `retry` ignoring a live lease (adapters/db/outbox.py, the retry statement).

    The first attempt fails, so the delivery is `failed`; the second attempt is in flight (the
    receiver holds it HOLD seconds) under the worker's lease. A retry now must answer 409 and
    must not cause a second, concurrent send of the same delivery.
    """
    stack.receiver.behaviour = lambda rec, seen: (500, {}, 0.0) if seen == 0 else (200, {}, HOLD)
    sub = stack.subscribe()
    stack.dispatch(patient(stack))
    stack.lead()
    wait_for(lambda: len(stack.receiver.all()) == 2, what="the second attempt in flight")
    (held,) = stack.deliveries(sub["id"])
    assert held["status"] == "failed" and held["attempt_count"] == 1
    resp = stack.call("POST", f"/v1/deliveries/{held['id']}/retry")
    assert_problem(resp, 409)
    assert "being sent right now" in resp.json()["detail"]
    wait_for(lambda: stack.deliveries(sub["id"])[0]["status"] == "delivered", what="recorded")
    (done,) = stack.deliveries(sub["id"])
    assert [a["status_code"] for a in done["attempts"]] == [500, 200]
    assert len(stack.receiver.all()) == 2  # no second send while the first was in flight


@ON_EVERY_BACKEND
def test_410_disables_the_subscription_until_it_is_enabled_again(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (410, {}, 0.0)
    sub = stack.subscribe()
    stack.dispatch()
    stack.lead()
    wait_for(lambda: not stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()["enabled"])
    shown = stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()
    assert "410" in shown["disabled_reason"]
    wait_for(lambda: len(stack.deliveries(sub["id"], "dead")) == 1, what="dead")
    stack.lead()  # a disabled subscription gets no new deliveries
    assert len(stack.deliveries(sub["id"])) == 1
    resp = stack.call("PATCH", f"/v1/subscriptions/{sub['id']}", json={"enabled": True})
    assert resp.status_code == 200
    assert resp.json()["enabled"] is True and resp.json()["disabled_reason"] is None


@ON_EVERY_BACKEND
def test_retry_after_is_honoured(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (
        (503, {"Retry-After": "1"}, 0.0) if seen == 0 else (200, {}, 0.0)
    )
    sub = stack.subscribe()
    stack.dispatch()
    stack.lead()
    wait_for(lambda: len(stack.receiver.acked()) == 1, what="delivered after Retry-After")
    first, second = stack.receiver.all()
    assert second.at - first.at >= 0.95
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 1, what="recorded")
    (d,) = stack.deliveries(sub["id"])
    assert [a["status_code"] for a in d["attempts"]] == [503, 200]


@ON_EVERY_BACKEND
def test_each_lead_arrives_in_order_while_first_attempts_fail_at_random(stack: Stack) -> None:
    rng = random.Random(11)
    stack.receiver.behaviour = lambda rec, seen: (
        (500, {}, 0.0) if seen == 0 and rng.random() < 0.4 else (200, {}, rng.random() / 100)
    )
    stack.subscribe(max_in_flight=8)
    stack.dispatch()
    leads = [stack.lead(notes=5) for _ in range(6)]
    wait_for(lambda: len(stack.receiver.acked()) == 36, timeout=30, what="36 deliveries")
    acked: dict[str, list[int]] = defaultdict(list)
    arrivals: dict[str, list[int]] = defaultdict(list)
    for rec in stack.receiver.all():
        lead = rec.event["extra_data"]["entity_id"]
        arrivals[lead].append(rec.event["entity_version"])
        if rec.status == 200:
            acked[lead].append(rec.event["entity_version"])
    assert sorted(acked) == sorted(leads)
    assert all(versions == [1, 2, 3, 4, 5, 6] for versions in acked.values())
    # Nothing of a lead is even attempted before the previous event of that lead is delivered.
    assert all(v == sorted(v) for v in arrivals.values())
    assert any(len(v) > 6 for v in arrivals.values())  # some first attempts did fail


@ON_EVERY_BACKEND
def test_rotation_signs_with_both_secrets_and_the_test_event(stack: Stack) -> None:
    sub = stack.subscribe()
    old = sub["secret"]
    rotated = stack.call("POST", f"/v1/subscriptions/{sub['id']}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    expires = parse_rfc3339(rotated.json()["previous_secret_expires_at"])
    assert expires > time.time() + 86000
    stack.receiver.secrets.append(new)
    secret = stack.call("GET", f"/v1/subscriptions/{sub['id']}/secret").json()
    assert secret["secret"] == new
    test = stack.call("POST", f"/v1/subscriptions/{sub['id']}/test")
    assert test.status_code == 200, test.text
    body = test.json()
    assert body["success"] is True and body["event"]["event_type"] == "webhook_test"
    assert body["attempt"]["status_code"] == 200 and body["attempt"]["response_body"]
    (rec,) = stack.receiver.all()
    assert rec.event == body["event"] and rec.msg_id == body["event"]["event_id"]
    assert sorted(rec.verified_with) == sorted([old, new])  # either secret verifies it
    assert stack.deliveries(sub["id"]) == []  # the test event is not a delivery
    stack.dispatch()
    stack.lead()
    wait_for(lambda: len(stack.receiver.acked()) == 2, what="a real delivery")
    assert sorted(stack.receiver.acked()[1].verified_with) == sorted([old, new])


def test_a_target_refused_at_send_time_is_a_failed_attempt(stack: Stack, tmp_path: Any) -> None:
    sub = stack.subscribe()
    strict = e2e_settings(
        stack.container.settings.database_url,
        allow_private_targets=False,
        retry_policy=stack.container.settings.retry_policy,
    )
    dispatcher = stack.dispatch(strict)
    stack.lead()
    wait_for(lambda: len(stack.deliveries(sub["id"], "dead")) == 1, what="refused to dead")
    (d,) = stack.deliveries(sub["id"])
    assert all(a["status_code"] is None for a in d["attempts"]) and len(d["attempts"]) == 3
    assert "refused target" in d["attempts"][0]["error"]
    assert "127.0.0.1 is a loopback address" in d["attempts"][0]["error"]
    assert stack.receiver.all() == [] and dispatcher.stats.dead == 1


# ---- the subscriptions API -------------------------------------------------------------------


def test_subscription_crud_and_validation(stack: Stack) -> None:
    url = stack.receiver.url()
    created = stack.subscribe(description="CRM sync", max_in_flight=3, rate_limit_per_s=5)
    sid = created["id"]
    assert created["event_types"] == ["*"] and created["enabled"] is True
    assert (created["max_in_flight"], created["rate_limit_per_s"]) == (3, 5.0)
    bad = [
        ({"url": url, "event_types": ["object_create", "nope"]}, ["body", "event_types", 1]),
        ({"url": url, "event_types": ["object_create", "*"]}, ["body", "event_types", 1]),
        ({"url": url, "event_types": []}, ["body", "event_types"]),
        ({"url": "ftp://x.example/", "event_types": ["*"]}, ["body", "url"]),
        ({"url": "http://u:p@x.example/", "event_types": ["*"]}, ["body", "url"]),
        ({"url": url, "event_types": ["*"], "max_in_flight": 0}, ["body", "max_in_flight"]),
        ({"url": url, "event_types": ["*"], "rate_limit_per_s": 0}, ["body", "rate_limit_per_s"]),
        ({"url": url, "event_types": ["*"], "colour": "red"}, ["body", "colour"]),
        ({"event_types": ["*"]}, ["body", "url"]),
    ]
    for body, loc in bad:
        resp = stack.call("POST", "/v1/subscriptions", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["errors"][0]["loc"] == loc, (body, resp.json())
    assert len(stack.call("GET", "/v1/subscriptions").json()["data"]) == 1  # nothing was made
    for body in ({"event_types": ["nope"]}, {"url": "ftp://x"}, {"max_in_flight": "3"}):
        resp = stack.call("PATCH", f"/v1/subscriptions/{sid}", json={"description": "x", **body})
        assert resp.status_code == 422, resp.text
    # Every problem of a PATCH's body at once: a null where only rate_limit_per_s takes one.
    resp = stack.call(
        "PATCH", f"/v1/subscriptions/{sid}", json={"url": None, "enabled": None, "zzz": 1}
    )
    assert resp.status_code == 422, resp.text
    locs = sorted(e["loc"] for e in resp.json()["errors"])
    assert locs == [["body", "enabled"], ["body", "url"], ["body", "zzz"]], resp.json()
    unchanged = stack.call("GET", f"/v1/subscriptions/{sid}").json()
    assert unchanged == {k: v for k, v in created.items() if k != "secret"}
    resp = stack.call(
        "PATCH",
        f"/v1/subscriptions/{sid}",
        json={"event_types": ["object_create", "object_update"], "rate_limit_per_s": None},
    )
    assert resp.status_code == 200
    assert resp.json()["event_types"] == ["object_create", "object_update"]
    assert resp.json()["rate_limit_per_s"] is None and resp.json()["description"] == "CRM sync"
    # A PATCH that changes no value changes nothing, updated_at included.
    before = stack.call("GET", f"/v1/subscriptions/{sid}").json()
    for same in ({}, {"description": "CRM sync", "rate_limit_per_s": None}):
        resp = stack.call("PATCH", f"/v1/subscriptions/{sid}", json=same)
        assert resp.status_code == 200 and resp.json() == before, resp.text
    disabled = stack.call("PATCH", f"/v1/subscriptions/{sid}", json={"enabled": False}).json()
    assert disabled["disabled_reason"] == "disabled via the API"
    assert disabled["updated_at"] != before["updated_at"]
    more = [stack.subscribe()["id"] for _ in range(2)]
    page = stack.call("GET", "/v1/subscriptions", params={"limit": 2}).json()
    assert [s["id"] for s in page["data"]] == [sid, more[0]] and page["next_cursor"]
    rest = stack.call("GET", "/v1/subscriptions", params={"cursor": page["next_cursor"]}).json()
    assert [s["id"] for s in rest["data"]] == [more[1]] and rest["next_cursor"] is None
    assert stack.call("DELETE", f"/v1/subscriptions/{sid}").status_code == 204
    for method, path in [
        ("GET", f"/v1/subscriptions/{sid}"),
        ("PATCH", f"/v1/subscriptions/{sid}"),
        ("DELETE", f"/v1/subscriptions/{sid}"),
        ("POST", f"/v1/subscriptions/{sid}/rotate-secret"),
        ("POST", f"/v1/subscriptions/{sid}/test"),
        ("GET", f"/v1/subscriptions/{sid}/deliveries"),
    ]:
        kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
        assert stack.call(method, path, **kwargs).status_code == 404, (method, path)
    listing = stack.call("GET", f"/v1/subscriptions/{more[0]}/deliveries?status=bogus")
    assert listing.status_code == 422
    assert stack.call("GET", "/v1/subscriptions?cursor=%%%").status_code == 400


def test_another_tenant_sees_404_and_private_targets_need_the_switch(
    tmp_path: Any, receiver: Receiver
) -> None:
    s = make_stack(f"sqlite:///{tmp_path}/strict.db", receiver, allow_private_targets=False)
    try:
        for url in (
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/",
            "http://[::1]/",
            "http://100.64.0.1/",
            "http://localhost/",
        ):
            resp = s.call("POST", "/v1/subscriptions", json={"url": url, "event_types": ["*"]})
            assert resp.status_code == 422, url
            assert "LEADHOOK_ALLOW_PRIVATE_TARGETS" in resp.json()["errors"][0]["msg"]
        ok = s.call(
            "POST",
            "/v1/subscriptions",
            json={"url": "https://hooks.example.com/in", "event_types": ["object_create"]},
        )
        assert ok.status_code == 201
        sid = ok.json()["id"]
        patch = s.call("PATCH", f"/v1/subscriptions/{sid}", json={"url": "http://127.0.0.1/"})
        assert patch.status_code == 422
        other = s.client.post(
            "/v1/tenants", json={"mid": "other"}, headers={"Authorization": "Bearer e2e-admin"}
        ).json()["api_key"]
        for method, path in [
            ("GET", f"/v1/subscriptions/{sid}"),
            ("GET", f"/v1/subscriptions/{sid}/secret"),
            ("POST", f"/v1/subscriptions/{sid}/replay"),
            ("DELETE", f"/v1/subscriptions/{sid}"),
        ]:
            kwargs: dict[str, Any] = {"json": {"since": 0}} if "replay" in path else {}
            resp = s.call(method, path, headers={"Authorization": f"Bearer {other}"}, **kwargs)
            assert resp.status_code == 404, (method, path)
        assert s.call("GET", "/v1/deliveries/nope").status_code == 404
        assert s.call("POST", "/v1/deliveries/nope/retry").status_code == 404
        assert s.client.get("/v1/subscriptions").status_code == 401
    finally:
        s.client.close()
        s.container.close()


# ---- several worker processes ------------------------------------------------------------------


def _start_worker(url: str, *, concurrency: int = 32, lease: float = 30.0) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LEADHOOK_DATABASE_URL": url,
        "LEADHOOK_ALLOW_PRIVATE_TARGETS": "1",
        "LEADHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2,0.2",
        # Long enough that a receiver slowed by a busy machine is not timed out (and so sent
        # the same delivery again): these tests count duplicates.
        "LEADHOOK_DELIVERY_TIMEOUT": "10",
        "LEADHOOK_TEST_LEASE_SECONDS": str(lease),
        "LEADHOOK_TEST_CONCURRENCY": str(concurrency),
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER)], env=env, stdout=subprocess.PIPE, text=True
    )


def _stop_worker(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    stats: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return stats


def _statuses(stack: Stack) -> dict[str, int]:
    d = t.deliveries.c
    with stack.container.engine.connect() as conn:
        rows = conn.execute(select(d.status, func.count()).group_by(d.status)).all()
    return {status: count for status, count in rows}


@pytest.mark.postgres
def test_two_worker_processes_on_postgresql_deliver_each_event_exactly_once(
    postgres_url: str, receiver: Receiver
) -> None:
    stack = make_stack(postgres_url, receiver)
    workers: list[subprocess.Popen[str]] = []
    try:
        stack.subscribe(max_in_flight=32)
        workers = [_start_worker(postgres_url) for _ in range(2)]
        for _ in range(2):
            body = {"leads": [{"fields": {"name": f"L{i}"}} for i in range(1000)]}
            assert stack.call("POST", "/v1/leads/batch", json=body).status_code == 201
        wait_for(lambda: _statuses(stack) == {"delivered": 2000}, timeout=180, what="2000")
        stats = [_stop_worker(w) for w in workers]
        workers = []
    finally:
        for w in workers:
            w.kill()
            w.wait()
        stack.client.close()
        stack.container.close()
    ids = [r.msg_id for r in receiver.all()]
    assert len(ids) == len(set(ids)) == 2000  # exactly once
    assert all(r.verified_with for r in receiver.all())
    assert sum(s["delivered"] for s in stats) == 2000
    assert all(s["delivered"] > 0 for s in stats), stats  # both did a share of the work


@pytest.mark.parametrize(
    "backend_name", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_kill_9_of_a_worker_mid_delivery_loses_nothing(
    backend_name: str, tmp_path: Any, receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    if backend_name == "sqlite":
        url = f"sqlite:///{tmp_path}/kill.db"
    else:
        url = request.getfixturevalue("postgres_url")
    stack = make_stack(url, receiver)
    try:
        _kill_and_recover(stack, receiver, url)
    finally:
        stack.client.close()
        stack.container.close()


def _kill_and_recover(stack: Stack, receiver: Receiver, url: str) -> None:
    receiver.behaviour = lambda rec, seen: (200, {}, 0.3)  # slow: many attempts in flight
    stack.subscribe(max_in_flight=32)
    body = {"leads": [{"fields": {"name": f"L{i}"}} for i in range(300)]}
    assert stack.call("POST", "/v1/leads/batch", json=body).status_code == 201
    # The default lease (15 s), renewed by the heartbeat: the killed worker's leases are what
    # the restarted one has to get past.
    first = _start_worker(url, concurrency=32, lease=15.0)
    try:
        wait_for(lambda: len(receiver.all()) >= 40, timeout=30, what="the first worker to send")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = time.monotonic()
    sent_before = len(receiver.all())
    with stack.container.engine.connect() as conn:
        held = conn.execute(
            select(func.count())
            .select_from(t.deliveries)
            .where(t.deliveries.c.locked_by.is_not(None))
        ).scalar_one()
    assert held > 0 and _statuses(stack).get("delivered", 0) < 300
    second = _start_worker(url, concurrency=32, lease=15.0)
    restarted = time.monotonic()
    try:
        wait_for(lambda: _statuses(stack) == {"delivered": 300}, timeout=60, what="all delivered")
        recovered = time.monotonic() - restarted
    finally:
        stats = _stop_worker(second)
    received = [r.msg_id for r in receiver.all()]
    with stack.container.engine.connect() as conn:
        events = set(conn.execute(select(t.events.c.event_id)).scalars())
    twice = len(received) - len(set(received))
    print(
        f"\nkill -9 with {held} leases held, {sent_before} sent; restarted "
        f"{restarted - killed_at:.2f}s later; all 300 delivered {recovered:.1f}s after the "
        f"restart; sent twice: {twice}; leases freed at start: {stats['recovered']}"
    )
    assert set(received) == events  # every event at least once: nothing lost
    assert recovered < 30.0
    # Only what the killed worker held (in flight, or sent but not yet recorded) went twice.
    assert 0 < twice <= held


def _open_circuit(stack: Stack, sub_id: str, until: float) -> None:
    with stack.container.engine.begin() as conn:
        conn.execute(
            t.subscriptions.update()
            .where(t.subscriptions.c.id == sub_id)
            .values(
                circuit_failures=7,
                circuit_opened_at=time.time(),
                circuit_retry_at=until,
                circuit_cooldown=600.0,
            )
        )


def test_an_endpoint_that_never_answers_gets_the_retry_schedule_not_more(stack: Stack) -> None:
    """Catches: an open circuit holding deliveries without spending their attempts. Eight
    leads to a port nobody listens on, with three attempts each on a 0.1 s schedule: five
    silent attempts opened the circuit, and the rest then waited for one probe per cooldown
    (5 s, 10 s, 20 s, …): the last delivery went dead minutes after its schedule ended."""
    sub = stack.subscribe(url="http://127.0.0.1:9/down")
    stack.dispatch()
    leads = [stack.lead() for _ in range(8)]
    started = time.monotonic()
    wait_for(lambda: len(stack.deliveries(sub["id"], "dead")) == 8, timeout=10, what="dead")
    assert time.monotonic() - started < 10
    dead = stack.deliveries(sub["id"], "dead")
    assert {d["entity_id"] for d in dead} == set(leads)
    assert {d["attempt_count"] for d in dead} == {3}  # the schedule's: one try, two retries
    errors = [
        a["error"]
        for d in dead
        for a in stack.call("GET", f"/v1/deliveries/{d['id']}").json()["attempts"]
    ]
    sent = [e for e in errors if e != TURNED_AWAY]
    assert len(errors) == 24 and len(sent) >= circuit.THRESHOLD and TURNED_AWAY in errors
    assert all(e.startswith("cannot connect") for e in sent), errors
    shown = stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()["circuit"]
    assert shown["state"] != "closed"
    # Every attempt sent got no answer and counts; what was turned away does not.
    assert shown["consecutive_failures"] == len(sent) < 24
    assert stack.receiver.all() == []


def _turned_away(stack: Stack, sub_id: str, n: int) -> bool:
    failed = stack.deliveries(sub_id, "failed")
    return len(failed) == n and all(d["last_error"].startswith(TURNED_AWAY) for d in failed)


def test_a_new_url_or_an_answered_test_closes_the_circuit(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="leadhook.subscriptions")
    # The endpoint was down and its circuit open for ten minutes: a delivery that came due
    # meanwhile was turned away (an attempt spent, nothing sent), its next retry a minute
    # later on this schedule. The integrator moves the subscription to a working URL: what
    # was turned away is sent now, not at its next retry.
    url = stack.container.settings.database_url
    stack.dispatch(e2e_settings(url, retry_policy=RetryPolicy.from_env_value("60,60")))
    sub = stack.subscribe(url="http://127.0.0.1:9/down")
    _open_circuit(stack, sub["id"], time.time() + 600)
    opened = stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()["circuit"]
    assert opened["state"] == "open" and opened["consecutive_failures"] == 7
    lead = stack.lead(notes=2)
    wait_for(lambda: _turned_away(stack, sub["id"], 1), what="the first event turned away")
    (first,) = stack.deliveries(sub["id"], "failed")
    assert first["attempt_count"] == 1 and first["entity_version"] == 1
    attempts = stack.call("GET", f"/v1/deliveries/{first['id']}").json()["attempts"]
    assert [(a["status_code"], a["error"]) for a in attempts] == [(None, TURNED_AWAY)]
    assert stack.receiver.all() == []  # nothing went to the endpoint; v2 and v3 wait behind
    assert stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()["circuit"] == opened
    moved = stack.call(
        "PATCH", f"/v1/subscriptions/{sub['id']}", json={"url": stack.receiver.url()}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["circuit"] == {
        "state": "closed", "opened_at": None, "retry_at": None, "consecutive_failures": 0
    }  # fmt: skip
    wait_for(lambda: len(stack.receiver.acked()) == 3, timeout=10, what="the waiting deliveries")
    assert [r.event["entity_version"] for r in stack.receiver.acked()] == [1, 2, 3]
    assert {r.event["extra_data"]["entity_id"] for r in stack.receiver.acked()} == {lead}
    # Open again (the same URL this time): a test event the endpoint answers closes it too,
    # as a probe's answer would. (Once the answers are recorded: recording them closes it.)
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 3, what="the records")
    _open_circuit(stack, sub["id"], time.time() + 600)
    stack.lead()
    wait_for(lambda: _turned_away(stack, sub["id"], 1), what="the next lead turned away")
    assert len(stack.receiver.acked()) == 3
    test = stack.call("POST", f"/v1/subscriptions/{sub['id']}/test")
    assert test.status_code == 200 and test.json()["success"] is True
    closed = stack.call("GET", f"/v1/subscriptions/{sub['id']}").json()["circuit"]
    assert closed["state"] == "closed" and closed["consecutive_failures"] == 0
    wait_for(lambda: len(stack.receiver.acked()) == 5, timeout=10, what="the lead after the test")
    # Each close was said, as each opening is: by the new URL, then by the test event.
    said = [
        r.by  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "circuit closed: the endpoint answers again"
        and r.subscription_id == sub["id"]  # type: ignore[attr-defined]
    ]
    assert said == ["a new url", "a test event"], said
