"""Group commit: behaviours submitted together share a transaction, and each fails alone."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import pytest

from leadhook.adapters.db.writer import GroupWriter
from leadhook.bootstrap import Container
from leadhook.domain.errors import NotFoundError, ValidationError
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest
from leadhook.services.ports import LeadFilter


@pytest.fixture
def tenant(container: Container) -> Iterator[str]:
    mid: str = container.tenants.create("t1", "t1").tenant.mid
    yield mid


def _req(mid: str, key: str | None = None) -> BehaviourRequest:
    return BehaviourRequest(mid=mid, operator=Operator(), idempotency_key=key, fingerprint="fp")


def _count(container: Container, mid: str) -> int:
    leads, _ = container.leads.list(mid, LeadFilter(), None, 500)
    return len(leads)


def test_one_failing_behaviour_in_a_group_fails_alone(container: Container, tenant: str) -> None:
    """Five creates and a bad one in one turn of the loop (SQLite) or one batch (PostgreSQL)."""
    writer = container.writer
    leads = container.leads

    async def together() -> list[Future[tuple[int, str]]]:
        futures = [
            leads.submit_create(_req(tenant), {"fields": {"name": f"L{i}"}}) for i in range(5)
        ]
        futures.insert(2, leads.submit_create(_req(tenant), {"fields": {"no_such_field": 1}}))
        futures.append(leads.submit_perform(_req(tenant), "notes", "missing", {"notes": "x"}))
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)
        return futures

    futures = asyncio.run(together())
    assert isinstance(futures[2].exception(), ValidationError)
    assert isinstance(futures[-1].exception(), NotFoundError)
    ok = [f for i, f in enumerate(futures) if i not in (2, len(futures) - 1)]
    assert [f.result()[0] for f in ok] == [201] * 5
    assert _count(container, tenant) == 5
    events = json.loads(
        container.events.list(tenant, after=None, event_type=None, entity_id=None, limit=50)
    )["data"]
    assert [e["event_type"] for e in events] == ["object_create"] * 5
    assert writer is not None


def test_concurrent_writers_share_commits_and_keep_versions_gapless(
    container: Container, tenant: str
) -> None:
    """Sixteen threads append notes to one lead through the writer: versions 1..N, no gap."""
    _, body = container.leads.create(_req(tenant), {"fields": {"name": "shared"}})
    lead_id = json.loads(body)["lead"]["id"]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                container.leads.perform(_req(tenant), "notes", lead_id, {"notes": f"{n}-{i}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lead = container.leads.get(tenant, lead_id)
    assert lead.version == 1 + 16 * 5


def test_an_idempotency_key_twice_in_one_group_answers_once(
    container: Container, tenant: str
) -> None:
    async def twice() -> list[tuple[int, str]]:
        futures = [
            container.leads.submit_create(_req(tenant, "same"), {"fields": {"name": "once"}})
            for _ in range(3)
        ]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    answers = asyncio.run(twice())
    assert len(set(answers)) == 1
    assert _count(container, tenant) == 1


def test_a_closed_writer_refuses_new_work(container: Container) -> None:
    writer = GroupWriter(container.engine, container.gate, ids=container.ids)
    writer.close()
    future = writer.submit(lambda uow: 1)
    with pytest.raises(RuntimeError, match="closed"):
        future.result()


def test_a_group_reads_its_tenant_and_subscriptions_once_and_forgets_them_on_a_write(
    container: Container, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadhook.adapters.db import outbox
    from leadhook.adapters.db.uow import BoundUnitOfWork

    container.subscriptions.create(tenant, {"url": "http://127.0.0.1:9/h", "event_types": ["*"]})
    reads: list[str] = []
    real = outbox._sub
    monkeypatch.setattr(outbox, "_sub", lambda row, box: reads.append(row.id) or real(row, box))
    with container.engine.connect() as conn:
        uow = BoundUnitOfWork(conn, container.ids)
        first = uow.subscriptions.enabled_for(tenant)
        assert uow.subscriptions.enabled_for(tenant) == first and len(reads) == 1
        assert uow.tenants.get(tenant) is uow.tenants.get(tenant)  # read once
        sub = uow.subscriptions.get(tenant, first[0].id)
        assert sub is not None
        reads.clear()
        uow.subscriptions.update(replace(sub, enabled=False))  # a write forgets
        assert uow.subscriptions.enabled_for(tenant) == [] and len(reads) == 0
        conn.rollback()


def test_a_group_takes_a_tenants_log_lock_once_and_again_after_an_undone_unit(
    container: Container, tenant: str
) -> None:
    """Catches: the group's memo of held log locks outliving a rolled-back savepoint (the
    lock goes with it, and a later behaviour would append to the log unlocked, letting a
    reader page past an event not yet committed)."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: no log lock")
    from sqlalchemy import text

    held = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'"
        " AND pid = pg_backend_pid()"
    )
    seen: list[int] = []

    def undone(uow: Any) -> None:
        uow.events._log_lock(tenant, shared=True)
        raise RuntimeError("this unit is undone")

    def appends(uow: Any) -> int:
        uow.events._log_lock(tenant, shared=True)
        uow.events._log_lock(tenant, shared=True)  # the second time: no statement
        seen.append(int(uow.events.conn.execute(held).scalar_one()))
        return 1

    writer = GroupWriter(container.engine, container.gate, ids=container.ids, threads=1)
    try:
        started = threading.Event()

        def first(uow: Any) -> None:  # holds the writer while the group below queues up
            started.wait(5)

        writer.submit(first)
        group = [writer.submit(undone), writer.submit(appends)]
        started.set()
        with pytest.raises(RuntimeError, match="undone"):
            group[0].result(10)
        assert group[1].result(10) == 1
    finally:
        writer.close()
    assert seen == [1]
