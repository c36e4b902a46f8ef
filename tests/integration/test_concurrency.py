"""Many writers on one lead at once: no lost update, no version gap, every event exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from leadhook.bootstrap import Container, build
from leadhook.domain.events import parse_event_json
from leadhook.domain.operator import SYSTEM
from leadhook.domain.replay import fold
from leadhook.services.leads import BehaviourRequest, LeadService
from leadhook.services.ports import LeadFilter
from leadhook.settings import Settings

STEPS = 10


class TickingClock:
    """A clock that moves one second on every reading, so every behaviour has its own time."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += 1
            return self._now


@pytest.fixture
def container(database_url: str) -> Iterator[Container]:
    c = build(Settings(database_url=database_url), clock=TickingClock())
    try:
        c.tenants.create("t1")
        for kind, key, body in (
            ("members", "m1", {"name": "王五"}),
            ("members", "m2", {"name": "李四"}),
            ("lead_statuses", "s1", {"name": "一"}),
            ("lead_statuses", "s2", {"name": "二"}),
        ):
            c.tenants.put_catalog_entry("t1", kind, key, body)
        yield c
    finally:
        c.close()


def _writers(database_url: str) -> int:
    # SQLite has one writer at a time by design; PostgreSQL takes 16 at once.
    return 4 if make_url(database_url).get_backend_name() == "sqlite" else 16


def _behaviour(worker: int, step: int) -> tuple[str, dict[str, Any]]:
    """A mix of behaviours; some change nothing when another writer got there first."""
    tag = f"w{worker}s{step}"
    choices: list[tuple[str, dict[str, Any]]] = [
        ("notes", {"notes": tag, "is_follow_up": step % 2 == 0}),
        ("update", {"fields": {"name": tag, "title": f"title {worker}"}}),
        ("status", {"leads_status": "s1" if step % 2 else "s2"}),
        ("owner", {"owner": "m1" if worker % 2 else "m2", "scene_type": 2}),
        ("life_cycle", {"life_status": ("mql", "sql", "customer")[step % 3]}),
        ("add_team_members", {"members": ["m1", "m2"][: 1 + step % 2]}),
        ("remove_team_member", {"member_id": "m1"}),
        ("relation", {"target_object_name": "account", "target_entity_id": tag}),
        ("source", {"fields": {"utm_source": tag}}),
        ("lead_pool", {"lead_pool": "sales" if step % 2 else "market"}),
    ]
    return choices[(worker + step) % len(choices)]


def _run_concurrently(container: Container, lead_id: str, writers: int) -> list[dict[str, Any]]:
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(worker: int) -> list[dict[str, Any]]:
        barrier.wait()
        answers = []
        for step in range(STEPS):
            name, args = _behaviour(worker, step)
            try:
                status, body = container.leads.perform(
                    BehaviourRequest(mid="t1", operator=SYSTEM), name, lead_id, args
                )
            except BaseException as exc:  # every behaviour must succeed: record, then fail
                errors.append(exc)
                raise
            assert status == 200
            answers.append(json.loads(body))
        return answers

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(writer, range(writers)))
    assert not errors, errors
    return [answer for answers in results for answer in answers]


def test_concurrent_writers_on_one_lead(container: Container, database_url: str) -> None:
    c = container
    _, body = c.leads.create(
        BehaviourRequest(mid="t1", operator=SYSTEM), {"fields": {"name": "start"}}
    )
    lead_id = json.loads(body)["lead"]["id"]
    writers = _writers(database_url)
    answers = _run_concurrently(c, lead_id, writers)
    assert len(answers) == writers * STEPS

    with c.readonly_uow() as u:
        log = u.events.for_entity("t1", lead_id)
        stored = u.leads.get("t1", lead_id)
    assert stored is not None
    versions = [e.entity_version for e in log]
    # Versions 1..N without a gap, and the lead is at N.
    assert versions == list(range(1, len(log) + 1))
    assert stored.version == len(log)
    # Every event an answer reported is in the log exactly once, and nothing else is.
    reported = [e["event_id"] for a in answers for e in a["events"]]
    assert len(reported) == len(set(reported))
    assert set(reported) == {e.event_id for e in log[1:]}
    assert len({e.event_id for e in log}) == len(log)
    # Each answer's lead is at the version of its last event; no-ops answer with a lead at
    # or before the final version.
    for answer in answers:
        if answer["events"]:
            assert answer["lead"]["version"] == answer["events"][-1]["entity_version"]
    # The events in an answer are exactly the stored ones (same JSON).
    by_id = {e.event_id: e.payload for e in log}
    for answer in answers:
        for event in answer["events"]:
            assert json.loads(by_id[event["event_id"]]) == event
    # Time never runs backwards along the versions, and the log rebuilds the lead.
    events = [parse_event_json(e.payload) for e in log]
    times = [e.create_time for e in events]
    assert times == sorted(times), "create_time goes back along entity_version"
    catalog = c.tenants.get("t1").catalog
    assert fold(catalog, events) == stored
    # Most behaviours changed something: the test really raced writers on one lead.
    assert len(log) > writers * STEPS // 2


def test_concurrent_retries_of_one_idempotent_request(
    container: Container, database_url: str
) -> None:
    c = container
    writers = _writers(database_url)
    barrier = threading.Barrier(writers)

    def create(_: int) -> tuple[int, str]:
        barrier.wait()
        req = BehaviourRequest(mid="t1", operator=SYSTEM, idempotency_key="once", fingerprint="fp")
        return c.leads.create(req, {"fields": {"name": "only one"}})

    with ThreadPoolExecutor(writers) as pool:
        answers = list(pool.map(create, range(writers)))
    assert set(answers) == {answers[0]}
    assert answers[0][0] == 201
    with c.readonly_uow() as u:
        page = u.leads.page("t1", LeadFilter(), None, 100)
        events = u.events.page("t1", after=None, event_type=None, entity_id=None, limit=100)
    assert len(page.data) == 1 and len(events.data) == 1


def test_concurrent_creates_and_reads(container: Container, database_url: str) -> None:
    """Writers on many leads while readers page the log: readers never see a torn write."""
    c = container
    writers = _writers(database_url)
    stop = threading.Event()
    seen_errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                body = json.loads(
                    c.events.list("t1", after=None, event_type=None, entity_id=None, limit=1000)
                )
                leads, _ = c.leads.list("t1", LeadFilter(), None, 500)
                versions = {lead.id: lead.version for lead in leads}
                for event in body["data"]:
                    assert versions[event["extra_data"]["entity_id"]] >= event["entity_version"]
            except BaseException as exc:
                seen_errors.append(exc)
                return

    def writer(worker: int) -> None:
        for step in range(STEPS):
            _, body = c.leads.create(
                BehaviourRequest(mid="t1", operator=SYSTEM),
                {"fields": {"name": f"{worker}-{step}"}},
            )
            lead_id = json.loads(body)["lead"]["id"]
            c.leads.perform(
                BehaviourRequest(mid="t1", operator=SYSTEM), "notes", lead_id, {"notes": "n"}
            )

    read_thread = threading.Thread(target=reader)
    read_thread.start()
    run: Callable[[int], None] = writer
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(run, range(writers)))
    stop.set()
    read_thread.join()
    assert not seen_errors, seen_errors
    body = json.loads(c.events.list("t1", after=None, event_type=None, entity_id=None, limit=1000))
    assert len(body["data"]) == writers * STEPS * 2


class _HoldAfterAppend:
    """A unit of work that, once its events are appended, waits for `release` before going on."""

    def __init__(self, inner: Any, appended: threading.Event, release: threading.Event) -> None:
        self._inner, self._appended, self._release = inner, appended, release

    def __enter__(self) -> _HoldAfterAppend:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)

    def commit(self) -> None:
        self._appended.set()
        assert self._release.wait(30)
        self._inner.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_reader_following_after_never_skips_an_event(container: Container) -> None:
    """A writer that took its seq first but commits last is not skipped by a reader's cursor."""
    c = container
    appended, release = threading.Event(), threading.Event()
    slow = LeadService(lambda: _HoldAfterAppend(c.uow(), appended, release), c.clock, c.ids)  # type: ignore[arg-type,return-value]
    req = BehaviourRequest(mid="t1", operator=SYSTEM)

    def read(after: str | None) -> list[dict[str, Any]]:
        body = c.events.list("t1", after=after, event_type=None, entity_id=None, limit=100)
        data: list[dict[str, Any]] = json.loads(body)["data"]
        return data

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(slow.create, req, {"fields": {"name": "first, committed last"}})
        assert appended.wait(30)
        # The second writer is not held up by the first (on PostgreSQL it commits at once).
        second = pool.submit(c.leads.create, req, {"fields": {"name": "second"}})
        time.sleep(0.3)
        reading = pool.submit(read, None)
        time.sleep(0.3)
        release.set()
        first.result(30)
        second.result(30)
        consumed = reading.result(30)
    after = consumed[-1]["event_id"] if consumed else None
    consumed += read(after)
    names = sorted(e["extra_data"]["mapping_data"]["name"][0] for e in consumed)
    assert names == ["first, committed last", "second"]
    assert [e["event_id"] for e in consumed] == [e["event_id"] for e in read(None)]
