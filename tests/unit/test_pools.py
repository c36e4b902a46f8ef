"""Lead pools that run themselves, on the in-memory fakes with a clock the test moves.

Allocation (scene 1), claim (3), return (4), reclaim (5) and duplicate merge (6): the rules,
the exact events they emit, and that running a rule twice changes nothing the second time.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhook.adapters.memory import FakeClock, MemoryStore, SequentialIds
from leadhook.domain.catalog import Assignment
from leadhook.domain.catalog_entries import catalog_to_json, find_entry
from leadhook.domain.errors import (
    ClaimRefusedError,
    LeadVoidedError,
    NotFoundError,
    ValidationError,
    VersionMismatchError,
)
from leadhook.domain.events import parse_event_json
from leadhook.domain.operator import SYSTEM, Operator
from leadhook.domain.pools import Duplicate, choose_member, email_key, merged_notes, mobile_key
from leadhook.domain.replay import fold
from leadhook.domain.times import rfc3339
from leadhook.domain.values import MAX_TEXT
from leadhook.services.automation import AutomationService, PoolService
from leadhook.services.leads import BehaviourRequest, LeadService
from leadhook.services.tenants import TenantService

START = 1_676_962_253.0
DAY = 86400
MEMBERS = ("m1", "m2", "m3")
MEMBER_OP = Operator(operator_type=2, operator_id=3021)


class World:
    """Services over one in-memory store, with a fake clock and repeatable ids."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock(START)
        self.ids = SequentialIds()
        self.tenants = TenantService(self.store.uow, self.clock, self.ids)
        self.leads = LeadService(self.store.uow, self.clock, self.ids)
        self.pools = PoolService(self.leads, self.store.uow)
        self.automation = AutomationService(
            self.leads, self.store.uow, self.clock, self.ids, batch=7
        )
        self.tenants.create("t1", "Tenant One")
        for i, member in enumerate(MEMBERS):
            self.put("members", member, {"name": f"成员{i}", "omni_user_uuid": f"omni-{member}"})
        self.put("lead_statuses", "s1", {"name": "跟进中"})

    def restart(self) -> World:
        """The same store behind new services (a restarted process)."""
        self.leads = LeadService(self.store.uow, self.clock, self.ids)
        self.pools = PoolService(self.leads, self.store.uow)
        self.automation = AutomationService(self.leads, self.store.uow, self.clock, self.ids)
        return self

    def put(self, kind: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        entry = find_entry(self.tenants.put_catalog_entry("t1", kind, key, body), kind, key)
        assert entry is not None
        return entry

    def req(self, operator: Operator = SYSTEM, **kwargs: Any) -> BehaviourRequest:
        return BehaviourRequest(mid="t1", operator=operator, **kwargs)

    def create(self, **args: Any) -> dict[str, Any]:
        status, body = self.leads.create(self.req(), args)
        assert status == 201
        answer: dict[str, Any] = json.loads(body)
        return answer

    def perform(self, behaviour: str, lead_id: str, **args: Any) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(
            self.leads.perform(self.req(), behaviour, lead_id, args)[1]
        )
        return answer

    def lead(self, lead_id: str) -> dict[str, Any]:
        return self.leads.get("t1", lead_id).to_json()

    def log(self) -> list[dict[str, Any]]:
        with self.store.uow() as u:
            page = u.events.page("t1", after=None, event_type=None, entity_id=None, limit=100_000)
        return [json.loads(e.payload) for e in page.data]


@pytest.fixture
def world() -> World:
    return World()


def owners(world: World, ids: list[str]) -> Counter[str | None]:
    return Counter(world.lead(i)["owner"] for i in ids)


# ---- pool rules in the catalog ---------------------------------------------------------------


def test_a_pool_takes_members_limit_and_rules(world: World) -> None:
    entry = world.put(
        "lead_pools",
        "east",
        {
            "name": "东区公海",
            "members": ["m1", "m2"],
            "claim_limit": 2,
            "assignment": {"mode": "least_loaded", "members": ["m2", "m3"]},
            "reclaim": {"after_days": 2.5, "enabled": True, "to_lead_pool": "market"},
        },
    )
    assert entry == {
        "code": "east",
        "name": "东区公海",
        "members": ["m1", "m2"],
        "claim_limit": 2,
        "assignment": {"mode": "least_loaded", "members": ["m2", "m3"], "enabled": True},
        "reclaim": {"after_days": 2.5, "enabled": True, "to_lead_pool": "market"},
    }
    listed = catalog_to_json(world.tenants.catalog("t1"))["lead_pools"]
    assert entry in listed
    # PUT replaces: a pool put again without rules has none.
    plain = world.put("lead_pools", "east", {"name": "东区公海"})
    assert plain["assignment"] is None and plain["reclaim"] is None and plain["members"] == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"members": ["nobody"]}, ("body", "members", 0)),
        ({"members": ["m1", "m1"]}, ("body", "members", 1)),
        ({"members": "m1"}, ("body", "members")),
        ({"claim_limit": 0}, ("body", "claim_limit")),
        ({"claim_limit": 1.5}, ("body", "claim_limit")),
        ({"claim_limit": True}, ("body", "claim_limit")),
        ({"claim_limit": 2**53}, ("body", "claim_limit")),
        ({"assignment": {"mode": "random", "members": ["m1"]}}, ("body", "assignment", "mode")),
        ({"assignment": {"mode": "round_robin", "members": []}}, ("body", "assignment", "members")),
        (
            {"assignment": {"mode": "round_robin", "members": ["x"]}},
            ("body", "assignment", "members", 0),
        ),
        (
            {"assignment": {"mode": "round_robin", "members": ["m1"], "enabled": 1}},
            ("body", "assignment", "enabled"),
        ),
        (
            {"assignment": {"mode": "round_robin", "members": ["m1"], "extra": 1}},
            ("body", "assignment", "extra"),
        ),
        ({"assignment": ["m1"]}, ("body", "assignment")),
        ({"reclaim": {"after_days": 0}}, ("body", "reclaim", "after_days")),
        ({"reclaim": {"after_days": "3"}}, ("body", "reclaim", "after_days")),
        ({"reclaim": {"after_days": True}}, ("body", "reclaim", "after_days")),
        ({"reclaim": {"after_days": 10**400}}, ("body", "reclaim", "after_days")),
        ({"reclaim": {}}, ("body", "reclaim", "after_days")),
        (
            {"reclaim": {"after_days": 1, "to_lead_pool": "nowhere"}},
            ("body", "reclaim", "to_lead_pool"),
        ),
        ({"owner": "m1"}, ("body", "owner")),
    ],
)
def test_pool_rules_are_validated(world: World, body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    before = catalog_to_json(world.tenants.catalog("t1"))
    with pytest.raises(ValidationError) as caught:
        world.put("lead_pools", "east", {"name": "东区", **body})
    assert caught.value.errors[0].loc == loc
    assert catalog_to_json(world.tenants.catalog("t1")) == before


def test_a_catalog_stored_before_pool_rules_still_reads() -> None:
    from leadhook.domain.catalog import Catalog
    from leadhook.domain.catalog_entries import catalog_from_json, catalog_to_json

    data = catalog_to_json(Catalog.default("t1", "bt"))
    data["lead_pools"] = [{"code": "market", "name": "市场公海"}]
    pool = catalog_from_json(data).lead_pools["market"]
    assert (pool.members, pool.claim_limit, pool.assignment, pool.reclaim) == ((), None, None, None)


# ---- automatic allocation (scene 1) ----------------------------------------------------------


def round_robin(world: World, pool: str = "east", **extra: Any) -> None:
    world.put(
        "lead_pools",
        pool,
        {"name": "东区", "assignment": {"mode": "round_robin", "members": list(MEMBERS)}, **extra},
    )


def test_a_lead_created_into_an_assigning_pool_gets_an_owner_in_the_same_answer(
    world: World,
) -> None:
    round_robin(world)
    answer = world.create(fields={"name": "赵"}, lead_pool="east", operator=None)
    events = answer["events"]
    assert [e["event_type"] for e in events] == ["object_create", "object_change_owner"]
    create, owner = events
    assert create["extra_data"]["owner"] is None
    assert owner["action_keyword"] == "auto_distribution"
    assert owner["entity_version"] == 2 and answer["lead"]["version"] == 2
    extra = owner["extra_data"]
    assert extra["scene_type"] == 1 and extra["operator_type"] == 0 and extra["operator_id"] == 0
    assert extra["owner"] == "m1" and extra["former_owner"] is None
    assert extra["mapping_data"] == {"owner": [None, "m1"]}
    assert extra["entity_change_mapping"]["owner"] == {
        "before": None,
        "after": {"value": "m1", "text": "成员0"},
    }
    assert 'lead pool "east"' in extra["notes"] and "round_robin" in extra["notes"]
    assert answer["lead"]["owner"] == "m1" and answer["lead"]["owner_since"] == rfc3339(START)
    # The log holds both, and folds back to the stored lead.
    assert [e["event_type"] for e in world.log()] == ["object_create", "object_change_owner"]


def test_a_lead_created_with_an_owner_or_into_a_plain_pool_is_left_alone(world: World) -> None:
    round_robin(world)
    assert len(world.create(lead_pool="east", owner="m2")["events"]) == 1
    assert len(world.create(lead_pool="market")["events"]) == 1
    world.put(
        "lead_pools",
        "off",
        {
            "name": "停用",
            "assignment": {"mode": "round_robin", "members": ["m1"], "enabled": False},
        },
    )
    assert world.create(lead_pool="off")["lead"]["owner"] is None


def test_round_robin_is_fair_over_100_leads_and_3_members(world: World) -> None:
    round_robin(world)
    ids = [world.create(lead_pool="east")["lead"]["id"] for _ in range(100)]
    assert owners(world, ids) == {"m1": 34, "m2": 33, "m3": 33}
    # Consecutive leads go to consecutive members.
    assert [world.lead(i)["owner"] for i in ids[:6]] == ["m1", "m2", "m3", "m1", "m2", "m3"]


def test_round_robin_continues_where_it_stopped_after_a_restart(world: World) -> None:
    round_robin(world)
    first = [world.create(lead_pool="east")["lead"]["owner"] for _ in range(2)]
    world.restart()
    after = [world.create(lead_pool="east")["lead"]["owner"] for _ in range(2)]
    assert first + after == ["m1", "m2", "m3", "m1"]


def test_a_batch_create_allocates_each_lead_in_turn(world: World) -> None:
    round_robin(world)
    status, body = world.leads.create_many(world.req(), [{"lead_pool": "east"}] * 4 + [{}])
    assert status == 201
    data = json.loads(body)["data"]
    assert [d["lead"]["owner"] for d in data] == ["m1", "m2", "m3", "m1", None]
    assert [len(d["events"]) for d in data] == [2, 2, 2, 2, 1]
    for d in data:
        assert [e["entity_version"] for e in d["events"]] == list(range(1, len(d["events"]) + 1))


def test_least_loaded_gives_the_member_with_fewest_open_leads(world: World) -> None:
    world.put(
        "lead_pools",
        "east",
        {"name": "东区", "assignment": {"mode": "least_loaded", "members": list(MEMBERS)}},
    )
    for owner, n in (("m1", 3), ("m2", 1)):
        for _ in range(n):
            world.create(owner=owner)
    # A voided lead is not open: it does not count.
    gone = world.create(owner="m3")["lead"]["id"]
    world.perform("void", gone)
    got = [world.create(lead_pool="east")["lead"]["owner"] for _ in range(6)]
    # m3 (0) twice to catch up with m2 (1), then ties rotate: m2, m3, then all at 3 → m1 ...
    assert got[:3] == ["m3", "m2", "m3"]
    loads = Counter({"m1": 3, "m2": 1, "m3": 0}) + Counter(got)
    assert max(loads.values()) - min(loads.values()) <= 1
    _, body = world.leads.create_many(world.req(), [{"lead_pool": "east"}] * 3)
    batch = [d["lead"]["owner"] for d in json.loads(body)["data"]]
    assert sorted(batch) == ["m1", "m2", "m3"]  # the batch counts its own leads
    # ... also those it gives an owner by name (they counted only once stored: a review).
    loads += Counter(batch)
    light = min(MEMBERS, key=lambda m: (loads[m], m))
    heavy = [m for m in MEMBERS if m != light]
    named = [{"owner": light}] * 3 + [{"lead_pool": "east"}]
    _, body = world.leads.create_many(world.req(), named)
    owners = [d["lead"]["owner"] for d in json.loads(body)["data"]]
    assert owners[:3] == [light] * 3 and owners[3] in heavy, (loads, owners)


def test_choose_member_rotates_and_skips_the_former_owner() -> None:
    rule = Assignment("round_robin", ("a", "b", "c"))
    assert choose_member(rule, last=None) == "a"
    assert choose_member(rule, last="c") == "a"
    assert choose_member(rule, last="gone") == "a"
    assert choose_member(rule, last="a", exclude="b") == "c"
    assert choose_member(Assignment("round_robin", ("a",)), last="a", exclude="a") == "a"
    least = Assignment("least_loaded", ("a", "b", "c"))
    assert choose_member(least, last="a", loads={"a": 0, "b": 1, "c": 1}) == "a"
    assert choose_member(least, last="a", loads={"a": 1, "b": 1, "c": 1}) == "b"


# ---- claim (scene 3) and return (scene 4) ----------------------------------------------------


def claimable(world: World, limit: int | None = 2) -> None:
    world.put("lead_pools", "east", {"name": "东区", "members": ["m1", "m2"], "claim_limit": limit})


def claim(world: World, lead_id: str, member: Any, **kwargs: Any) -> dict[str, Any]:
    status, body = world.pools.claim(world.req(MEMBER_OP, **kwargs), lead_id, member)
    assert status == 200
    answer: dict[str, Any] = json.loads(body)
    return answer


def test_a_member_claims_an_unowned_lead_as_herself(world: World) -> None:
    claimable(world)
    lead = world.create(lead_pool="east")["lead"]
    answer = claim(world, lead["id"], "m1")
    (event,) = answer["events"]
    extra = event["extra_data"]
    assert event["event_type"] == "object_change_owner"
    assert event["action_keyword"] == "manual_distribution"
    assert (extra["scene_type"], extra["operator_type"], extra["operator_id"]) == (3, 2, 3021)
    assert extra["omni_user_uuid"] == "omni-m1"  # the member's, from the catalog
    assert extra["owner"] == "m1" and answer["lead"]["lead_pool"] == "east"


def test_a_claim_without_operator_reports_the_members_bound_account(world: World) -> None:
    # The catalog binds m1 to back-office account 3021: a claim that names no operator is
    # made by her, and reports her account, as the contract's claim example does.
    claimable(world)
    world.put("members", "m1", {"name": "王芳", "operator_id": 3021, "omni_user_uuid": "U-m1"})
    lead = world.create(lead_pool="east")["lead"]
    status, body = world.pools.claim(world.req(), lead["id"], "m1")
    assert status == 200
    (event,) = json.loads(body)["events"]
    extra = event["extra_data"]
    assert (extra["operator_type"], extra["operator_id"], extra["omni_user_uuid"]) == (
        2,
        3021,
        "U-m1",
    )
    # An operator_id the body names wins over the binding.
    other = world.create(lead_pool="east")["lead"]
    status, body = world.pools.claim(
        world.req(Operator(operator_type=2, operator_id=77)), other["id"], "m1"
    )
    assert json.loads(body)["events"][0]["extra_data"]["operator_id"] == 77


def test_claims_the_pool_refuses(world: World) -> None:
    claimable(world, limit=2)
    ids = [world.create(lead_pool="east")["lead"]["id"] for _ in range(4)]
    claim(world, ids[0], "m1")
    with pytest.raises(ClaimRefusedError, match="has an owner"):
        claim(world, ids[0], "m2")
    with pytest.raises(ClaimRefusedError, match="may not claim"):
        claim(world, ids[1], "m3")
    claim(world, ids[1], "m1")
    log = world.log()
    with pytest.raises(ClaimRefusedError, match="claim_limit is 2"):
        claim(world, ids[2], "m1")
    assert world.log() == log and world.lead(ids[2])["owner"] is None
    # Leads she holds elsewhere, or voided ones, do not count; a return frees a place.
    world.perform("void", ids[0])
    claim(world, ids[2], "m1")
    with pytest.raises(ValidationError):
        claim(world, ids[3], "nobody")
    with pytest.raises(NotFoundError):
        claim(world, "missing", "m1")
    with pytest.raises(LeadVoidedError):
        claim(world, ids[0], "m2")
    with pytest.raises(VersionMismatchError):
        claim(world, ids[3], "m2", if_match=5)
    with pytest.raises(ValidationError):
        world.pools.claim(world.req(Operator(operator_type=1, operator_id=1)), ids[3], "m2")


def test_claiming_twice_changes_nothing_the_second_time(world: World) -> None:
    claimable(world)
    lead_id = world.create(lead_pool="east")["lead"]["id"]
    claim(world, lead_id, "m1")
    log = world.log()
    with pytest.raises(ClaimRefusedError):
        claim(world, lead_id, "m1")
    assert world.log() == log


def test_a_return_empties_the_owner_and_moves_the_pool(world: World) -> None:
    lead_id = world.create(owner="m1")["lead"]["id"]
    status, body = world.pools.return_(world.req(MEMBER_OP), lead_id, "sales", "客户暂无需求")
    assert status == 200
    answer = json.loads(body)
    owner, pool = answer["events"]
    assert owner["event_type"] == "object_change_owner"
    assert owner["extra_data"]["scene_type"] == 4 and owner["extra_data"]["owner"] is None
    assert owner["extra_data"]["former_owner"] == "m1"
    assert owner["extra_data"]["notes"] == "客户暂无需求"
    assert pool["event_type"] == "object_change_lead_pool"
    assert (pool["extra_data"]["from_lead_pool"], pool["extra_data"]["to_lead_pool"]) == (
        "market",
        "sales",
    )
    assert answer["lead"]["owner"] is None and answer["lead"]["owner_since"] is None
    # Returning again changes nothing.
    again = json.loads(world.pools.return_(world.req(), lead_id, "sales", None)[1])
    assert again["events"] == []


def test_a_lead_returned_to_an_assigning_pool_goes_to_another_member(world: World) -> None:
    round_robin(world)
    lead_id = world.create(lead_pool="east")["lead"]["id"]  # → m1
    world.create(lead_pool="east")  # → m2, so m3 is next
    world.create(lead_pool="east")  # → m3, so m1 is next: but m1 returns the lead
    answer = json.loads(world.pools.return_(world.req(), lead_id, None, "不跟了")[1])
    assert [(e["event_type"], e["extra_data"]["scene_type"]) for e in answer["events"]] == [
        ("object_change_owner", 4),
        ("object_change_owner", 1),
    ]
    assert answer["lead"]["owner"] == "m2"
    # The same through POST /v1/leads/{id}/owner with scene 4.
    moved = world.perform("owner", lead_id, owner=None, scene_type=4)
    assert [e["extra_data"]["scene_type"] for e in moved["events"]] == [4, 1]
    assert moved["lead"]["owner"] == "m3"


# ---- automatic reclaim (scene 5) -------------------------------------------------------------


def reclaiming(world: World, days: float = 3, **extra: Any) -> None:
    world.put(
        "lead_pools",
        "east",
        {"name": "东区", "reclaim": {"after_days": days, **extra}},
    )


def test_reclaim_after_exactly_n_days_and_not_before(world: World) -> None:
    reclaiming(world, days=2.5)
    lead_id = world.create(lead_pool="east", owner="m1")["lead"]["id"]
    world.clock.advance(2.5 * DAY - 1)
    assert world.automation.run_due() == []
    assert world.lead(lead_id)["owner"] == "m1"
    world.clock.advance(1)
    (run,) = world.automation.run_due()
    assert (run.rule, run.lead_pool, run.trigger, run.lead_ids) == (
        "reclaim",
        "east",
        "schedule",
        (lead_id,),
    )
    lead = world.lead(lead_id)
    assert lead["owner"] is None and lead["lead_pool"] == "east"
    event = world.log()[-1]
    extra = event["extra_data"]
    assert event["event_type"] == "object_change_owner"
    assert event["action_keyword"] == "auto_distribution"
    assert (extra["scene_type"], extra["operator_type"], extra["operator_id"]) == (5, 0, 0)
    assert extra["former_owner"] == "m1" and extra["owner"] is None
    assert extra["notes"] == (
        'reclaim rule of lead pool "east" (东区): no follow-up for 2.5 days'
        " (last owned 2023-02-21 14:50:53)"
    )


def test_a_follow_up_resets_the_clock(world: World) -> None:
    reclaiming(world, days=3)
    noted = world.create(lead_pool="east", owner="m1")["lead"]["id"]
    status = world.create(lead_pool="east", owner="m1")["lead"]["id"]
    plain = world.create(lead_pool="east", owner="m1")["lead"]["id"]
    world.clock.advance(2 * DAY)
    world.perform("notes", noted, notes="通话", is_follow_up=True)
    world.perform("status", status, leads_status="s1")
    # A note that is not a follow-up does not count.
    world.perform("notes", plain, notes="备忘", is_follow_up=False)
    assert world.lead(noted)["last_follow_up_at"] == int(START) + 2 * DAY
    world.clock.advance(1 * DAY)
    (run,) = world.automation.run_due()
    assert run.lead_ids == (plain,)
    world.clock.advance(2 * DAY - 1)
    assert world.automation.run_due() == []
    world.clock.advance(1)
    (run,) = world.automation.run_due()
    assert set(run.lead_ids) == {noted, status}
    assert "last followed up 2023-02-23 14:50:53" in world.log()[-1]["extra_data"]["notes"]


def test_a_claim_restarts_the_clock(world: World) -> None:
    reclaiming(world, days=1, enabled=True)
    world.put(
        "lead_pools",
        "east",
        {"name": "东区", "members": ["m2"], "reclaim": {"after_days": 1}},
    )
    lead_id = world.create(lead_pool="east")["lead"]["id"]
    world.clock.advance(5 * DAY)
    claim(world, lead_id, "m2")
    assert world.automation.run_due() == []
    world.clock.advance(DAY)
    assert len(world.automation.run_due()) == 1


def test_reclaim_into_another_pool_emits_the_pool_change_after_the_owner(world: World) -> None:
    reclaiming(world, days=1, to_lead_pool="market")
    lead_id = world.create(lead_pool="east", owner="m1")["lead"]["id"]
    world.clock.advance(DAY)
    world.automation.run_due()
    events = world.log()[-2:]
    assert [e["event_type"] for e in events] == ["object_change_owner", "object_change_lead_pool"]
    assert [e["entity_version"] for e in events] == [2, 3]
    assert events[1]["extra_data"]["to_lead_pool"] == "market"
    assert events[1]["extra_data"]["operator_type"] == 0
    lead = world.lead(lead_id)
    assert (lead["owner"], lead["lead_pool"]) == (None, "market")


def test_reclaim_runs_twice_change_nothing_the_second_time(world: World) -> None:
    reclaiming(world, days=1)
    ids = [world.create(lead_pool="east", owner=MEMBERS[i % 3])["lead"]["id"] for i in range(20)]
    world.create(lead_pool="east")  # no owner: nothing to reclaim
    world.clock.advance(DAY)
    runs = world.automation.run_due()
    # Batches of 7 (the world's batch size): 7 + 7 + 6, each its own run.
    assert [len(r.lead_ids) for r in runs] == [7, 7, 6]
    assert sorted(i for r in runs for i in r.lead_ids) == sorted(ids)
    log = world.log()
    assert world.automation.run_due() == []
    assert world.log() == log
    listed = world.automation.runs("t1", None, 2)
    assert [len(r.lead_ids) for r in listed.data] == [6, 7]
    rest = world.automation.runs("t1", listed.next_cursor, 2)
    assert [len(r.lead_ids) for r in rest.data] == [7] and rest.next_cursor is None


def test_a_disabled_or_changed_rule_is_checked_again_before_reclaiming(world: World) -> None:
    reclaiming(world, days=1, enabled=False)
    world.create(lead_pool="east", owner="m1")
    world.clock.advance(10 * DAY)
    assert world.automation.run_due() == []
    reclaiming(world, days=1)
    (manual,) = world.automation.run_now("t1")
    assert len(manual.lead_ids) == 1 and manual.trigger == "manual"
    assert world.automation.run_now("t1") == []


def test_the_folded_log_keeps_the_clocks(world: World) -> None:
    reclaiming(world, days=1)
    round_robin(world, pool="west")
    lead_id = world.create(lead_pool="west")["lead"]["id"]
    world.clock.advance(100)
    world.perform("notes", lead_id, notes="跟进", is_follow_up=1)
    world.perform("lead_pool", lead_id, lead_pool="east")
    world.clock.advance(DAY)
    world.automation.run_due()
    catalog = world.tenants.get("t1").catalog
    with world.store.uow() as u:
        events = [parse_event_json(e.payload) for e in u.events.for_entity("t1", lead_id)]
    assert fold(catalog, events).to_json() == world.lead(lead_id)


# ---- duplicate check and merge (scene 6) -----------------------------------------------------


def test_duplicates_share_a_normalised_mobile_or_email(world: World) -> None:
    lead = world.create(fields={"mobile": "+86 138 0013 8000", "email": "Zhao@Example.com"})
    same_mobile = world.create(fields={"mobile": "13800138000"})["lead"]["id"]
    same_email = world.create(fields={"email": " zhao@example.COM"})["lead"]["id"]
    world.create(fields={"mobile": "13800138001"})
    voided = world.create(fields={"mobile": "138 0013 8000"})["lead"]["id"]
    world.perform("void", voided)
    found = json.loads(world.pools.duplicates("t1", lead["lead"]["id"], 50))["data"]
    assert [(d["lead"]["id"], d["matched_on"]) for d in found] == [
        (same_mobile, ["mobile"]),
        (same_email, ["email"]),
    ]
    assert mobile_key("+86 138-0013-8000") == "13800138000" and mobile_key("") is None
    assert email_key(" A@B.CN ") == "a@b.cn"


def test_a_merge_emits_exactly_these_events(world: World) -> None:
    survivor = world.create(fields={"name": "赵拥晨", "mobile": "13800138000"})["lead"]["id"]
    world.perform("add_team_members", survivor, members=["m3"])
    first = world.create(
        fields={"mobile": "+86 13800138000", "email": "z@x.cn", "title": "CTO"}, owner="m2"
    )["lead"]["id"]
    world.perform("notes", first, notes="想试用")
    world.perform("add_team_members", first, members=["m1", "m3"])
    second = world.create(fields={"email": "Z@X.cn", "title": "CEO", "company_id": "中大"})["lead"][
        "id"
    ]
    world.perform("notes", second, notes="已报价", is_follow_up=True)
    world.clock.advance(60)
    op = Operator(operator_type=1, operator_id=17)
    status, body = world.pools.merge(world.req(op), survivor, [first, second])
    assert status == 200
    answer = json.loads(body)
    events = answer["events"]
    assert [(e["event_type"], e["extra_data"]["entity_id"]) for e in events] == [
        ("object_update", survivor),
        ("object_add_team_member", survivor),
        ("object_add_notes", survivor),
        ("object_change_owner", survivor),
        ("object_voids", first),
        ("object_voids", second),
    ]
    update, team, note, owner, void1, void2 = (e["extra_data"] for e in events)
    assert update["mapping_data"] == {
        "email": [None, "z@x.cn"],
        "company_id": [None, "中大"],
        "title": [None, "CTO"],
    }
    assert update["mapping_data_text"]["title"] == ["-", "CTO"]
    assert team["members"] == ["m1"]
    assert note["notes"] == (
        f"Notes merged from lead {first}:\n想试用\n\nNotes merged from lead {second}:\n已报价"
    )
    assert note["is_follow_up"] == 0
    assert (owner["scene_type"], owner["former_owner"], owner["owner"]) == (6, None, "m2")
    assert owner["mapping_data"] == {"owner": [None, "m2"]}
    assert owner["mapping_data_text"] == {"owner": ["-", "成员1"]}
    assert owner["entity_change_mapping"] == {
        "owner": {"before": None, "after": {"value": "m2", "text": "成员1"}}
    }
    assert note["mapping_data"] == {} and team["mapping_data"] == {}
    assert void1["mapping_data"] == {} and void1["owner"] == "m2" and void2["owner"] is None
    assert [e["extra_data"]["operator_type"] for e in events] == [1] * 6
    assert events[3]["action_keyword"] == "manual_distribution"  # a person merged
    assert void1["notes"] == void2["notes"] == f"merged into lead {survivor}"
    assert [e["entity_version"] for e in events] == [3, 4, 5, 6, 4, 3]
    assert answer["lead"]["version"] == 6 and answer["lead"]["owner"] == "m2"
    assert answer["lead"]["team_members"] == ["m3", "m1"]
    assert world.lead(first)["voided"] and world.lead(second)["voided"]
    assert world.lead(first)["owner"] == "m2"  # a voided duplicate keeps its data
    # Merging again changes nothing: the duplicates are voided.
    log = world.log()
    with pytest.raises(LeadVoidedError):
        world.pools.merge(world.req(op), survivor, [first])
    assert world.log() == log


def test_a_merge_fills_from_a_value_kept_under_source_after_its_field_moved(
    world: World,
) -> None:
    # A value written while its field was a source field stays under `source` until the next
    # write; read by its code from either group, it was skipped by a merge (a review).
    world.put("fields", "camp", {"name": "Camp", "group": "source"})
    survivor = world.create(fields={"name": "s"})["lead"]["id"]
    dup = world.create(fields={"name": "d"})["lead"]["id"]
    world.perform("source", dup, fields={"camp": "c1"})
    world.put("fields", "camp", {"name": "Camp", "group": "ordinary"})
    _, body = world.pools.merge(world.req(), survivor, [dup])
    events = json.loads(body)["events"]
    assert [e["event_type"] for e in events] == ["object_update", "object_voids"]
    assert events[0]["extra_data"]["mapping_data"] == {"camp": [None, "c1"]}
    assert world.lead(survivor)["fields"]["camp"] == "c1"


def test_a_merge_carries_every_note_however_long(world: World) -> None:
    # Notes past a note's 10,000 characters were cut ("…"): the second duplicate's was lost.
    survivor = world.create(fields={"name": "s"})["lead"]["id"]
    dups = [world.create(fields={"name": f"d{i}"})["lead"]["id"] for i in range(2)]
    for i, dup in enumerate(dups):
        world.perform("notes", dup, notes="N" * 6000 + f"END{i}")
    _, body = world.pools.merge(world.req(), survivor, dups)
    events = json.loads(body)["events"]
    notes = [e["extra_data"]["notes"] for e in events if e["event_type"] == "object_add_notes"]
    assert notes == [
        f"Notes merged from lead {dups[0]}:\n" + "N" * 6000 + "END0",
        f"Notes merged from lead {dups[1]}:\n" + "N" * 6000 + "END1",
    ]
    assert [e["entity_version"] for e in events[:2]] == [2, 3]


@given(
    st.lists(
        st.lists(st.text(alphabet="ab\n", max_size=MAX_TEXT), min_size=1, max_size=3),
        max_size=4,
    )
)
def test_merged_notes_hold_the_whole_text_in_notes_a_note_can_hold(
    notes: list[list[str]],
) -> None:
    from leadhook.domain.lead import Lead

    dups = [
        Duplicate(Lead(f"L{i}", "t1", 1, "bt", None, "market", "new"), tuple(n))
        for i, n in enumerate(notes)
    ]
    whole = "\n\n".join(f"Notes merged from lead {d.lead.id}:\n" + "\n".join(d.notes) for d in dups)
    parts = merged_notes(dups)
    assert all(0 < len(part) <= MAX_TEXT for part in parts)
    assert bool(parts) == bool(whole) and (len(parts) == 1) == (0 < len(whole) <= MAX_TEXT)
    # In order, each cut taking out only the break it was made at: nothing of the text lost.
    end = 0
    for part in parts:
        start = whole.index(part, end)
        assert whole[end:start] in ("", "\n", "\n\n") and (start == 0) == (end == 0)
        end = start + len(part)
    assert end == len(whole)


def test_a_merge_by_the_system_is_automatic_and_keeps_an_owner(world: World) -> None:
    survivor = world.create(owner="m1", fields={"name": "a"})["lead"]["id"]
    dup = world.create(owner="m2", fields={"name": "b"})["lead"]["id"]
    events = json.loads(world.pools.merge(world.req(), survivor, [dup])[1])["events"]
    assert [e["event_type"] for e in events] == ["object_voids"]  # nothing else to move
    assert world.lead(survivor)["owner"] == "m1"
    orphan = world.create()["lead"]["id"]
    owned = world.create(owner="m3")["lead"]["id"]
    events = json.loads(world.pools.merge(world.req(), orphan, [owned])[1])["events"]
    assert events[0]["action_keyword"] == "auto_distribution"


def test_a_value_the_catalog_no_longer_takes_stays_with_the_duplicate(world: World) -> None:
    # The duplicate's grade was "b" when written; the option is gone now, and score has
    # become a number field. The merge carries what is still valid and refuses nothing.
    world.put(
        "fields", "grade", {"name": "等级", "type": "option", "options": {"a": "A", "b": "B"}}
    )
    world.put("fields", "score", {"name": "分数"})
    survivor = world.create(fields={"name": "s"})["lead"]["id"]
    dup = world.create(fields={"grade": "b", "score": "abc", "title": "CTO"})["lead"]["id"]
    world.put("fields", "grade", {"name": "等级", "type": "option", "options": {"a": "A"}})
    world.put("fields", "score", {"name": "分数", "type": "number"})
    status, body = world.pools.merge(world.req(), survivor, [dup])
    assert status == 200
    update = json.loads(body)["events"][0]
    assert update["event_type"] == "object_update"
    assert update["extra_data"]["mapping_data"] == {"title": [None, "CTO"]}
    assert world.lead(dup)["fields"]["grade"] == "b"  # kept on the voided duplicate


@pytest.mark.parametrize(
    "duplicates",
    [[], "x", [1], ["SELF"], ["A", "A"], [f"L{i}" for i in range(51)]],
)
def test_a_bad_merge_changes_nothing(world: World, duplicates: Any) -> None:
    survivor = world.create()["lead"]["id"]
    other = world.create()["lead"]["id"]
    dups = (
        [survivor if d == "SELF" else other if d == "A" else d for d in duplicates]
        if isinstance(duplicates, list)
        else duplicates
    )
    log = world.log()
    with pytest.raises(ValidationError):
        world.pools.merge(world.req(), survivor, dups)
    with pytest.raises(NotFoundError):
        world.pools.merge(world.req(), survivor, [other, "missing"])
    assert world.log() == log


def test_the_automation_interval_comes_from_the_environment() -> None:
    from leadhook.settings import Settings, SettingsError

    assert Settings.from_env({}).automation_interval == 60.0
    assert Settings.from_env({"LEADHOOK_AUTOMATION_INTERVAL": "2.5"}).automation_interval == 2.5
    assert Settings.from_env({"LEADHOOK_AUTOMATION_INTERVAL": "0"}).automation_interval == 0.0
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(SettingsError, match=r"or 0, which turns it off"):
            Settings.from_env({"LEADHOOK_AUTOMATION_INTERVAL": bad})
    with pytest.raises(SettingsError) as schedule:
        Settings.from_env({"LEADHOOK_RETRY_SCHEDULE": "a,b"})
    assert str(schedule.value).count("LEADHOOK_RETRY_SCHEDULE") == 1  # named once


def test_a_retried_create_does_not_take_a_second_turn(world: World) -> None:
    round_robin(world)
    first = world.leads.create(world.req(idempotency_key="k1"), {"lead_pool": "east"})
    again = world.leads.create(world.req(idempotency_key="k1"), {"lead_pool": "east"})
    assert again == first
    assert world.create(lead_pool="east")["lead"]["owner"] == "m2"


def test_a_stopping_worker_leaves_the_rest_due(world: World) -> None:
    reclaiming(world, days=1)
    for _ in range(5):
        world.create(lead_pool="east", owner="m1")
    world.clock.advance(DAY)
    asked = iter([False, False, True])
    runs = world.automation.run_due(stopping=lambda: next(asked, True))
    assert [len(r.lead_ids) for r in runs] == [2]
    assert sum(len(r.lead_ids) for r in world.automation.run_due()) == 3
