"""The services on the in-memory fakes: tenants, keys, catalog, behaviours, events, idempotency."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from leadhook.adapters.memory import FakeClock, MemoryStore, MemoryUnitOfWork, SequentialIds
from leadhook.api import bodies
from leadhook.domain.catalog import Catalog
from leadhook.domain.errors import (
    BadRequestError,
    ConflictError,
    LeadVoidedError,
    NotFoundError,
    UnauthorizedError,
    ValidationError,
    VersionMismatchError,
)
from leadhook.domain.events import parse_event_json
from leadhook.domain.operator import SYSTEM, Operator
from leadhook.domain.replay import fold
from leadhook.domain.times import rfc3339
from leadhook.services.events import EventService
from leadhook.services.idempotency import Idempotent, fingerprint
from leadhook.services.leads import BEHAVIOURS, BehaviourRequest, LeadService
from leadhook.services.ports import (
    InlineTransactor,
    LeadFilter,
    StoredResponse,
    Subscription,
    UnitOfWork,
    UnitOfWorkFactory,
)
from leadhook.services.tenants import AUTH_CACHE_SECONDS, TenantService, hash_key
from leadhook.services.wakeup import Wakeup

START = 1_676_962_253.0


class World:
    """The services wired on one in-memory store, with a fake clock and repeatable ids."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock(START)
        self.ids = SequentialIds()
        self.notified = 0
        self.tenants = TenantService(self.store.uow, self.clock, self.ids)
        self.leads = LeadService(self.store.uow, self.clock, self.ids, on_enqueued=self._notify)
        self.events = EventService(self.store.uow)

    def _notify(self) -> None:
        self.notified += 1

    def req(self, mid: str = "t1", **kwargs: Any) -> BehaviourRequest:
        return BehaviourRequest(mid=mid, operator=kwargs.pop("operator", SYSTEM), **kwargs)

    def create(self, **args: Any) -> dict[str, Any]:
        status, body = self.leads.create(self.req(), args)
        assert status == 201
        lead: dict[str, Any] = json.loads(body)["lead"]
        return lead

    def perform(self, behaviour: str, lead_id: str, **args: Any) -> dict[str, Any]:
        status, body = self.leads.perform(self.req(), behaviour, lead_id, args)
        assert status == 200
        answer: dict[str, Any] = json.loads(body)
        return answer

    def log(self, mid: str = "t1") -> list[Any]:
        with self.store.uow() as u:
            return u.events.page(
                mid, after=None, event_type=None, entity_id=None, limit=10_000
            ).data

    def subscribe(
        self, sub_id: str, event_types: tuple[str, ...] = ("*",), enabled: bool = True
    ) -> None:
        with self.store.uow() as u:
            u.subscriptions.add(
                Subscription(
                    id=sub_id,
                    mid="t1",
                    url=f"https://example.com/{sub_id}",
                    event_types=event_types,
                    description="",
                    enabled=enabled,
                    secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
                    max_in_flight=1,
                    rate_limit_per_s=None,
                    created_at=START,
                    updated_at=START,
                )
            )
            u.commit()

    def deliveries(self, sub_id: str) -> list[Any]:
        with self.store.uow() as u:
            return u.deliveries.page("t1", sub_id, None, None, 10_000).data


@pytest.fixture
def world() -> World:
    w = World()
    w.tenants.create("t1", "Tenant One")
    for kind, key, body in (
        ("members", "m1", {"name": "王五"}),
        ("members", "m2", {"name": "李四"}),
        ("lead_statuses", "s1", {"name": "新"}),
        ("objects", "account", {"name": "客户", "object_id": "12"}),
    ):
        w.tenants.put_catalog_entry("t1", kind, key, body)
    return w


# ---- tenants, keys, catalog ------------------------------------------------------------------


def test_create_tenant_keeps_only_the_key_hash() -> None:
    w = World()
    made = bodies.new_tenant(w.tenants.create("941", "Acme", "Europe/Paris", "77")).model_dump()
    key = made["api_key"]
    assert key.startswith("lh_")
    assert (
        made["timezone"] == "Europe/Paris" and made["object_id"] == "77" and made["name"] == "Acme"
    )
    rows = list(w.store.state.keys.values())
    assert [(r.key.id, r.key_hash) for r in rows] == [
        (made["key_id"], hashlib.sha256(key.encode()).hexdigest())
    ]
    assert key not in repr(w.store.state)
    assert w.tenants.authenticate(key) == "941"
    assert w.tenants.get("941").catalog.timezone == "Europe/Paris"
    with pytest.raises(ConflictError):
        w.tenants.create("941")


@pytest.mark.parametrize(
    ("args", "loc"),
    [
        ((None,), ("body", "mid")),
        ((941,), ("body", "mid")),
        (("bad mid",), ("body", "mid")),
        (("ok", ""), ("body", "name")),
        (("ok", None, "Nowhere/City"), ("body", "timezone")),
        (("ok", None, None, "a b"), ("body", "object_id")),
        (("ok", 5), ("body", "name")),
    ],
)
def test_create_tenant_validates(args: tuple[Any, ...], loc: tuple[str, ...] | None) -> None:
    w = World()
    with pytest.raises(ValidationError) as err:
        w.tenants.create(*args)
    assert err.value.errors[0].loc == loc
    assert w.store.state.tenants == {}


def test_authenticate_issue_and_revoke(world: World) -> None:
    w = world
    for bad in (None, "", "lh_nope"):
        with pytest.raises(UnauthorizedError):
            w.tenants.authenticate(bad)
    issued = bodies.new_key(w.tenants.issue_key("t1")).model_dump()
    assert w.tenants.authenticate(issued["api_key"]) == "t1"
    keys = bodies.keys(w.tenants.list_keys("t1")).model_dump()["data"]
    assert len(keys) == 2 and all("api_key" not in k for k in keys)
    w.clock.advance(5)
    w.tenants.revoke_key("t1", issued["id"])
    with pytest.raises(UnauthorizedError):
        w.tenants.authenticate(issued["api_key"])
    revoked = next(k for k in w.tenants.list_keys("t1") if k.id == issued["id"])
    assert bodies.key(revoked).revoked_at == rfc3339(START + 5)
    w.tenants.revoke_key("t1", issued["id"])  # again: harmless
    for call in (
        lambda: w.tenants.revoke_key("t1", "nope"),
        lambda: w.tenants.revoke_key("t2", issued["id"]),
        lambda: w.tenants.issue_key("t2"),
        lambda: w.tenants.list_keys("t2"),
        lambda: w.tenants.get("t2"),
        lambda: w.tenants.catalog("t2"),
        lambda: w.tenants.put_catalog_entry("t2", "members", "m", {"name": "x"}),
    ):
        with pytest.raises(NotFoundError):
            call()


def _entry(catalog: Catalog, kind: str, key: str) -> dict[str, Any]:
    return bodies.catalog_entry(catalog, kind, key).model_dump(exclude_unset=True)


def test_catalog_entries(world: World) -> None:
    w = world
    entry = _entry(
        w.tenants.put_catalog_entry("t1", "members", "m3", {"name": "张三", "omni_user_uuid": "u"}),
        "members",
        "m3",
    )
    assert entry == {"id": "m3", "name": "张三", "omni_user_uuid": "u", "operator_id": None}
    assert _entry(w.tenants.catalog_entry("t1", "members", "m3"), "members", "m3") == entry
    lost = w.tenants.put_catalog_entry("t1", "life_stages", "lost", {"name": "流失"})
    assert _entry(lost, "life_stages", "lost")["order"] == 5
    catalog = bodies.catalog(w.tenants.catalog("t1")).model_dump(exclude_unset=True)
    assert [m["id"] for m in catalog["members"]] == ["m1", "m2", "m3"]
    with pytest.raises(ValidationError):
        w.tenants.put_catalog_entry("t1", "members", "m4", {})
    with pytest.raises(NotFoundError):
        w.tenants.put_catalog_entry("t1", "widgets", "x", {"name": "x"})
    assert [m.id for m in w.tenants.catalog("t1").members.values()] == ["m1", "m2", "m3"]
    with pytest.raises(NotFoundError):
        w.tenants.catalog_entry("t1", "members", "m9")
    with pytest.raises(NotFoundError):
        w.tenants.catalog_entry("t1", "widgets", "m3")


def test_a_conflicting_binding_changes_nothing(world: World) -> None:
    w = world
    w.tenants.put_catalog_entry("t1", "members", "m1", {"name": "甲", "operator_id": 17})
    with pytest.raises(ConflictError):
        w.tenants.put_catalog_entry("t1", "members", "m2", {"name": "乙二", "operator_id": 17})
    assert (
        _entry(w.tenants.catalog_entry("t1", "members", "m1"), "members", "m1")["operator_id"] == 17
    )
    m2 = _entry(w.tenants.catalog_entry("t1", "members", "m2"), "members", "m2")
    assert m2["name"] != "乙二" and m2["operator_id"] is None


# ---- lead behaviours ------------------------------------------------------------------------


def test_create_writes_lead_event_and_answer_together(world: World) -> None:
    w = world
    status, body = w.leads.create(w.req(), {"fields": {"name": "张三"}, "owner": "m1"})
    assert status == 201
    answer = json.loads(body)
    lead = answer["lead"]
    [event] = w.log()
    assert (
        body
        == '{"lead":'
        + json.dumps(lead, ensure_ascii=False, separators=(",", ":"))
        + ',"events":['
        + event.payload
        + "]}"
    )
    assert (event.entity_id, event.entity_version, event.event_type) == (
        lead["id"],
        1,
        "object_create",
    )
    assert event.create_time == int(START) and answer["events"][0]["create_time"] == int(START)
    assert w.leads.get("t1", lead["id"]).to_api_json() == lead
    assert lead["business_type"] == w.tenants.get("t1").catalog.default_business_type


ARGS: dict[str, dict[str, Any]] = {
    "update": {"fields": {"name": "new"}},
    "status": {"leads_status": "s1"},
    "owner": {"owner": "m2", "scene_type": 2},
    "life_cycle": {"life_status": "mql"},
    "lead_pool": {"lead_pool": "sales"},
    "notes": {"notes": "hello", "is_follow_up": True},
    "add_team_members": {"members": ["m1", "m2"]},
    "remove_team_member": {"member_id": "m1"},
    "void": {"reason": "dup"},
    "restore": {},
    "relation": {"target_object_name": "account", "target_entity_id": "a1"},
    "source": {"fields": {"utm_source": "wx"}},
}


def test_every_behaviour_emits_at_the_next_version(world: World) -> None:
    w = world
    assert set(ARGS) == set(BEHAVIOURS)
    lead_id = w.create(fields={"name": "old"})["id"]
    version = 1
    for name, args in ARGS.items():
        w.clock.advance(60)
        answer = w.perform(name, lead_id, **args)
        assert len(answer["events"]) == 1, name
        version += 1
        assert answer["lead"]["version"] == answer["events"][0]["entity_version"] == version
        assert answer["events"][0]["create_time"] == int(w.clock())
        assert w.leads.get("t1", lead_id).to_api_json() == answer["lead"]
    events = [parse_event_json(e.payload) for e in w.log()]
    assert [e.entity_version for e in events] == list(range(1, version + 1))
    assert fold(w.tenants.get("t1").catalog, events) == w.leads.get("t1", lead_id)


def test_no_op_writes_nothing_and_errors_write_nothing(world: World) -> None:
    w = world
    lead_id = w.create(fields={"name": "same"}, owner="m1")["id"]
    state = w.store.state
    for name, args in (
        ("update", {"fields": {"name": "same"}}),
        ("owner", {"owner": "m1", "scene_type": 2}),
        ("restore", {}),
        ("remove_team_member", {"member_id": "m2"}),
    ):
        assert w.perform(name, lead_id, **args)["events"] == []
    assert w.store.state.events == state.events and w.store.state.leads == state.leads
    for name, args, error in (
        ("update", {"fields": {"nope": 1}}, ValidationError),
        ("owner", {"owner": "ghost", "scene_type": 2}, ValidationError),
        ("notes", {"notes": ""}, ValidationError),
    ):
        with pytest.raises(error):
            w.leads.perform(w.req(), name, lead_id, args)
    with pytest.raises(NotFoundError):
        w.leads.perform(w.req(), "notes", "nope", {"notes": "x"})
    with pytest.raises(NotFoundError):
        w.leads.perform(w.req(mid="t2"), "notes", lead_id, {"notes": "x"})
    assert len(w.log()) == 1


def test_voided_leads_refuse_all_but_restore(world: World) -> None:
    w = world
    lead_id = w.create()["id"]
    w.perform("void", lead_id)
    for name, args in ARGS.items():
        if name == "restore":
            continue
        with pytest.raises(LeadVoidedError):
            w.leads.perform(w.req(), name, lead_id, args)
    assert [e.event_type for e in w.log()] == ["object_create", "object_voids"]
    assert w.perform("restore", lead_id)["lead"]["voided"] is False


def test_if_match(world: World) -> None:
    w = world
    lead_id = w.create()["id"]
    with pytest.raises(VersionMismatchError):
        w.leads.perform(w.req(if_match=2), "notes", lead_id, {"notes": "x"})
    status, _ = w.leads.perform(w.req(if_match=1), "notes", lead_id, {"notes": "x"})
    assert status == 200
    with pytest.raises(VersionMismatchError):
        w.leads.perform(w.req(if_match=1), "notes", lead_id, {"notes": "x"})


def test_operator_travels_into_events(world: World) -> None:
    w = world
    op = Operator(
        operator_type=1, operator_id=17, login_platform="jingsocial", login_environment="pc"
    )
    _, body = w.leads.create(w.req(operator=op), {})
    extra = json.loads(body)["events"][0]["extra_data"]
    assert (extra["operator_type"], extra["operator_id"], extra["login_platform"]) == (
        1,
        17,
        "jingsocial",
    )


def test_deliveries_go_to_the_subscriptions_that_want_the_event(world: World) -> None:
    w = world
    w.subscribe("all")
    w.subscribe("notes", ("object_add_notes",))
    w.subscribe("off", enabled=False)
    lead_id = w.create()["id"]
    w.perform("notes", lead_id, notes="x")
    w.perform("update", lead_id, fields={"name": "y"})
    assert [(d.event_type, d.entity_version) for d in w.deliveries("all")] == [
        ("object_update", 3),
        ("object_add_notes", 2),
        ("object_create", 1),
    ]
    assert [d.event_type for d in w.deliveries("notes")] == ["object_add_notes"]
    assert w.deliveries("off") == []
    assert all(d.status == "pending" and d.next_attempt_at == START for d in w.deliveries("all"))
    event_ids = {e.event_id for e in w.log()}
    assert {d.event_id for d in w.deliveries("all")} == event_ids
    assert w.notified == 3  # once per committed behaviour


def test_the_dispatcher_is_woken_only_when_deliveries_were_enqueued(world: World) -> None:
    w = world
    w.subscribe("notes only", ("object_add_notes",))
    lead_id = w.create()["id"]  # no subscriber wants object_create
    w.perform("update", lead_id, fields={"name": "y"})
    assert w.notified == 0
    w.perform("notes", lead_id, notes="x")
    assert w.notified == 1


class Boom(Exception):
    """The failure injected into a unit of work."""


def _failing(store: MemoryStore, repo: str, method: str) -> Callable[[], UnitOfWork]:
    """Units of work on `store` whose `repo.method` raises `Boom`."""

    class Failing(MemoryUnitOfWork):
        def __enter__(self) -> Failing:
            super().__enter__()

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise Boom(method)

            setattr(getattr(self, repo), method, fail)
            return self

    return lambda: Failing(store)


@pytest.mark.parametrize(("repo", "method"), [("deliveries", "enqueue"), ("idempotency", "put")])
def test_a_failed_unit_of_work_changes_nothing(world: World, repo: str, method: str) -> None:
    w = world
    w.subscribe("all")
    lead_id = w.create()["id"]
    before = w.store.state
    failing = LeadService(_failing(w.store, repo, method), w.clock, w.ids, on_enqueued=lambda: None)
    with pytest.raises(Boom):
        failing.perform(w.req(idempotency_key="k"), "notes", lead_id, {"notes": "x"})
    with pytest.raises(Boom):
        failing.create_many(w.req(idempotency_key="k"), [{}, {}])
    assert w.store.state is before
    assert w.leads.get("t1", lead_id).version == 1


def test_create_many(world: World) -> None:
    w = world
    status, body = w.leads.create_many(w.req(), [{"fields": {"name": f"n{i}"}} for i in range(5)])
    assert status == 201
    data = json.loads(body)["data"]
    assert [d["lead"]["fields"]["name"] for d in data] == [f"n{i}" for i in range(5)]
    assert [e.event_type for e in w.log()] == ["object_create"] * 5
    with pytest.raises(ValidationError) as err:
        w.leads.create_many(w.req(), [{}, {}, {"fields": {"nope": 1}}])
    assert err.value.errors[0].loc == ("body", "leads", 2, "fields", "nope")
    assert err.value.detail.startswith("body.leads.2.fields.nope: ")
    assert len(w.log()) == 5


def test_listing_and_timeline(world: World) -> None:
    w = world
    ids = [w.create(owner="m1" if i % 2 else None)["id"] for i in range(5)]
    for i in range(4):
        w.perform("notes", ids[0], notes=f"n{i}", is_follow_up=i % 2 == 1)
    leads, cursor = w.leads.list("t1", LeadFilter(), None, 2)
    assert [lead.id for lead in leads] == ids[:2] and cursor is not None
    leads, cursor = w.leads.list("t1", LeadFilter(), cursor, 10)
    assert [lead.id for lead in leads] == ids[2:] and cursor is None
    owned, _ = w.leads.list("t1", LeadFilter(owner="m1"), None, 10)
    assert [lead.id for lead in owned] == [ids[1], ids[3]]
    timeline = json.loads(w.leads.timeline("t1", ids[0], None, None, 10))
    assert [e["entity_version"] for e in timeline["data"]] == [5, 4, 3, 2, 1]
    follow = json.loads(w.leads.timeline("t1", ids[0], 1, None, 1))
    assert [e["extra_data"]["notes"] for e in follow["data"]] == ["n3"]
    rest = json.loads(w.leads.timeline("t1", ids[0], 1, follow["next_cursor"], 1))
    assert [e["extra_data"]["notes"] for e in rest["data"]] == ["n1"]
    with pytest.raises(NotFoundError):
        w.leads.timeline("t2", ids[0], None, None, 10)
    with pytest.raises(NotFoundError):
        w.leads.get("t2", ids[0])
    with pytest.raises(BadRequestError):
        w.leads.list("t1", LeadFilter(), "garbage", 10)


# ---- events ----------------------------------------------------------------------------------


def test_event_service_serves_the_stored_text(world: World) -> None:
    w = world
    lead_id = w.create()["id"]
    w.perform("notes", lead_id, notes='中文 "quote"')
    payloads = [e.payload for e in w.log()]
    listed = w.events.list("t1", after=None, event_type=None, entity_id=None, limit=10)
    assert listed == '{"data":[' + ",".join(payloads) + '],"next_cursor":null}'
    first = json.loads(payloads[0])["event_id"]
    page = w.events.list("t1", after=None, event_type=None, entity_id=None, limit=1)
    assert page == '{"data":[' + payloads[0] + '],"next_cursor":"' + first + '"}'
    assert w.events.get("t1", first) == payloads[0]
    assert w.events.list(
        "t1", after=first, event_type="object_add_notes", entity_id=lead_id, limit=5
    ) == ('{"data":[' + payloads[1] + '],"next_cursor":null}')
    with pytest.raises(ValidationError) as err:
        w.events.list("t1", after=None, event_type="object_nope", entity_id=None, limit=5)
    assert err.value.errors[0].loc == ("query", "event_type")
    with pytest.raises(NotFoundError):
        w.events.get("t2", first)
    with pytest.raises(BadRequestError):
        w.events.list("t2", after=first, event_type=None, entity_id=None, limit=5)


# ---- idempotency -----------------------------------------------------------------------------


def _run(idem: Idempotent, uow: UnitOfWorkFactory, *args: Any) -> tuple[int, str]:
    """Submit through a transactor that commits each unit of work at once, and wait."""
    return idem.submit(InlineTransactor(uow), *args).result()


def test_idempotent_runs_once_and_replays() -> None:
    store = MemoryStore()
    idem = Idempotent(FakeClock())
    calls: list[int] = []
    after: list[int] = []

    def work(u: UnitOfWork) -> tuple[int, str]:
        calls.append(1)
        return 201, '{"n":' + str(len(calls)) + "}"

    first = _run(idem, store.uow, "t1", "k", "fp", work, lambda: after.append(1))
    again = _run(idem, store.uow, "t1", "k", "fp", work, lambda: after.append(1))
    assert first == again == (201, '{"n":1}')
    assert (len(calls), len(after)) == (1, 1)
    with pytest.raises(ConflictError):
        _run(idem, store.uow, "t1", "k", "other", work, lambda: None)
    assert _run(idem, store.uow, "t2", "k", "other", work, lambda: None) == (201, '{"n":2}')
    assert _run(idem, store.uow, "t1", None, "fp", work, lambda: None) == (201, '{"n":3}')
    assert _run(idem, store.uow, "t1", None, "fp", work, lambda: None) == (201, '{"n":4}')


def test_idempotent_stores_nothing_when_the_work_fails() -> None:
    store = MemoryStore()
    idem = Idempotent(FakeClock())

    def fail(u: UnitOfWork) -> tuple[int, str]:
        raise ValidationError.at(("body",), "bad")

    with pytest.raises(ValidationError):
        _run(idem, store.uow, "t1", "k", "fp", fail, lambda: None)
    assert _run(idem, store.uow, "t1", "k", "fp", lambda u: (200, "{}"), lambda: None) == (
        200,
        "{}",
    )


def test_idempotent_answers_what_a_concurrent_twin_answered() -> None:
    """Two requests with one key race: the loser's work is undone, and it answers the winner's."""
    store = MemoryStore()
    idem = Idempotent(FakeClock())

    def racing(u: UnitOfWork) -> tuple[int, str]:
        # The twin commits while this request is still working (a nested unit of work here).
        _run(idem, store.uow, "t1", "k", "fp", lambda v: (201, '{"winner":true}'), lambda: None)
        u.leads.add_many([])
        return 201, '{"winner":false}'

    assert _run(idem, store.uow, "t1", "k", "fp", racing, lambda: None) == (201, '{"winner":true}')
    with pytest.raises(ConflictError):
        _run(idem, store.uow, "t1", "k", "fp2", lambda u: (200, "{}"), lambda: None)


def test_fingerprint_tells_requests_apart() -> None:
    base = fingerprint("POST", "/v1/leads", b"{}")
    assert base == fingerprint("post", "/v1/leads", b"{}")
    assert (
        len(
            {
                base,
                fingerprint("PUT", "/v1/leads", b"{}"),
                fingerprint("POST", "/v1/leads/x", b"{}"),
            }
        )
        == 3
    )
    assert fingerprint("POST", "/v1/leads", b"{} ") != base
    # Length-prefixed: moving a byte from the path to the body is another request.
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/", b"ab")


# ---- the memory store itself -------------------------------------------------------------------


def test_a_memory_unit_of_work_sees_a_snapshot() -> None:
    store = MemoryStore()
    with store.uow() as u:
        u.idempotency.put("t1", "k", StoredResponse("fp", 200, "{}"), START)
        snapshot = store.state
        assert store.state.idempotency == {}  # not published yet
        u.commit()
        assert store.state is not snapshot
    with store.uow() as u:
        assert u.idempotency.get("t1", "k") is not None
    with pytest.raises(RuntimeError):
        _ = u.leads  # repositories are gone with their unit of work


def test_wakeup_calls_listeners_until_they_stop() -> None:
    wakeup = Wakeup()
    calls: list[str] = []
    stop_a = wakeup.listen(lambda: calls.append("a"))
    wakeup.listen(lambda: calls.append("b"))
    wakeup.notify()
    stop_a()
    stop_a()  # twice is harmless
    wakeup.notify()
    assert calls == ["a", "b", "b"]


def test_wakeup_tells_a_stopped_subscription_apart_from_waiting_work() -> None:
    wakeup = Wakeup()
    calls: list[str] = []
    wakeup.listen(lambda: calls.append("waiting"))
    stop = wakeup.listen_stopped(lambda: calls.append("stopped"))
    wakeup.notify_stopped()
    wakeup.notify()
    stop()
    wakeup.notify_stopped()
    assert calls == ["stopped", "waiting"]


def test_a_disable_or_a_delete_tells_the_delivery_loops_and_nothing_else_does() -> None:
    from leadhook.services.subscriptions import SubscriptionService

    store, clock, ids = MemoryStore(), FakeClock(START), SequentialIds()
    TenantService(store.uow, clock, ids).create("t1", "Tenant One")
    told: list[str] = []

    def sender() -> Any:
        raise AssertionError("nothing is sent")

    subs = SubscriptionService(
        store.uow,
        clock,
        ids,
        sender,
        allow_private=True,
        on_enqueued=lambda: told.append("waiting"),
        on_stopped=lambda: told.append("stopped"),
    )
    sub = subs.create("t1", {"url": "https://example.com/a", "event_types": ["*"]})
    subs.update("t1", sub.id, {"description": "crm"})
    subs.update("t1", sub.id, {"enabled": False})
    subs.update("t1", sub.id, {"enabled": False})  # already disabled: nothing changes
    subs.update("t1", sub.id, {"enabled": True})
    subs.update("t1", sub.id, {"enabled": False, "url": "https://example.com/b"})
    subs.delete("t1", sub.id)
    assert told == ["stopped", "waiting", "waiting", "stopped", "stopped"]


def test_hash_key_is_sha256() -> None:
    assert hash_key("lh_x") == hashlib.sha256(b"lh_x").hexdigest()


def test_a_revoked_key_fails_at_once_here_and_within_the_auth_cache_elsewhere() -> None:
    store, clock, ids = MemoryStore(), FakeClock(START), SequentialIds()
    here = TenantService(store.uow, clock, ids)
    elsewhere = TenantService(store.uow, clock, ids)  # another process on the same database
    created = here.create("t1")
    key = created.api_key
    assert here.authenticate(key) == "t1" and elsewhere.authenticate(key) == "t1"
    here.revoke_key("t1", created.key.id)
    with pytest.raises(UnauthorizedError):
        here.authenticate(key)
    assert elsewhere.authenticate(key) == "t1"  # still cached
    clock.advance(AUTH_CACHE_SECONDS + 0.01)
    with pytest.raises(UnauthorizedError):
        elsewhere.authenticate(key)
