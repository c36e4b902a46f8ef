"""The delivery fault paths a user depends on, over the real queue and the real databases.

- a manual retry of a delivery that a worker holds is refused (409) and changes nothing, on
  SQLite and PostgreSQL;
- a claim that fails because the database is out of reach for a moment is retried, and the
  loop delivers afterwards: on SQLite a real write lock held by another connection past a short
  busy timeout, on PostgreSQL a relay that drops the dispatcher's connections until it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from queue_support import empty_database
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from test_queue import MID, claim, new_lead, outcome, queue_of, setup

from leadhook.adapters.db.engine import WriteGate, make_engine
from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.domain.errors import ConflictError
from leadhook.domain.retry import RetryPolicy
from leadhook.services.delivery import Job, Outcome, SendResult
from leadhook.services.dispatcher import Dispatcher
from leadhook.settings import Settings

PROBLEM = "application/problem+json"


# ---- a manual retry while a worker holds the delivery ---------------------------------------


def test_retry_of_a_failed_delivery_a_worker_is_re_attempting_is_409(
    container: Container,
) -> None:
    """Catches: `retry` ignoring a live lease (adapters/db/outbox.py, the retry statement).

    A failed delivery keeps the status `failed` while a worker re-attempts it, so only its lease
    says it is in flight; a retry that cleared that lease would let a second worker send it at
    the same time. The retry must answer 409 problem+json and leave the worker's lease alone.
    """
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time()
    (first,) = claim(q, now)
    q.record(worker_id="w1", outcomes=[outcome(first, "failed", code=500, at=now)], now=now)
    # Another worker claims it for its next attempt: status `failed`, lease live for 60 s.
    (held,) = claim(q, time.time(), worker="w2")
    before = container.subscriptions.delivery(MID, held.id)
    assert before["status"] == "failed" and before["attempt_count"] == 1

    with pytest.raises(ConflictError, match="being sent right now"):
        container.subscriptions.retry(MID, held.id)
    key = container.tenants.issue_key(MID)["api_key"]
    client = TestClient(create_app(container))  # no lifespan: no dispatcher of its own
    resp = client.post(
        f"/v1/deliveries/{held.id}/retry", headers={"Authorization": f"Bearer {key}"}
    )
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert resp.json()["status"] == 409 and "being sent right now" in resp.json()["detail"]
    assert container.subscriptions.delivery(MID, held.id) == before  # nothing changed
    assert claim(q, time.time(), worker="w3") == []  # still w2's

    # The holder's outcome still lands; once settled and free, a retry is accepted.
    q.record(worker_id="w2", outcomes=[outcome(held, "delivered")], now=time.time())
    assert container.subscriptions.delivery(MID, held.id)["status"] == "delivered"
    retried = container.subscriptions.retry(MID, held.id)
    assert (retried["status"], retried["attempt_count"]) == ("pending", 0)


def test_retry_of_a_failed_delivery_whose_lease_ran_out_is_accepted(
    container: Container,
) -> None:
    """The other side of the rule: a lease that ran out (its worker died) holds nothing."""
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time()
    (first,) = claim(q, now)
    q.record(worker_id="w1", outcomes=[outcome(first, "failed", code=500, at=now)], now=now)
    claim(q, time.time(), worker="w2", lease_until=time.time() - 1)  # a lease already over
    retried = container.subscriptions.retry(MID, first.id)
    assert (retried["status"], retried["attempt_count"]) == ("pending", 0)
    (again,) = claim(q, time.time(), worker="w3")
    assert again.seq == first.seq and again.attempt_count == 0


# ---- a claim that fails while the database is locked ----------------------------------------


class CountingQueue:
    """The real SQL queue, counting the claims that raised (it injects nothing)."""

    def __init__(self, inner: SqlDeliveryQueue) -> None:
        self.inner = inner
        self.failed_claims = 0
        self.claims = 0

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        self.claims += 1
        try:
            return self.inner.claim(
                worker_id=worker_id, limit=limit, now=now, lease_until=lease_until, exclude=exclude
            )
        except Exception:
            self.failed_claims += 1
            raise

    def record(self, *, worker_id: str, outcomes: Sequence[Outcome], now: float) -> None:
        self.inner.record(worker_id=worker_id, outcomes=outcomes, now=now)

    def release(self, *, worker_id: str, seqs: Sequence[int]) -> None:
        self.inner.release(worker_id=worker_id, seqs=seqs)


class OkSender:
    """Answer 200 to every POST and remember the bodies (the HTTP sender is not under test)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.sent.append(body)
        return SendResult(200, 1.0, body="ok")

    async def aclose(self) -> None:
        pass


def short_busy_engine(url: str, busy_ms: int) -> Engine:
    """The product's SQLite engine, but giving up on a lock after `busy_ms` instead of 30 s."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _short_busy(dbapi_conn: Any, _record: Any) -> None:  # runs after the product's own
        dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")

    return engine


def deliver_through_an_outage(
    c: Container, sub_id: str, engine: Engine, end_outage: Callable[[], None]
) -> None:
    """Run a dispatcher over `engine` while the store fails; end the outage after two failed
    claims; then the loop must deliver the two queued deliveries and stop cleanly."""
    queue = CountingQueue(SqlDeliveryQueue(engine, WriteGate(engine)))
    sender = OkSender()
    dispatcher = Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value("0.05"),
        clock=time.time,
        lease_seconds=5.0,
        timeout=1.0,
        poll_interval=0.05,
    )
    stop = asyncio.Event()
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()

    def run() -> None:
        try:
            loop.run_until_complete(dispatcher.run(stop))
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while queue.failed_claims < 2:
            assert not errors, errors
            assert time.monotonic() < deadline, "the claims never failed"
            time.sleep(0.02)
        assert worker.is_alive() and not errors, errors  # the loop survived both failures
        assert sender.sent == []
        end_outage()  # the database answers again
        while len(sender.sent) < 2 or dispatcher.stats.delivered < 2:
            assert not errors, errors
            assert time.monotonic() < deadline, "nothing was delivered after the outage"
            time.sleep(0.02)
    finally:
        loop.call_soon_threadsafe(stop.set)
        worker.join(15)
        engine.dispose()
    assert not worker.is_alive() and not errors, errors
    loop.close()
    assert queue.claims > queue.failed_claims >= 2
    shown = c.subscriptions.deliveries(MID, sub_id, None, None, 10)["data"]
    assert [d["status"] for d in shown] == ["delivered", "delivered"]


@pytest.fixture
def sqlite_container(sqlite_url: str) -> Iterator[Container]:
    c = build(Settings(database_url=sqlite_url, allow_private_targets=True))
    yield c
    c.close()


def test_a_claim_failing_on_a_locked_database_is_retried_then_delivers(
    sqlite_container: Container,
) -> None:
    """Catches: the claim loop's error branch turned into a crash (services/dispatcher.py).

    A real fault: another connection holds SQLite's write lock (`BEGIN EXCLUSIVE`) longer than
    the dispatcher's busy timeout, so its claims fail with "database is locked". The loop must
    survive them, claim again, and deliver once the lock is gone.
    """
    c = sqlite_container
    sub = setup(c)
    new_lead(c, notes=1)
    path = make_url(c.settings.database_url).database
    assert path
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = short_busy_engine(c.settings.database_url, busy_ms=50)
    try:
        deliver_through_an_outage(c, sub["id"], engine, lambda: holder.execute("ROLLBACK"))
    finally:
        holder.close()


class Gateway:
    """A TCP relay on 127.0.0.1 to the PostgreSQL server that can be down (it then drops every
    connection at once, as a server restarting or a network cut does) or up (it relays)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.up = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self.up.is_set():
                client.close()
                continue
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.mark.postgres
def test_a_claim_failing_while_postgresql_is_unreachable_is_retried_then_delivers(
    queue_pg_url: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """Catches: the claim loop's error branch turned into a crash (services/dispatcher.py).

    A real fault: the dispatcher reaches PostgreSQL through a relay that drops its connections,
    so its claims fail with a connection error; once the relay forwards again, it delivers.
    """
    url = empty_database("postgresql", request, tmp_path)
    c = build(Settings(database_url=url, allow_private_targets=True), run_migrations=False)
    gateway: Gateway | None = None
    try:
        sub = setup(c)
        new_lead(c, notes=1)
        parsed = make_url(url)
        gateway = Gateway(parsed.host or "127.0.0.1", parsed.port or 5432)
        relayed = parsed.set(host="127.0.0.1", port=gateway.port)
        engine = make_engine(relayed.render_as_string(hide_password=False))
        deliver_through_an_outage(c, sub["id"], engine, gateway.up.set)
    finally:
        if gateway is not None:
            gateway.close()
        c.close()
