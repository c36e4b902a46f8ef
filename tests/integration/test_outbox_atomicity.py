"""The transactional outbox: lead, events and deliveries commit together, or none of them does.

A failure is injected after the event rows are written (the transaction is checked to hold
them), and in the last test the process is killed outright in the middle of the transaction.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from leadhook.adapters.db import tables as t
from leadhook.bootstrap import Container, build
from leadhook.domain.operator import SYSTEM
from leadhook.services.leads import BehaviourRequest, LeadService
from leadhook.services.ports import Subscription, UnitOfWork, UnitOfWorkFactory
from leadhook.settings import Settings


class InjectedFailure(Exception):
    """The failure a test injects in the middle of a unit of work."""


class _Trip:
    """A repository whose `method` runs `before` (checks on the open transaction), then fails."""

    def __init__(self, inner: Any, method: str, before: Callable[[], None]) -> None:
        self._inner, self._method, self._before = inner, method, before

    def __getattr__(self, name: str) -> Any:
        if name != self._method:
            return getattr(self._inner, name)

        def trip(*args: Any, **kwargs: Any) -> Any:
            self._before()
            raise InjectedFailure(f"{self._method} failed on purpose")

        return trip


class FaultyUnitOfWork:
    """A real unit of work, except that `repo.method` fails after `check` saw the transaction."""

    def __init__(
        self, inner: UnitOfWork, repo: str, method: str, check: Callable[[UnitOfWork], None]
    ):
        self._inner, self._repo, self._method, self._check = inner, repo, method, check

    def __enter__(self) -> FaultyUnitOfWork:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)

    def commit(self) -> None:
        self._inner.commit()

    def __getattr__(self, name: str) -> Any:
        repo = getattr(self._inner, name)
        if name == self._repo:
            return _Trip(repo, self._method, lambda: self._check(self._inner))
        return repo


def faulty(
    uow: UnitOfWorkFactory, repo: str, method: str, check: Callable[[UnitOfWork], None]
) -> UnitOfWorkFactory:
    return lambda: FaultyUnitOfWork(uow(), repo, method, check)  # type: ignore[return-value]


@pytest.fixture
def container(database_url: str) -> Iterator[Container]:
    c = build(Settings(database_url=database_url))
    try:
        c.tenants.create("t1")
        with c.uow() as u:
            u.subscriptions.add(
                Subscription(
                    id="sub1",
                    mid="t1",
                    url="https://example.com/hook",
                    event_types=("*",),
                    description="",
                    enabled=True,
                    secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                    max_in_flight=4,
                    rate_limit_per_s=None,
                    created_at=0.0,
                    updated_at=0.0,
                )
            )
            u.commit()
        yield c
    finally:
        c.close()


def _counts(c: Container) -> dict[str, int]:
    with c.engine.connect() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (t.leads, t.events, t.deliveries, t.idempotency_keys)
        }


def _req(key: str | None = None) -> BehaviourRequest:
    return BehaviourRequest(mid="t1", operator=SYSTEM, idempotency_key=key, fingerprint="fp")


def _lead(c: Container) -> str:
    status, body = c.leads.create(_req(), {"fields": {"name": "before"}})
    assert status == 201
    lead_id: str = json.loads(body)["lead"]["id"]
    return lead_id


def _holds(lead_id: str, version: int, deliveries: bool) -> Callable[[UnitOfWork], None]:
    """Check, inside the doomed transaction, that it holds the new event (and lead, deliveries)."""

    def check(u: UnitOfWork) -> None:
        assert [e.entity_version for e in u.events.for_entity("t1", lead_id)][-1] == version
        lead = u.leads.get("t1", lead_id)
        assert lead is not None and lead.version == version
        if deliveries:
            pending = u.deliveries.page("t1", "sub1", "pending", None, 100).data
            assert any(d.entity_id == lead_id and d.entity_version == version for d in pending)

    return check


@pytest.mark.parametrize(
    ("repo", "method", "key"),
    [("deliveries", "enqueue", None), ("idempotency", "put", "idem-1")],
    ids=["enqueue-fails", "idempotency-put-fails"],
)
def test_a_failure_after_the_event_row_leaves_nothing(
    container: Container, repo: str, method: str, key: str | None
) -> None:
    c = container
    lead_id = _lead(c)
    before = _counts(c)
    assert before["deliveries"] == 1  # the subscription receives the create
    check = _holds(lead_id, 2, deliveries=method == "put")
    service = LeadService(faulty(c.uow, repo, method, check), c.clock, c.ids)
    for behaviour, args in (
        ("notes", {"notes": "x"}),
        ("update", {"fields": {"name": "after"}}),
        ("void", {}),
    ):
        with pytest.raises(InjectedFailure):
            service.perform(_req(key), behaviour, lead_id, args)
    assert _counts(c) == before
    lead = c.leads.get("t1", lead_id)
    assert (lead.version, lead.fields["name"], lead.voided) == (1, "before", False)
    # The same behaviour through the real unit of work then succeeds, at the next version.
    status, body = c.leads.perform(_req(key), "notes", lead_id, {"notes": "x"})
    assert status == 200 and json.loads(body)["lead"]["version"] == 2
    assert _counts(c)["events"] == before["events"] + 1


def test_a_failed_create_or_batch_leaves_no_lead(container: Container) -> None:
    c = container
    before = _counts(c)

    def check(u: UnitOfWork) -> None:
        assert u.events.page("t1", after=None, event_type=None, entity_id=None, limit=10).data

    service = LeadService(faulty(c.uow, "deliveries", "enqueue", check), c.clock, c.ids)
    with pytest.raises(InjectedFailure):
        service.create(_req(), {"fields": {"name": "x"}})
    with pytest.raises(InjectedFailure):
        service.create_many(_req(), [{"fields": {"name": f"n{i}"}} for i in range(20)])
    assert _counts(c) == before


def test_a_failed_commit_leaves_nothing(container: Container) -> None:
    c = container
    lead_id = _lead(c)
    before = _counts(c)

    class FailingCommit(FaultyUnitOfWork):
        def commit(self) -> None:
            raise InjectedFailure("commit failed")

    service = LeadService(lambda: FailingCommit(c.uow(), "-", "-", lambda u: None), c.clock, c.ids)  # type: ignore[arg-type,return-value]
    with pytest.raises(InjectedFailure):
        service.perform(_req(), "notes", lead_id, {"notes": "x"})
    assert _counts(c) == before


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from leadhook.adapters.db import outbox
    from leadhook.bootstrap import build
    from leadhook.domain.operator import SYSTEM
    from leadhook.services.leads import BehaviourRequest
    from leadhook.settings import Settings

    url, lead_id = sys.argv[1], sys.argv[2]
    container = build(Settings(database_url=url), run_migrations=False)
    enqueue = outbox.SqlDeliveries.enqueue

    def enqueue_then_die(self, rows, now):
        count = enqueue(self, rows, now)
        # Everything is written, nothing is committed: die here, as a crash would.
        print("written", count, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    outbox.SqlDeliveries.enqueue = enqueue_then_die
    container.leads.perform(
        BehaviourRequest(mid="t1", operator=SYSTEM),
        "update",
        lead_id,
        {"fields": {"name": "doomed"}},
    )
    print("unreachable", flush=True)
    """
)


def test_a_process_killed_mid_transaction_leaves_nothing(
    container: Container, database_url: str
) -> None:
    c = container
    lead_id = _lead(c)
    before = _counts(c)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, database_url, lead_id],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["written", "1"], proc.stderr
    assert _counts(c) == before
    assert c.leads.get("t1", lead_id).fields["name"] == "before"
    # The database is usable and the lead unlocked: the next behaviour gets the next version.
    status, body = c.leads.perform(_req(), "update", lead_id, {"fields": {"name": "after"}})
    assert status == 200 and json.loads(body)["lead"]["version"] == 2
