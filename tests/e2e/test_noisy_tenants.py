"""One tenant's black-holed endpoints do not starve another tenant (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from delivery_support import ADMIN_TOKEN, Receiver, Stack, make_stack, wait_for


class BlackHole:
    """A TCP endpoint that accepts every connection and never answers a byte."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.connections.append(conn)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _tenant(stack: Stack, mid: str) -> dict[str, str]:
    resp = stack.client.post(
        "/v1/tenants", json={"mid": mid}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['api_key']}"}


def test_black_holed_endpoints_of_one_tenant_leave_another_tenant_fast(
    tmp_path: Any, receiver: Receiver, black_hole: BlackHole
) -> None:
    # A 5 s timeout: without a fair share, tenant B would wait up to 5 s behind tenant A.
    stack = make_stack(f"sqlite:///{tmp_path}/noisy.db", receiver, delivery_timeout=5.0)
    try:
        _run(stack, receiver, black_hole)
    finally:
        stack.stop_dispatchers()
        stack.client.close()
        stack.container.close()


def _run(stack: Stack, receiver: Receiver, black_hole: BlackHole) -> None:
    noisy = _tenant(stack, "noisy")
    holes = []
    for i in range(10):
        resp = stack.call(
            "POST",
            "/v1/subscriptions",
            headers=noisy,
            json={"url": black_hole.url(f"/{i}"), "event_types": ["*"], "max_in_flight": 256},
        )
        assert resp.status_code == 201, resp.text
        holes.append(resp.json()["id"])
    stack.subscribe()  # tenant B (acme): a receiver that answers at once
    body = {"leads": [{"fields": {"name": f"N{i}"}} for i in range(40)]}
    resp = stack.call("POST", "/v1/leads/batch", headers=noisy, json=body)
    assert resp.status_code == 201, resp.text  # 400 deliveries to endpoints that never answer
    dispatcher = stack.dispatch(concurrency=64)
    wait_for(lambda: len(black_hole.connections) >= 50, what="tenant A's attempts in flight")
    held = len(black_hole.connections)
    sent: dict[str, float] = {}
    for _ in range(40):
        start = time.monotonic()
        sent[stack.lead()] = start
        time.sleep(0.1)
    wait_for(lambda: len(receiver.acked()) >= 40, timeout=30, what="tenant B's deliveries")
    latencies = sorted(r.at - sent[r.event["extra_data"]["entity_id"]] for r in receiver.acked())
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\ntenant A held {held} connections; tenant B p50 {latencies[20]:.3f}s, p99 {p99:.3f}s")
    assert p99 < 1.0, latencies
    # A alone kept a reserve of slots free, and every one of A's circuits opened.
    assert held <= 64 - 8
    wait_for(
        lambda: all(
            stack.call("GET", f"/v1/subscriptions/{s}", headers=noisy).json()["circuit"]["state"]
            != "closed"
            for s in holes
        ),
        timeout=20,
        what="the black-holed endpoints' circuits to open",
    )
    circuit = stack.call("GET", f"/v1/subscriptions/{holes[0]}", headers=noisy).json()["circuit"]
    assert circuit["consecutive_failures"] >= 5 and circuit["retry_at"] > circuit["opened_at"]
    # Nothing of A's was lost: every delivery waits, or (its short schedule spent while the
    # circuit turned it away) is dead, kept for a replay.
    for s in holes:
        resp = stack.call("GET", f"/v1/subscriptions/{s}/deliveries?limit=200", headers=noisy)
        statuses = {d["status"] for d in resp.json()["data"]}
        assert len(resp.json()["data"]) == 40 and statuses <= {"pending", "failed", "dead"}
    assert dispatcher.stats.tripped >= 10


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize(("subs", "max_in_flight"), [(1, 16), (4, 64)])
def test_fast_failing_backlog_of_one_tenant_leaves_another_tenant_fast(
    request: pytest.FixtureRequest,
    backend: str,
    subs: int,
    max_in_flight: int,
    tmp_path: Any,
    receiver: Receiver,
) -> None:
    # Tenant A's endpoints answer 500 at once, behind a backlog of 10,000 due deliveries (to
    # one subscription, or 20,000 to four that each may take a whole claim): their attempts
    # end so fast that A never fills its share of the slots.
    failing = Receiver().start()
    failing.behaviour = lambda r, n: (500, {}, 0.0)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/fastfail.db"
    else:
        url = request.getfixturevalue("empty_session_postgres")
    stack = make_stack(url, receiver)
    try:
        noisy = _tenant(stack, "noisy")
        for i in range(subs):
            body: dict[str, Any] = {
                "url": failing.url(f"/{i}"),
                "event_types": ["*"],
                "max_in_flight": max_in_flight,
            }
            resp = stack.call("POST", "/v1/subscriptions", headers=noisy, json=body)
            assert resp.status_code == 201, resp.text
        stack.subscribe()
        leads = 10_000 if subs == 1 else 5_000  # 10,000 or 20,000 deliveries
        for b in range(leads // 500):
            body = {"leads": [{"fields": {"name": f"N{b}-{i}"}} for i in range(500)]}
            resp = stack.call("POST", "/v1/leads/batch", headers=noisy, json=body)
            assert resp.status_code == 201, resp.text
        stack.dispatch(concurrency=64)
        wait_for(lambda: len(failing.all()) >= 200, what="tenant A's first failures")
        before = len(failing.all())
        sent: dict[str, float] = {}
        for _ in range(20):
            sent[stack.lead()] = time.monotonic()
            time.sleep(0.05)
        wait_for(lambda: len(receiver.acked()) >= 20, timeout=60, what="tenant B's deliveries")
        lat = sorted(r.at - sent[r.event["extra_data"]["entity_id"]] for r in receiver.acked())
        print(f"\nA attempts so far {len(failing.all())}; B p50 {lat[10]:.3f}s max {lat[-1]:.3f}s")
        assert lat[-1] < 1.0, lat
        assert len(failing.all()) > before  # A's backlog went on being attempted beside B
    finally:
        stack.stop_dispatchers()
        stack.client.close()
        stack.container.close()
        failing.stop()
