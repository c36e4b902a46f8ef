"""Group commit: behaviours submitted together share a transaction, and each fails alone."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from leadhook.adapters.db.engine import BUSY_TIMEOUT
from leadhook.adapters.db.writer import GATHER_TURNS, WAYS, GroupWriter
from leadhook.bootstrap import Container
from leadhook.domain.errors import ConflictError, NotFoundError, ValidationError
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest
from leadhook.services.ports import LeadFilter, NewEvent, Recipient, Subscription


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


def test_on_sqlite_a_unit_submitted_a_turn_later_joins_the_same_transaction(
    container: Container,
) -> None:
    """Catches: the loop committing at the end of the turn that submitted, so that a request
    read while that turn ran (its handler submits in the next turn) started a transaction of
    its own instead of joining this one."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("writes on the event loop are SQLite's")

    def run(turns: int) -> dict[str, int]:
        writer = GroupWriter(
            container.engine, container.gate, ids=container.ids, gather_turns=turns
        )

        async def one_turn_apart() -> list[int]:
            first = writer.submit(lambda uow: 1)
            await asyncio.sleep(0)  # the next turn of the loop, as a request read meanwhile
            second = writer.submit(lambda uow: 2)
            return list(await asyncio.gather(*map(asyncio.wrap_future, (first, second))))

        try:
            assert asyncio.run(one_turn_apart()) == [1, 2]
            return writer.counts()
        finally:
            writer.close()

    gathered = run(GATHER_TURNS)
    assert GATHER_TURNS >= 1
    assert (gathered["units"], _transactions(gathered)) == (2, 1)  # one transaction for both
    alone = run(0)
    assert (alone["units"], alone["one_by_one"]) == (2, 2)  # committed turn by turn: two


def _transactions(counts: dict[str, int]) -> int:
    return sum(counts[way] for way in WAYS)


def test_on_sqlite_a_unit_that_fails_after_writing_undoes_the_group_and_it_runs_again(
    container: Container, tenant: str
) -> None:
    """Catches: a SQLite group run without a savepoint a unit keeping the rows of a unit that
    failed after it wrote, or answering the others from a run that was undone. A unit that
    fails before it writes leaves the group as it runs."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("the loop's groups without a savepoint a unit are SQLite's")
    writer = container.writer
    assert writer is not None
    catalog = container.tenants.get(tenant).catalog

    def breaks_the_catalog(uow: Any) -> None:
        uow.tenants.conn.execute(
            text("UPDATE tenants SET catalog = 'broken' WHERE mid = :mid"), {"mid": tenant}
        )
        raise RuntimeError("fails after writing")

    def fails_first(uow: Any) -> None:
        raise RuntimeError("fails before writing")

    async def group(odd: Any) -> list[Future[Any]]:
        futures = [
            container.leads.submit_create(_req(tenant), {"fields": {"name": f"L{i}"}})
            for i in range(4)
        ]
        futures.insert(2, writer.submit(odd))
        await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True)
        return futures

    for odd, way in ((fails_first, "deferred"), (breaks_the_catalog, "deferred_redone")):
        before = writer.counts()
        futures = asyncio.run(group(odd))
        after = writer.counts()
        assert (after[way] - before[way], _transactions(after) - _transactions(before)) == (1, 1)
        assert isinstance(futures[2].exception(), RuntimeError)
        answered = [
            json.loads(f.result()[1])["lead"]["id"] for i, f in enumerate(futures) if i != 2
        ]
        leads, _ = container.leads.list(tenant, LeadFilter(), None, 500)
        assert set(answered) <= {lead.id for lead in leads}
    assert _count(container, tenant) == 8  # each create once, from the run that committed
    assert container.tenants.get(tenant).catalog == catalog
    events = json.loads(
        container.events.list(tenant, after=None, event_type=None, entity_id=None, limit=50)
    )["data"]
    assert len(events) == 8


def test_on_sqlite_a_unit_whose_failure_ends_the_transaction_fails_its_whole_group(
    container: Container, tenant: str
) -> None:
    """Catches: a SQLite group carrying on after a unit's error that SQLite answers by rolling
    the whole transaction back (a full disk): the units before it would be answered for rows
    that are gone, and the units after it would commit one statement at a time."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's own rollback of a transaction on a full disk")
    writer = container.writer
    assert writer is not None

    def room_for_a_few_pages(uow: Any) -> None:  # on the writer's own connection
        conn = uow.tenants.conn
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count={pages + 6}")

    small = {"fields": {"name": "small"}}
    big = {"fields": {f: f[0] * 9000 for f in ("name", "email", "industry", "department")}}

    async def run(bodies: list[dict[str, Any]]) -> list[Future[Any]]:
        futures = [container.leads.submit_create(_req(tenant), body) for body in bodies]
        await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True)
        return futures

    def writes_and_fails(uow: Any) -> None:
        uow.tenants.conn.execute(
            text("UPDATE tenants SET created_at = created_at WHERE mid = :mid"), {"mid": tenant}
        )
        raise RuntimeError("fails after writing")

    async def full_group(redone: bool) -> list[Future[Any]]:
        await asyncio.wrap_future(writer.submit(room_for_a_few_pages))
        if not redone:
            return await run([small, small, big, small])
        # The big one fails when the group runs again unit by unit, each in its savepoint.
        futures = [container.leads.submit_create(_req(tenant), small)]
        futures.append(writer.submit(writes_and_fails))
        futures += [container.leads.submit_create(_req(tenant), b) for b in (big, small)]
        await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True)
        return futures

    for redone in (False, True):
        futures = asyncio.run(full_group(redone))
        errors = [f.exception() for f in futures]
        assert all(exc is not None and "full" in str(exc) for exc in errors), errors
        assert _count(container, tenant) == 0  # nothing of the group, before the big one or after
    # The writer's next connection has its room back.
    assert [f.result()[0] for f in asyncio.run(run([small, small]))] == [201, 201]
    assert _count(container, tenant) == 2


def test_on_sqlite_a_unit_that_ends_the_transaction_and_carries_on_fails_with_its_group(
    container: Container, tenant: str
) -> None:
    """Catches: units after one that ended the transaction (caught SQLite's own rollback on
    an I/O error and returned) committing a statement at a time, and units before it being
    answered for rows that are gone; or a unit that had failed alone before it losing its
    own error to the transaction's."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's own end of a transaction")
    writer = container.writer
    assert writer is not None

    def ends_it(uow: Any) -> str:
        # What SQLite does by itself on an I/O error; the unit swallows it and returns.
        uow.tenants.conn.connection.driver_connection.execute("ROLLBACK")
        return "carried on"

    def fails_first(uow: Any) -> None:
        raise NotFoundError("no such lead")

    async def group(units: list[Any]) -> list[Future[Any]]:
        futures = [
            writer.submit(u)
            if callable(u)
            else container.leads.submit_create(_req(tenant), {"fields": {"name": u}})
            for u in units
        ]
        await asyncio.gather(*map(asyncio.wrap_future, futures), return_exceptions=True)
        return futures

    for units in (["before", fails_first, ends_it, "after"], [ends_it]):
        errors = [f.exception() for f in asyncio.run(group(units))]
        for unit, error in zip(units, errors, strict=True):
            if unit is fails_first:
                assert isinstance(error, NotFoundError)  # its own answer, a 404
            else:
                assert "ended the transaction" in str(error), errors
        assert _count(container, tenant) == 0
    assert [f.result()[0] for f in asyncio.run(group(["later", "again"]))] == [201, 201]
    assert _count(container, tenant) == 2


def test_on_sqlite_the_loop_writers_connection_goes_back_to_the_pool_as_it_was_taken(
    container: Container,
) -> None:
    """Catches: the writer's own settings (no busy wait, savepoint journals in memory) left on
    a connection it gives back, where a listing's large sort would then build its temporary
    b-trees in memory and a write would fail at once instead of waiting for the lock."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("the loop writer's connection is SQLite's")

    writer = GroupWriter(container.engine, container.gate, ids=container.ids)
    pragmas = ("busy_timeout", "temp_store")
    drivers: list[Any] = []

    def settings(uow: Any) -> tuple[int, ...]:
        drivers.append(uow.tenants.conn.connection.driver_connection)  # the writer's own
        return tuple(drivers[0].execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas)

    async def on_the_loop() -> tuple[int, ...]:
        return await asyncio.wrap_future(writer.submit(settings))

    try:
        assert asyncio.run(on_the_loop()) == (0, 2)  # taken: no busy wait, journals in memory
    finally:
        writer.close()
    given_back = tuple(drivers[0].execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas)
    assert given_back == (int(BUSY_TIMEOUT * 1000), 0)


def _written() -> int:
    """The bytes this process has written so far, to files and sockets alike (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_on_sqlite_a_groups_savepoints_are_not_written_to_a_temporary_file(
    container: Container, tenant: str
) -> None:
    """Catches: each unit's savepoint journal (a create's ~28 pages, over SQLite's 64 KB
    threshold) spilled to a temporary file: 16 clients wrote 156 KB an event where the WAL
    took 31 KB of it. What a group writes is what its commit appends to the WAL."""
    if container.engine.dialect.name != "sqlite":
        pytest.skip("the savepoint journal is SQLite's")
    if not Path("/proc/self/io").exists():
        pytest.skip("counts the process's writes from /proc")
    wal = Path(str(container.engine.url.database) + "-wal")

    async def group(n: int) -> None:
        futures = [
            container.leads.submit_create(
                _req(tenant),
                {"fields": {"name": f"L{i}", "mobile": f"1380000{i:04d}", "email": f"{i}@x.cn"}},
            )
            for i in range(n)
        ]
        await asyncio.gather(*map(asyncio.wrap_future, futures))

    # As `POST /v1/leads` writes in the benchmarks: one subscription, a mobile and an email.
    container.subscriptions.create(tenant, {"url": "http://127.0.0.1:9/h", "event_types": ["*"]})
    asyncio.run(group(2))  # the WAL exists and the writer's connection is open
    assert container.writer is not None
    units, size, written = container.writer.counts()["units"], wal.stat().st_size, _written()
    asyncio.run(group(12))
    grown, written = wal.stat().st_size - size, _written() - written
    assert container.writer.counts()["units"] == units + 12
    assert _count(container, tenant) == 14
    assert grown > 0
    assert written < grown + 64 * 1024, (written, grown)


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
    real = outbox.SqlSubscriptions._enabled

    def enabled(cursor: Any) -> list[Recipient]:
        got = real(cursor)
        reads.extend(r.id for r in got)
        return got

    monkeypatch.setattr(outbox.SqlSubscriptions, "_enabled", staticmethod(enabled))
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


def test_on_postgresql_a_groups_tenant_read_brings_its_subscriptions_along(
    container: Container, tenant: str
) -> None:
    """Catches: the subscriptions every behaviour reads after its tenant costing a round trip
    of their own on PostgreSQL (sent with the tenant's, read into the memo), or read ahead
    where nothing would send them together (SQLite, a unit of work without memos)."""
    from leadhook.adapters.db.uow import BoundUnitOfWork

    sub = container.subscriptions.create(
        tenant, {"url": "http://127.0.0.1:9/h", "event_types": ["*"]}
    )
    pg = container.engine.dialect.name == "postgresql"
    with container.engine.connect() as conn:
        uow = BoundUnitOfWork(conn, container.ids)
        assert uow.tenants.get(tenant) is not None
        memo = uow.subscriptions.memo
        assert memo is not None
        assert ([s.id for s in memo[tenant]] if pg else tenant not in memo) == (
            [sub.id] if pg else True
        )
        assert [s.id for s in uow.subscriptions.enabled_for(tenant)] == [sub.id]
        assert uow.tenants.get("no-such-tenant") is None
        assert memo.get("no-such-tenant") == ([] if pg else None)
        conn.rollback()
    with container.uow() as plain:  # no memos: nothing read ahead
        assert plain.tenants.get(tenant) is not None
        assert plain.subscriptions.memo is None


def _group(container: Container, units: list[Any]) -> list[Future[Any]]:
    """Run `units` as one group on a writer of one thread; return their futures, settled."""
    writer = GroupWriter(container.engine, container.gate, ids=container.ids, threads=1)
    try:
        started = threading.Event()
        writer.submit(lambda uow: started.wait(5))  # holds the writer while the group queues
        futures = [writer.submit(unit) for unit in units]
        started.set()
        for future in futures:
            future.exception(10)
    finally:
        writer.close()
    return futures


def test_a_group_takes_a_tenants_log_lock_once_and_again_after_an_undone_unit(
    container: Container, tenant: str
) -> None:
    """Catches: the group's memo of held log locks outliving a rolled-back savepoint (the
    lock goes with it, and a later behaviour would append to the log unlocked, letting a
    reader page past an event not yet committed)."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has a single writer: no log lock")

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

    group = _group(container, [undone, appends])
    with pytest.raises(RuntimeError, match="undone"):
        group[0].result(10)
    assert group[1].result(10) == 1
    assert seen == [1]


# ---- PostgreSQL's pipeline mode ------------------------------------------------------------


@pytest.fixture
def probe(container: Container) -> Iterator[str]:
    """A scratch table on PostgreSQL that the units below write to."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")

    with container.engine.begin() as conn:
        conn.execute(text("CREATE TABLE pipeline_probe (n integer NOT NULL)"))
    yield "pipeline_probe"
    with container.engine.begin() as conn:
        conn.execute(text("DROP TABLE pipeline_probe"))


def _probed(container: Container) -> list[int]:

    with container.engine.connect() as conn:
        return sorted(conn.execute(text("SELECT n FROM pipeline_probe")).scalars())


def test_an_error_in_a_units_last_statement_fails_that_unit_alone(
    container: Container, probe: str
) -> None:
    """Catches: the pipeline synced only at the group's end (or at the next unit's first read),
    so that an error of a unit's last statement, whose answer nobody reads, would fail the
    unit after it, or the whole group; and psycopg's "prepared statement does not exist"
    after a statement it prepared in the aborted part of a pipeline (the release of the
    savepoint, prepared on its fifth run: the rounds below run it often enough)."""
    in_pipeline: list[bool] = []

    def insert(n: int, *, then_fail: bool = False) -> Any:
        def unit(uow: Any) -> int:
            driver = uow.leads.driver
            in_pipeline.append(bool(driver.pgconn.pipeline_status))
            driver.execute(f"INSERT INTO {probe} VALUES (%s)", (n,))
            if then_fail:
                driver.execute("SELECT 1 / 0")  # sent, not read: fails at the unit's sync
            return n

        return unit

    kept: list[int] = []
    for round_ in range(4):
        base = round_ * 10
        futures = _group(
            container,
            [
                insert(base + 1),
                insert(base + 2, then_fail=True),
                insert(base + 3),
                insert(base + 4, then_fail=round_ % 2 == 0),
                insert(base + 5),
            ],
        )
        failing = [False, True, False, round_ % 2 == 0, False]
        assert [f.exception() is not None for f in futures] == failing, [
            repr(f.exception()) for f in futures
        ]
        assert all("division by zero" in str(f.exception()) for f in futures if f.exception())
        kept += [base + 1, base + 3, base + 5] + ([] if round_ % 2 == 0 else [base + 4])
        assert _probed(container) == sorted(kept)
    # Each group ran deferred first until the error showed (at its end, or earlier when
    # psycopg read the failed answer while sending), then unit by unit (20 runs): every run
    # of every unit pipelined.
    assert len(in_pipeline) >= 20 + 4 * 2 and all(in_pipeline)


def test_a_core_statement_in_a_unit_reads_its_rows_and_rowcounts_are_read_after_a_flush(
    container: Container, probe: str
) -> None:
    """Catches: SQLAlchemy Core reading a pipelined cursor's description before its answer
    came ("This result object does not return rows"), and a `rowcount` read unflushed (-1:
    every lead update would have looked like a concurrent change)."""

    from leadhook.adapters.db.pipeline import flushed

    def unit(uow: Any) -> tuple[int, int, bool]:
        driver = uow.leads.driver
        driver.execute(f"INSERT INTO {probe} VALUES (1), (2)")
        cur = driver.execute(f"UPDATE {probe} SET n = n + 10")
        flushed(uow.leads.conn)
        updated = cur.rowcount
        counted = uow.leads.conn.execute(text(f"SELECT count(*) FROM {probe}")).scalar_one()
        return updated, counted, bool(driver.pgconn.pipeline_status)

    (future,) = _group(container, [unit])
    assert future.result() == (2, 2, False)  # Core ended the pipeline for the rest of the unit
    assert _probed(container) == [11, 12]


def _new_event(entity_id: str, version: int, mid: str) -> NewEvent:
    return NewEvent(
        event_id=f"E{entity_id}{version:04d}",
        mid=mid,
        entity_id=entity_id,
        entity_version=version,
        event_type="object_create" if version == 1 else "object_add_notes",
        create_time=1_700_000_000 + version,
        is_follow_up=0,
        payload='{"n":' + str(version) + "}",
    )


def _outbox_unit(event: NewEvent, sub: Subscription, seen: list[Any]) -> Any:
    def unit(uow: Any) -> str:
        (seq,) = uow.events.append([event])
        seen.append((event.entity_id, seq))
        uow.deliveries.enqueue([(sub, seq, event)], 1_700_000_000.0)
        return event.event_id

    return unit


def _delivered_seqs(container: Container, mid: str) -> dict[str, tuple[int, int]]:
    """Each event's id → (its seq in the log, the event_seq its delivery row points at)."""

    with container.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.event_id, e.seq, d.event_seq FROM events e"
                " JOIN deliveries d ON d.event_id = e.event_id WHERE e.mid = :mid"
            ),
            {"mid": mid},
        ).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _some_subscription(container: Container, mid: str) -> Subscription:
    return container.subscriptions.create(
        mid, {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    )


def test_a_deferred_group_reads_no_seq_back_and_its_deliveries_find_their_events(
    container: Container, tenant: str
) -> None:
    """Catches: a deferred group's deliveries pointing at no event or another one (their
    `event_seq` found by the event's id in SQL, since the writer no longer reads the seq)."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("deferred groups are PostgreSQL's")
    sub = _some_subscription(container, tenant)
    seen: list[Any] = []
    events = [_new_event(f"D{i}", 1, tenant) for i in range(4)]
    futures = _group(container, [_outbox_unit(e, sub, seen) for e in events])
    assert [f.result() for f in futures] == [e.event_id for e in events]
    assert [seq for _, seq in seen] == [None] * 4  # one run each, nothing read back
    found = _delivered_seqs(container, tenant)
    assert sorted(found) == sorted(e.event_id for e in events)
    assert all(log_seq == delivery_seq for log_seq, delivery_seq in found.values())


def test_a_conflict_in_a_deferred_group_fails_its_unit_alone(
    container: Container, tenant: str
) -> None:
    """Catches: a version already in the log (found only at the deferred group's end) failing
    the whole group, or failing as something other than a conflict, or being written."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("deferred groups are PostgreSQL's")
    sub = _some_subscription(container, tenant)
    with container.uow() as uow:
        uow.events.append([replace(_new_event("X", 1, tenant), event_id="EXfirst")])
        uow.commit()
    seen: list[Any] = []
    units = [
        _outbox_unit(_new_event("A", 1, tenant), sub, seen),
        _outbox_unit(_new_event("X", 1, tenant), sub, seen),  # version 1 of X exists
        _outbox_unit(_new_event("C", 1, tenant), sub, seen),
    ]
    a, x, c = _group(container, units)
    assert isinstance(x.exception(), ConflictError)
    assert (a.result(), c.result()) == ("EA0001", "EC0001")
    # The deferred run (nothing read back), then unit by unit (each seq read back; X's
    # append raised the conflict itself).
    assert [seq for _, seq in seen[:3]] == [None] * 3
    assert [name for name, _ in seen[3:]] == ["A", "C"]
    assert all(isinstance(seq, int) for _, seq in seen[3:])
    found = _delivered_seqs(container, tenant)
    assert sorted(found) == ["EA0001", "EC0001"]
    assert all(log_seq == delivery_seq for log_seq, delivery_seq in found.values())


def test_unanswered_statements_share_a_cursor_kept_with_the_connection(
    container: Container,
) -> None:
    """Catches: the kept cursor outliving its DB-API connection (a statement sent on a closed
    connection after a writer replaced it), or a new cursor per statement (its adapters
    looked up again on every insert)."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs its statements on the connection itself")
    from leadhook.adapters.db.repositories import unread

    with container.engine.connect() as conn:
        first = unread(conn)
        assert unread(conn) is first
        first.execute("SELECT 1")
        conn.rollback()
        conn.invalidate()  # the DB-API connection is dropped; the next use opens another
        again = unread(conn)
        assert again is not first and not again.closed
        again.execute("SELECT 1")


def test_a_deferred_group_whose_unit_hid_an_error_is_not_committed_as_if_whole(
    container: Container, probe: str
) -> None:
    """Catches: a deferred group committed after one of its units caught a server error and
    carried on: PostgreSQL answers that COMMIT with a ROLLBACK, and every unit of the group
    would have been told its write was done."""
    import psycopg

    from leadhook.adapters.db.pipeline import flushed

    def insert(n: int) -> Any:
        def unit(uow: Any) -> int:
            uow.leads.driver.execute(f"INSERT INTO {probe} VALUES (%s)", (n,))
            return n

        return unit

    def hides_an_error(uow: Any) -> str:
        try:
            uow.leads.driver.execute("SELECT 1 / 0")
            flushed(uow.leads.conn)
        except psycopg.Error:
            pass  # a unit must not do this; the writer must not believe it either
        return "quiet"

    one, two, quiet = _group(container, [insert(1), insert(2), hides_an_error])
    assert (one.result(), two.result()) == (1, 2)
    # In a group its savepoint cannot be released; alone (the writer took the others with the
    # unit holding it), its transaction cannot be committed: either way it is not told "done".
    assert quiet.exception() is not None
    assert _probed(container) == [1, 2]

    writer = GroupWriter(container.engine, container.gate, ids=container.ids, threads=1)
    try:
        alone = writer.submit(hides_an_error)  # nothing else queued: it runs alone
        assert "not committed" in str(alone.exception(10))
    finally:
        writer.close()


def test_a_deferred_group_commits_with_its_sync_and_a_failed_one_commits_nothing(
    container: Container, probe: str
) -> None:
    """Catches: a COMMIT queued behind the group's statements committing what a failed
    statement voided, or the group's commit costing a round trip of its own again (the
    driver must be out of its transaction before SQLAlchemy's commit)."""
    import psycopg

    from leadhook.adapters.db.pipeline import Pipeline
    from leadhook.adapters.db.repositories import driver_in_transaction, unread

    def group(rows: list[str]) -> tuple[bool, Any]:
        with container.engine.connect() as conn:
            driver = driver_in_transaction(conn)
            pipe = Pipeline(conn, deferred=True)
            pipe.start()
            try:
                # A failed statement's error may be read at any later one (as the answers
                # arrive), or at the sync: the writer handles both alike, so does this.
                for row in rows:
                    unread(conn).execute(f"INSERT INTO {probe} VALUES ({row})")
                done = pipe.end_committing()
            except psycopg.Error as exc:
                pipe.abandon(exc)
                conn.rollback()
                return False, exc
            status = driver.info.transaction_status
            conn.commit()  # nothing left to commit: no round trip
            return done, status

    done, status = group(["1", "2"])
    assert done and status == psycopg.pq.TransactionStatus.IDLE
    assert _probed(container) == [1, 2]
    ok, error = group(["3", "1 / 0", "4"])  # the second fails: the COMMIT behind is skipped
    assert not ok and isinstance(error, psycopg.errors.DivisionByZero)
    assert _probed(container) == [1, 2]
    with container.engine.connect() as conn:
        assert not Pipeline(conn).end_committing()  # no pipeline running: nothing done


def _held_group(container: Container, tenant: str, trace: Any, units: list[Any]) -> list[Any]:
    """Run `units` in one deferred group on a connection of its own, libpq's protocol traced
    to the file `trace`; return what each answered."""
    from leadhook.adapters.db.pipeline import Pipeline, settle
    from leadhook.adapters.db.repositories import driver_in_transaction
    from leadhook.adapters.db.uow import BoundUnitOfWork

    with container.engine.connect() as conn, open(trace, "w") as out:
        driver = driver_in_transaction(conn)
        uow = BoundUnitOfWork(conn, container.ids)
        pipe = Pipeline(conn, deferred=True)
        driver.pgconn.trace(out.fileno())
        try:
            pipe.begin()
            answers = []
            for unit in units:
                pipe.start()
                answers.append(unit(uow))
            assert pipe.end_committing()
        finally:
            driver.pgconn.untrace()
        conn.commit()
        settle(conn)
        assert driver.autocommit is False  # psycopg begins the next transaction itself
    return answers


def _sent(trace: Any) -> list[str]:
    return [line.split("\t")[3] for line in trace.read_text().splitlines() if "\tF\t" in line]


def _create_unit(lead_id: str, event: NewEvent, sub: Subscription) -> Any:
    from leadhook.domain.lead import Lead

    def unit(uow: Any) -> None:
        uow.leads.add(Lead(lead_id, event.mid, 1, "b", None, "pool", "new"))
        (seq,) = uow.events.append([event])
        uow.deliveries.enqueue([(sub, seq, event)], 1_700_000_000.0)

    return unit


def test_a_deferred_groups_inserts_go_out_as_one_statement_a_table(
    container: Container, tenant: str, tmp_path: Any
) -> None:
    """Catches: each insert of a group's behaviours sent as a statement of its own (a send and
    a poll each, the writer thread giving up the GIL at each), or events taking their seqs out
    of the order their behaviours ran in. Read off libpq's protocol trace."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("deferred groups are PostgreSQL's")
    sub = _some_subscription(container, tenant)
    events = [_new_event(f"W{i}", 1, tenant) for i in range(5)]
    units = [_create_unit(f"W{i}", e, sub) for i, e in enumerate(events)]
    trace = tmp_path / "libpq.trace"
    _held_group(container, tenant, trace, units)
    # BEGIN, the log lock, the leads, the events, the deliveries, COMMIT; one sync.
    assert _sent(trace).count("Execute") == 6
    assert _sent(trace).count("Sync") == 1
    found = _delivered_seqs(container, tenant)
    seqs = [found[e.event_id][0] for e in events]
    assert seqs == sorted(seqs)  # in the order the behaviours ran
    assert all(log_seq == delivery_seq for log_seq, delivery_seq in found.values())
    assert _count(container, tenant) == 5


def test_a_deferred_group_of_batches_goes_out_in_chunks(
    container: Container, tenant: str, tmp_path: Any
) -> None:
    """Catches: a group of batch imports sent as one statement beyond PostgreSQL's 65,535
    parameters, or a chunk's rows lost, doubled or out of order."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("deferred groups are PostgreSQL's")
    from leadhook.adapters.db.writebehind import CHUNK
    from leadhook.domain.lead import Lead

    sub = _some_subscription(container, tenant)
    n = CHUNK + 150  # two batches, held together: 2n rows a table, three chunks of each

    def batch(prefix: str) -> Any:
        def unit(uow: Any) -> None:
            ids = [f"{prefix}{i:04d}" for i in range(n)]
            uow.leads.add_many([Lead(i, tenant, 1, "b", None, "pool", "new") for i in ids])
            events = [_new_event(i, 1, tenant) for i in ids]
            seqs = uow.events.append(events)
            uow.deliveries.enqueue(
                [(sub, s, e) for s, e in zip(seqs, events, strict=True)], 1_700_000_000.0
            )

        return unit

    trace = tmp_path / "libpq.trace"
    _held_group(container, tenant, trace, [batch("A"), batch("B")])
    # BEGIN, the lock, three chunks of each of the three tables, COMMIT.
    assert _sent(trace).count("Execute") == 3 + 3 * 3
    found = _delivered_seqs(container, tenant)
    assert len(found) == 2 * n
    order = sorted(found, key=lambda event_id: found[event_id][0])
    assert order == [f"E{p}{i:04d}0001" for p in "AB" for i in range(n)]
    assert all(log_seq == delivery_seq for log_seq, delivery_seq in found.values())


def test_a_read_in_a_deferred_group_sees_what_the_group_holds(
    container: Container, tenant: str, tmp_path: Any
) -> None:
    """Catches: a held insert sent after a read that follows it (the read would not find the
    group's own lead), or a statement that is not held overtaking a held one."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("deferred groups are PostgreSQL's")
    sub = _some_subscription(container, tenant)
    first = _create_unit("R1", _new_event("R1", 1, tenant), sub)

    def reader(uow: Any) -> Any:
        return uow.leads.get(tenant, "R1")

    def core_reader(uow: Any) -> int:  # SQLAlchemy Core ends the pipeline: held rows first

        return int(uow.leads.conn.execute(text("SELECT count(*) FROM events")).scalar_one())

    second = _create_unit("R2", _new_event("R2", 1, tenant), sub)
    _, events, lead, _ = _held_group(
        container, tenant, tmp_path / "t", [first, core_reader, reader, second]
    )
    assert lead is not None and lead.id == "R1"
    assert events == 1
    found = _delivered_seqs(container, tenant)
    assert found["ER10001"][0] < found["ER20001"][0]


def test_a_deferred_groups_begin_rides_with_its_first_reads(
    container: Container, tenant: str, tmp_path: Any
) -> None:
    """Catches: psycopg's own BEGIN in pipeline mode (sent with a sync and waited for) costing
    each group a round trip before its first read: the group's BEGIN, its tenant's read and
    the subscriptions' go out behind one flush. Read off libpq's protocol trace."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    _some_subscription(container, tenant)

    def reads(uow: Any) -> tuple[Any, Any]:
        return uow.tenants.get(tenant), uow.subscriptions.enabled_for(tenant)

    trace = tmp_path / "libpq.trace"
    ((found, subs),) = _held_group(container, tenant, trace, [reads])
    assert found is not None and len(subs) == 1
    sent = _sent(trace)
    assert sent.count("Execute") == 4  # BEGIN, the tenant, its subscriptions; the COMMIT
    reads = sent[: len(sent) - sent[::-1].index("Execute")]  # up to the COMMIT
    assert reads.count("Sync") + reads.count("Flush") == 1  # one round trip for the reads
    # The group's end: its one Sync (and a Flush if the answers were not all in yet).
    assert sent.count("Sync") == 1


def test_a_failed_deferred_group_leaves_nothing_and_its_connection_begins_again(
    container: Container, probe: str
) -> None:
    """Catches: a group begun in its pipeline (psycopg in autocommit meanwhile) committing
    part of its statements when one fails, or its connection left in autocommit, so that the
    units run again one by one, or the next group, would each commit statement by statement."""
    import psycopg

    from leadhook.adapters.db.pipeline import Pipeline, settle
    from leadhook.adapters.db.repositories import driver_in_transaction, unread

    with container.engine.connect() as conn:
        driver = driver_in_transaction(conn)
        pipe = Pipeline(conn, deferred=True)
        pipe.begin()
        assert driver.autocommit is True
        try:
            unread(conn).execute(f"INSERT INTO {probe} VALUES (1)")
            unread(conn).execute(f"INSERT INTO {probe} VALUES (1 / 0)")
            unread(conn).execute(f"INSERT INTO {probe} VALUES (2)")
            pipe.end_committing()
        except psycopg.Error as exc:
            pipe.abandon(exc)
            conn.rollback()
        settle(conn)
        assert driver.autocommit is False
        assert _probed(container) == []
        # The same connection, psycopg's BEGIN again: a failure undoes the whole transaction.
        driver_in_transaction(conn)
        unread(conn).execute(f"INSERT INTO {probe} VALUES (3)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            unread(conn).execute(f"INSERT INTO {probe} VALUES (1 / 0)")
        conn.rollback()
    assert _probed(container) == []


def test_the_writer_counts_its_transactions_by_way_and_they_reach_metrics(
    container: Container, tenant: str
) -> None:
    """Catches: groups that fell back from deferred to unit by unit going unseen (an operator
    reads how often on /metrics), or the units of a group miscounted."""
    from fastapi.testclient import TestClient

    from leadhook.api.app import create_app

    pg = container.engine.dialect.name == "postgresql"
    writer = GroupWriter(container.engine, container.gate, ids=container.ids, threads=1)

    def ok(uow: Any) -> int:
        return 1

    def fails(uow: Any) -> int:
        raise RuntimeError("this unit fails")

    def writes_and_fails(uow: Any) -> int:
        uow.tenants.conn.execute(  # a change, undone with the unit
            text("UPDATE tenants SET created_at = created_at WHERE mid = :mid"), {"mid": tenant}
        )
        raise RuntimeError("this unit fails after writing")

    try:
        for units in ([ok], [ok, ok, ok], [ok, fails], [ok, writes_and_fails]):
            held = threading.Event()
            writer.submit(lambda uow, held=held: held.wait(5))  # holds it while the group queues
            futures = [writer.submit(u) for u in units]
            held.set()
            for future in futures:
                future.exception(10)
        counts = writer.counts()
    finally:
        writer.close()
    # Four groups of one, three, two and two units, each behind a unit that held the writer.
    assert counts["units"] == (1 + 1) + (1 + 3) + (1 + 2) + (1 + 2)
    assert counts["deferred"] >= 1  # the three that succeeded together
    # A failing unit undoes a deferred group on PostgreSQL; on SQLite only one that wrote.
    assert counts["deferred_redone"] >= (2 if pg else 1)
    assert _transactions(counts) >= 4

    container.leads.create(_req(tenant), {"fields": {"name": "counted"}})
    with TestClient(create_app(container)) as client:
        page = client.get("/metrics").text
    assert 'leadhook_writer_transactions_total{way="one_by_one"}' in page
    assert 'leadhook_writer_transactions_total{way="deferred_redone"}' in page
    total = [ln for ln in page.splitlines() if ln.startswith("leadhook_writer_behaviours_total")]
    assert total and float(total[0].split()[-1]) >= 1


def test_an_error_read_when_the_pipeline_ends_taints_the_connection(
    container: Container,
) -> None:
    """Catches: a server error that surfaced only at the pipeline's end (a deferred group's
    single sync, or a Core statement ending it) leaving the connection in use with psycopg's
    record of prepared statements possibly wrong."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    import psycopg

    from leadhook.adapters.db.pipeline import Pipeline
    from leadhook.adapters.db.repositories import unread

    with container.engine.connect() as conn:
        pipe = Pipeline(conn, deferred=True)
        pipe.start()
        unread(conn).execute("SELECT 1 / 0")  # sent, not read
        with pytest.raises(psycopg.errors.DivisionByZero):
            pipe.end()
        assert pipe.tainted
        assert conn.connection.driver_connection.prepare_threshold is None
        conn.rollback()
        conn.invalidate()  # as the writer does with a tainted connection


@pytest.mark.postgres
def test_the_most_writer_threads_leave_connections_for_everything_else(
    postgres_url: str,
) -> None:
    """Catches: 16 writer threads each keeping a connection of a 16-connection pool, so the
    API's reads (authentication, listings) waited 30 s for one and serve wedged."""
    from leadhook.bootstrap import build
    from leadhook.settings import Settings

    c = build(Settings(database_url=postgres_url, writer_threads=32))
    try:
        mid = c.tenants.create("busy", "busy").tenant.mid
        futures = [
            c.leads.submit_create(_req(mid), {"fields": {"name": f"n{i}"}}) for i in range(96)
        ]
        results = [f.result(timeout=60) for f in futures]
        assert all(status == 201 for status, _ in results)
        # With as many connections held as there are writer threads (each keeps one while it
        # lives), reads still get one at once.
        held = [c.engine.connect() for _ in range(32)]
        done = threading.Event()

        def read() -> None:
            c.leads.list(mid, LeadFilter(), None, 5)
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert done.wait(10), "a read waited for a pool connection"
        reader.join()
        for conn in held:
            conn.close()
        assert _count(c, mid) == 96
    finally:
        c.close()


def test_on_postgresql_the_loop_waits_for_its_group_but_never_for_a_held_lock(
    container: Container, tenant: str
) -> None:
    """Catches: the loop's writes handed to the writer thread one by one as submitted, and
    the loop not waiting for their commit (the thread then waited for the GIL after every
    round trip while the loop served); and, the other way, the loop waiting for a group
    stuck on a row lock another session holds (every request of every tenant waiting)."""
    if container.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writes run on the loop itself (the tests above)")
    writer, leads = container.writer, container.leads
    assert writer is not None
    _, body = leads.submit_create(_req(tenant), {"fields": {"name": "held"}}).result(30)
    lead_id = json.loads(body)["lead"]["id"]

    async def scenario(holder: Any) -> tuple[list[float], list[int]]:
        # Idle threads: the turn's writes are committed when the loop comes back.
        gathered = [writer.submit(lambda uow, n=n: n) for n in range(3)]
        for _ in range(GATHER_TURNS + 1):
            await asyncio.sleep(0)
        assert all(f.done() for f in gathered)
        assert writer.counts()["units"] >= 3
        # A held row: the thread waits for it, the loop does not (at most one short wait).
        loop = asyncio.get_running_loop()
        gaps: list[float] = []
        first = leads.submit_perform(_req(tenant), "notes", lead_id, {"notes": "first"})
        second = None
        last = loop.time()
        for i in range(40):
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()
            if i == 5:
                second = leads.submit_perform(_req(tenant), "notes", lead_id, {"notes": "2"})
            writer.submit(lambda uow: None)  # more writes, each turn: none is waited for
        assert second is not None and not first.done() and not second.done()
        holder.rollback()
        answers = [await asyncio.wrap_future(f) for f in (first, second)]
        return gaps, [json.loads(b)["lead"]["version"] for _, b in answers]

    with container.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM leads WHERE id = :id FOR UPDATE"), {"id": lead_id})
        gaps, versions = asyncio.run(scenario(holder))
    assert versions == [2, 3]  # in the order they came, once the row was let go
    # One wait of LOOP_WAIT_FOR_GROUP (0.05 s) at most while the row is held, not one each
    # of the 40 turns that wrote (2 s more); a loaded machine's scheduling is the margin.
    assert max(gaps) < 0.25 and sum(gaps) < 1.2, gaps


def test_a_write_left_gathered_by_a_loop_is_written_when_the_writer_closes(
    container: Container, tenant: str
) -> None:
    """Catches: `close` running SQLite's PRAGMAs on a PostgreSQL connection (and so failing,
    the engine left undisposed) when a loop that gathered a write stopped before handing it
    over; and a write gathered after `close` queued to threads already gone."""
    writer = GroupWriter(container.engine, container.gate, ids=container.ids)
    loop = asyncio.new_event_loop()

    async def gather_only() -> Future[int]:
        return writer.submit(lambda uow: 7)

    try:
        left = loop.run_until_complete(gather_only())  # the loop stops before its next turn
    finally:
        loop.close()
    writer.close()
    assert left.result(timeout=10) == 7


def test_a_behaviour_waited_for_on_an_event_loop_is_refused_before_it_is_submitted(
    container: Container, tenant: str
) -> None:
    """Catches: `LeadService.create` (and the other waiting forms) called on an event loop:
    the writer commits what a loop submits when the loop comes round again, so the wait
    never ended and the loop hung."""

    async def on_the_loop() -> None:
        with pytest.raises(RuntimeError, match="await its submit_"):
            container.leads.create(_req(tenant), {"fields": {"name": "x"}})

    asyncio.run(on_the_loop())
    assert _count(container, tenant) == 0
