"""The delivery fault paths a user depends on, over the real queue and the real databases.

- a manual retry of a delivery that a worker holds is refused (409) and changes nothing, on
  SQLite and PostgreSQL;
- a claim that fails because the database is out of reach for a moment is retried, and the
  loop delivers afterwards: on SQLite a real write lock held by another connection past a short
  busy timeout, on PostgreSQL a relay that drops the dispatcher's connections until it is up;
- recording that keeps failing at shutdown (the SQLite write lock again) is given up after
  three attempts, within seconds, and the unrecorded delivery is sent again after its lease.
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
from test_queue import (
    MID,
    Backend,
    claim,
    deliveries,
    delivery,
    new_lead,
    open_backend,
    outcome,
    queue_of,
    setup,
)

from leadhook.adapters.db.engine import WriteGate, make_engine
from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.domain.attempts import Delivered, SendResult
from leadhook.domain.errors import ConflictError
from leadhook.domain.retry import RetryPolicy
from leadhook.services.dispatcher import Dispatcher
from leadhook.services.ports import Job, Verdict
from leadhook.settings import Settings

PROBLEM = "application/problem+json"


# ---- a manual retry while a worker holds the delivery ---------------------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_services(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    """The services and queue on the memory store, SQLite and PostgreSQL in turn."""
    c = open_backend(request.param, request, tmp_path)
    yield c
    c.close()


def test_retry_of_a_failed_delivery_a_worker_is_re_attempting_is_409(
    backend_services: Backend,
) -> None:
    """Catches: `retry` ignoring a live lease (adapters/db/outbox.py, the retry statement).

    A failed delivery keeps the status `failed` while a worker re-attempts it, so only its lease
    says it is in flight; a retry that cleared that lease would let a second worker send it at
    the same time. The retry must answer 409 problem+json and leave the worker's lease alone.
    The in-memory store (`MemoryDeliveries.retry`) keeps the same rule.
    """
    container = backend_services
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time()
    (first,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(first, "failed", code=500, at=now)], now=now)
    # Another worker claims it for its next attempt: status `failed`, lease live for 60 s.
    (held,) = claim(q, time.time(), worker="w2")
    before = delivery(container, held.id)
    assert before["status"] == "failed" and before["attempt_count"] == 1

    with pytest.raises(ConflictError, match="being sent right now"):
        container.subscriptions.retry(MID, held.id)
    if isinstance(container, Container):  # and over HTTP: 409 problem+json
        key = container.tenants.issue_key(MID).api_key
        client = TestClient(create_app(container))  # no lifespan: no dispatcher of its own
        resp = client.post(
            f"/v1/deliveries/{held.id}/retry", headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"].startswith(PROBLEM)
        assert resp.json()["status"] == 409 and "being sent right now" in resp.json()["detail"]
    assert delivery(container, held.id) == before  # nothing changed
    assert claim(q, time.time(), worker="w3") == []  # still w2's

    # The holder's outcome still lands; once settled and free, a retry is accepted.
    q.record(worker_id="w2", verdicts=[outcome(held, "delivered")], now=time.time())
    assert delivery(container, held.id)["status"] == "delivered"
    retried = container.subscriptions.retry(MID, held.id)
    assert (retried.status, retried.attempt_count) == ("pending", 0)


def test_retry_of_a_failed_delivery_whose_lease_ran_out_is_accepted(
    backend_services: Backend,
) -> None:
    """The other side of the rule: a lease that ran out (its worker died) holds nothing."""
    container = backend_services
    setup(container)
    new_lead(container)
    q, now = queue_of(container), time.time()
    (first,) = claim(q, now)
    q.record(worker_id="w1", verdicts=[outcome(first, "failed", code=500, at=now)], now=now)
    claim(q, time.time(), worker="w2", lease_until=time.time() - 1)  # a lease already over
    retried = container.subscriptions.retry(MID, first.id)
    assert (retried.status, retried.attempt_count) == ("pending", 0)
    (again,) = claim(q, time.time(), worker="w3")
    assert again.seq == first.seq and again.attempt_count == 0


# ---- a claim that fails while the database is locked ----------------------------------------


class CountingQueue:
    """The real SQL queue, counting the claims and records that raised (it injects nothing)."""

    def __init__(self, inner: SqlDeliveryQueue) -> None:
        self.inner = inner
        self.failed_claims = 0
        self.claims = 0
        self.failed_records = 0

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

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        try:
            self.inner.record(worker_id=worker_id, verdicts=verdicts, now=now)
        except Exception:
            self.failed_records += 1
            raise

    def release(self, *, worker_id: str, seqs: Sequence[int], now: float) -> None:
        self.inner.release(worker_id=worker_id, seqs=seqs, now=now)


class OkSender:
    """Answer 200 to every POST and remember the bodies (the HTTP sender is not under test);
    `on_send` runs before each answer."""

    def __init__(self, on_send: Callable[[], None] = lambda: None) -> None:
        self.sent: list[bytes] = []
        self.on_send = on_send

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.on_send()
        self.sent.append(body)
        return Delivered(latency_ms=1.0, status_code=200, body="ok")

    async def aclose(self) -> None:
        pass


def short_busy_engine(url: str, busy_ms: int) -> Engine:
    """The product's SQLite engine, but giving up on a lock after `busy_ms` instead of 30 s."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _short_busy(dbapi_conn: Any, _record: Any) -> None:  # runs after the product's own
        dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")

    return engine


class LoopThread:
    """Run `dispatcher.run(stop)` on an event loop of its own thread, as `leadhook worker` does."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self.dispatcher.run(self._stop))
        except BaseException as exc:  # reported by the tests
            self.errors.append(exc)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, within: float) -> None:
        """Ask the loop to stop, wait up to `within` seconds; it must have stopped cleanly."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(within)
        assert not self._thread.is_alive(), f"the dispatcher did not stop within {within} s"
        assert not self.errors, self.errors
        self._loop.close()


def dispatcher_over(queue: CountingQueue, sender: OkSender) -> Dispatcher:
    """A dispatcher with short timings (1 s attempts, 5 s leases), as a worker would run it."""
    return Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value("0.05"),
        clock=time.time,
        lease_seconds=5.0,
        timeout=1.0,
        poll_interval=0.05,
    )


def deliver_through_an_outage(
    c: Container, sub_id: str, engine: Engine, end_outage: Callable[[], None]
) -> None:
    """Run a dispatcher over `engine` while the store fails; end the outage after two failed
    claims; then the loop must deliver the two queued deliveries and stop cleanly."""
    queue = CountingQueue(SqlDeliveryQueue(engine, WriteGate(engine)))
    sender = OkSender()
    worker = LoopThread(dispatcher_over(queue, sender))
    try:
        deadline = time.monotonic() + 15
        while queue.failed_claims < 2:
            assert not worker.errors, worker.errors
            assert time.monotonic() < deadline, "the claims never failed"
            time.sleep(0.02)
        assert worker.alive and not worker.errors, worker.errors  # it survived both failures
        assert sender.sent == []
        end_outage()  # the database answers again
        while len(sender.sent) < 2 or worker.dispatcher.stats.delivered < 2:
            assert not worker.errors, worker.errors
            assert time.monotonic() < deadline, "nothing was delivered after the outage"
            time.sleep(0.02)
    finally:
        worker.stop(within=15)
        engine.dispose()
    assert queue.claims > queue.failed_claims >= 2
    shown = deliveries(c, sub_id)
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


# ---- recording that keeps failing at shutdown -----------------------------------------------


def test_recording_that_fails_at_shutdown_is_given_up_and_the_delivery_is_sent_again(
    sqlite_container: Container,
) -> None:
    """Catches: a recorder that never gives up (services/dispatcher.py, `_write_all`): stopping
    would wait for the whole shutdown timeout (~40 s by default) instead of ~3 s.

    A real fault: as the attempt is answered, another connection takes SQLite's write lock and
    keeps it, so the outcome cannot be written. Asked to stop, the dispatcher tries to record
    three times, gives up and stops; the delivery, still leased and unrecorded, is claimed and
    sent again once its lease runs out: giving up loses nothing.
    """
    c = sqlite_container
    sub = setup(c)
    new_lead(c)
    path = make_url(c.settings.database_url).database
    assert path
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    engine = short_busy_engine(c.settings.database_url, busy_ms=50)
    queue = CountingQueue(SqlDeliveryQueue(engine, WriteGate(engine)))
    sender = OkSender(on_send=lambda: holder.execute("BEGIN EXCLUSIVE"))
    worker = LoopThread(dispatcher_over(queue, sender))
    try:
        deadline = time.monotonic() + 10
        while queue.failed_records == 0:
            assert not worker.errors and time.monotonic() < deadline, worker.errors
            time.sleep(0.02)
        started = time.monotonic()
        worker.stop(within=10)  # a recorder that never gives up holds it for 31 s
        assert time.monotonic() - started < 8  # ~3 s: 1 s and 2 s between the three attempts
        assert queue.failed_records == 3  # the bound: three attempts in all, then give up
    finally:
        holder.close()  # releases the lock (its transaction rolls back)
        engine.dispose()
    assert len(sender.sent) == 1
    (shown,) = deliveries(c, sub["id"])
    assert shown["status"] == "pending" and shown["attempts"] == []  # nothing was recorded
    q = queue_of(c)
    assert claim(q, time.time(), worker="w2") == []  # still leased by the stopped worker
    (again,) = claim(q, time.time() + 6, worker="w2")  # once the 5 s lease has run out
    assert again.id == shown["id"] and again.attempt_count == 0
