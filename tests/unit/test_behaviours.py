"""Behaviours on a lead: typed refusals, no-ops, owner scenes, time zones, stages, custom fields."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from leadhook.domain import behaviours as b
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import upsert_entry
from leadhook.domain.errors import ConflictError, LeadVoidedError, ValidationError
from leadhook.domain.lead import Lead
from leadhook.domain.operator import SYSTEM, Operator

MID = "941"
BT = "WNh7rwLXUQPFwACQ6EKPqD"
BT2 = "Xy2BusinessType"
ALICE = "Kq7vX2mNpR4sT8wY3zA5bC"
BOB = "Hd9fG6jL2mP4rS7tV1xZ3c"
CAROL = "Wn4pQ8sT2vX6zB9dF3hJ5k"
FOLLOWING_UP = "St6uI9oP3aS5dF8gH1jK4l"
WON = "Won"
T0 = 1676962253  # 2023-02-21 14:50:53 Asia/Shanghai, 06:50:53 UTC

USER = Operator(
    operator_type=1, operator_id=17, login_platform="jingsocial", login_environment="pc"
)
MEMBER = Operator(operator_type=2, operator_id=3021, omni_user_uuid="Rt5yU8iO2pA4sD6fG9hJ1k")


def make_catalog(timezone: str = "Asia/Shanghai") -> Catalog:
    cat = Catalog.default(MID, BT, timezone=timezone)
    cat = upsert_entry(cat, "business_types", BT, {"name": "Authing"})
    cat = upsert_entry(cat, "business_types", BT2, {"name": "Other"})
    for key, name in ((ALICE, "王芳"), (BOB, "李娜"), (CAROL, "张伟")):
        cat = upsert_entry(cat, "members", key, {"name": name})
    cat = upsert_entry(cat, "lead_statuses", FOLLOWING_UP, {"name": "跟进中"})
    cat = upsert_entry(cat, "lead_statuses", WON, {"name": "已成交"})
    cat = upsert_entry(cat, "objects", "account", {"name": "客户", "object_id": "57"})
    cat = upsert_entry(
        cat,
        "fields",
        "grade",
        {"name": "等级", "type": "option", "options": {"a": "A级", "b": "B级"}},
    )
    cat = upsert_entry(cat, "fields", "budget", {"name": "预算", "type": "number"})
    cat = upsert_entry(cat, "fields", "visit_date", {"name": "拜访日期", "type": "date"})
    cat = upsert_entry(cat, "fields", "photos", {"name": "照片", "type": "image"})
    return upsert_entry(cat, "fields", "referrer", {"name": "推荐人", "group": "source"})


CATALOG = make_catalog()


def ctx(
    catalog: Catalog = CATALOG, *, now: int = T0 + 3600, operator: Operator = USER
) -> b.Context:
    counter = itertools.count(1)
    return b.Context(catalog, now, lambda: f"01EVENT{next(counter):019d}", operator)


def new_lead(catalog: Catalog = CATALOG, **kwargs: Any) -> Lead:
    outcome = b.create_lead(
        b.Context(catalog, T0, lambda: "01CREATE", SYSTEM), "e9vMaiGWybEQ3Nc9xGgwV4", {}, **kwargs
    )
    return outcome.lead


LEAD = new_lead()
OWNED = b.change_owner(ctx(), LEAD, ALICE, 2).lead
TEAM = b.add_team_members(ctx(), OWNED, [BOB]).lead
RELATED = b.relate(ctx(), LEAD, "account", "Ac2sD4fG6hJ8kL1zX3cV5b").lead
VOIDED = b.void(ctx(), OWNED, "重复线索").lead

Call = Callable[[b.Context], b.Effect]


def refusal(call: Call) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        call(ctx())
    assert type(info.value) is ValidationError
    assert len(info.value.errors) == 1
    return info.value


# ---- refusals: (call, loc, msg) ------------------------------------------------------------

EXTERNAL_ID = "must be 1-64 characters, with no control character and no space around it"

OWN_BEHAVIOUR = "has its own behaviour: POST /v1/leads/{id}/"
REFUSALS: list[tuple[str, Call, tuple[str | int, ...], str]] = [
    # unknown field codes
    ("update unknown code", lambda c: b.update_fields(c, LEAD, {"nickname": "x"}),
     ("body", "fields", "nickname"), "unknown field code"),
    ("source unknown code", lambda c: b.change_source(c, LEAD, {"utm_foo": "x"}),
     ("body", "fields", "utm_foo"), "unknown field code"),
    ("create unknown code", lambda c: b.create_lead(c, "L2", {"nickname": "x"}),
     ("body", "fields", "nickname"), "unknown field code"),
    ("timestamp of unknown stage", lambda c: b.update_fields(c, LEAD, {"to_vip_timestamp": "x"}),
     ("body", "fields", "to_vip_timestamp"), "unknown field code"),
    ("fields not an object", lambda c: b.update_fields(c, LEAD, ["name"]),
     ("body", "fields"), "must be an object of field code to value"),
    # fields sent to the wrong behaviour
    ("source field in update", lambda c: b.update_fields(c, LEAD, {"utm_source": "x"}),
     ("body", "fields", "utm_source"),
     "is a source field: change it with PATCH /v1/leads/{id}/source"),
    ("custom source field in update", lambda c: b.update_fields(c, LEAD, {"referrer": "x"}),
     ("body", "fields", "referrer"),
     "is a source field: change it with PATCH /v1/leads/{id}/source"),
    ("owner in update", lambda c: b.update_fields(c, LEAD, {"owner": ALICE}),
     ("body", "fields", "owner"), OWN_BEHAVIOUR + "owner"),
    ("life_status in update", lambda c: b.update_fields(c, LEAD, {"life_status": "mql"}),
     ("body", "fields", "life_status"), OWN_BEHAVIOUR + "life-cycle"),
    ("lead_pool in update", lambda c: b.update_fields(c, LEAD, {"lead_pool": "sales"}),
     ("body", "fields", "lead_pool"), OWN_BEHAVIOUR + "lead-pool"),
    ("leads_status in update", lambda c: b.update_fields(c, LEAD, {"leads_status": WON}),
     ("body", "fields", "leads_status"), OWN_BEHAVIOUR + "status"),
    ("stage timestamp in update",
     lambda c: b.update_fields(c, LEAD, {"to_mql_timestamp": "2023-02-21 14:50:53"}),
     ("body", "fields", "to_mql_timestamp"), "is set by the lifecycle behaviour, not directly"),
    ("owner at create", lambda c: b.create_lead(c, "L2", {"owner": ALICE}),
     ("body", "fields", "owner"), OWN_BEHAVIOUR + "owner"),
    ("ordinary field in source", lambda c: b.change_source(c, LEAD, {"name": "x"}),
     ("body", "fields", "name"), "is an ordinary field: change it with PATCH /v1/leads/{id}"),
    ("custom field in source", lambda c: b.change_source(c, LEAD, {"budget": 1}),
     ("body", "fields", "budget"), "is an ordinary field: change it with PATCH /v1/leads/{id}"),
    ("owner in source", lambda c: b.change_source(c, LEAD, {"owner": ALICE}),
     ("body", "fields", "owner"), OWN_BEHAVIOUR + "owner"),
    # unknown catalog ids
    ("unknown business type (update)",
     lambda c: b.update_fields(c, LEAD, {"business_type": "Nope"}),
     ("body", "fields", "business_type"), "unknown business_types id 'Nope'"),
    ("unknown business type (create)", lambda c: b.create_lead(c, "L2", {}, business_type="Nope"),
     ("body", "business_type"), "unknown business_types id 'Nope'"),
    ("emptied business type", lambda c: b.update_fields(c, LEAD, {"business_type": None}),
     ("body", "fields", "business_type"), "cannot be emptied"),
    ("two business types at create",
     lambda c: b.create_lead(c, "L2", {"business_type": BT2}, business_type=BT),
     ("body", "business_type"), "differs from fields.business_type"),
    ("unknown owner", lambda c: b.change_owner(c, LEAD, "Nobody", 2),
     ("body", "owner"), "unknown members id 'Nobody'"),
    ("unknown owner at create", lambda c: b.create_lead(c, "L2", {}, owner="Nobody"),
     ("body", "owner"), "unknown members id 'Nobody'"),
    ("unknown status", lambda c: b.change_status(c, LEAD, "Lost"),
     ("body", "leads_status"), "unknown lead_statuses id 'Lost'"),
    ("unknown stage", lambda c: b.change_life_cycle(c, LEAD, "vip"),
     ("body", "life_status"), "unknown life_stages id 'vip'"),
    ("no stage", lambda c: b.change_life_cycle(c, LEAD, None),
     ("body", "life_status"), "is required"),
    ("unknown pool", lambda c: b.change_lead_pool(c, LEAD, "vip"),
     ("body", "lead_pool"), "unknown lead_pools id 'vip'"),
    ("no pool", lambda c: b.change_lead_pool(c, LEAD, None),
     ("body", "lead_pool"), "is required: a lead always has a pool"),
    ("unknown pool at create", lambda c: b.create_lead(c, "L2", {}, lead_pool="vip"),
     ("body", "lead_pool"), "unknown lead_pools id 'vip'"),
    ("unknown pool on return", lambda c: b.change_owner(c, OWNED, None, 4, lead_pool="vip"),
     ("body", "lead_pool"), "unknown lead_pools id 'vip'"),
    ("unknown member added", lambda c: b.add_team_members(c, LEAD, [BOB, "Nobody"]),
     ("body", "members", 1), "unknown member id 'Nobody'"),
    ("no members", lambda c: b.add_team_members(c, LEAD, []),
     ("body", "members"), "must be a non-empty list of member ids"),
    ("members not a list", lambda c: b.add_team_members(c, LEAD, BOB),
     ("body", "members"), "must be a non-empty list of member ids"),
    ("unknown member removed", lambda c: b.remove_team_member(c, LEAD, "Nobody"),
     ("path", "member_id"), "unknown member id 'Nobody'"),
    # wrong types and formats
    ("number with a string", lambda c: b.update_fields(c, LEAD, {"budget": "100"}),
     ("body", "fields", "budget"), "must be a number"),
    ("number with a bool", lambda c: b.update_fields(c, LEAD, {"budget": True}),
     ("body", "fields", "budget"), "must be a number"),
    ("number not finite", lambda c: b.update_fields(c, LEAD, {"budget": float("inf")}),
     ("body", "fields", "budget"), "must be a finite number"),
    ("text with a number", lambda c: b.update_fields(c, LEAD, {"name": 7}),
     ("body", "fields", "name"), "must be a string (text field)"),
    ("text too long", lambda c: b.update_fields(c, LEAD, {"name": "x" * 10_001}),
     ("body", "fields", "name"), "must be at most 10000 characters"),
    ("image not JSON", lambda c: b.update_fields(c, LEAD, {"headimgurl": "http://a/b.png"}),
     ("body", "fields", "headimgurl"), "must be a JSON-encoded list of URLs"),
    ("image JSON object", lambda c: b.update_fields(c, LEAD, {"headimgurl": '{"a": "b"}'}),
     ("body", "fields", "headimgurl"), "must be a JSON-encoded list of URLs"),
    ("image list of numbers", lambda c: b.update_fields(c, LEAD, {"photos": [1, 2]}),
     ("body", "fields", "photos"), "must be a list of image URLs"),
    ("image not a URL", lambda c: b.update_fields(c, LEAD, {"headimgurl": '["not a url"]'}),
     ("body", "fields", "headimgurl"),
     "must be a JSON-encoded list of URLs: 'not a url' is not an http:// or https:// URL"),
    ("image script", lambda c: b.update_fields(c, LEAD, {"photos": ["javascript:alert(1)"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'javascript:alert(1)' is not an http:// or https:// URL"),
    ("image no host", lambda c: b.update_fields(c, LEAD, {"photos": ["https:///a.png"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'https:///a.png' is not an http:// or https:// URL"),
    ("image bad IPv6", lambda c: b.update_fields(c, LEAD, {"photos": ["http://[::1/a.png"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'http://[::1/a.png' is not an http:// or https:// URL"),
    ("image port past 65535", lambda c: b.update_fields(c, LEAD, {"photos": ["https://a.com:99999/x"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'https://a.com:99999/x' is not an http:// or https:// URL"),
    ("image port not a number", lambda c: b.update_fields(c, LEAD, {"photos": ["http://a:b/x"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'http://a:b/x' is not an http:// or https:// URL"),
    ("image with a space", lambda c: b.update_fields(c, LEAD, {"photos": ["http://a/b c.png"]}),
     ("body", "fields", "photos"),
     "must be a list of image URLs: 'http://a/b c.png' is not an http:// or https:// URL"),
    ("date with slashes", lambda c: b.update_fields(c, LEAD, {"visit_date": "2023/02/21"}),
     ("body", "fields", "visit_date"), "must be a time formatted %Y-%m-%d"),
    ("date with a time", lambda c: b.update_fields(c, LEAD, {"visit_date": "2023-02-21 10:00:00"}),
     ("body", "fields", "visit_date"), "must be a time formatted %Y-%m-%d"),
    ("impossible date", lambda c: b.update_fields(c, LEAD, {"visit_date": "2023-02-30"}),
     ("body", "fields", "visit_date"), "must be a time formatted %Y-%m-%d"),
    ("date not zero-padded", lambda c: b.update_fields(c, LEAD, {"visit_date": "2023-2-1"}),
     ("body", "fields", "visit_date"), "must be a time formatted %Y-%m-%d"),
    ("date in other digits", lambda c: b.update_fields(c, LEAD, {"visit_date": "２０２３-02-21"}),
     ("body", "fields", "visit_date"), "must be a time formatted %Y-%m-%d"),
    ("unknown option", lambda c: b.update_fields(c, LEAD, {"grade": "z"}),
     ("body", "fields", "grade"), "unknown option 'z'"),
    ("option by its label", lambda c: b.update_fields(c, LEAD, {"grade": "A级"}),
     ("body", "fields", "grade"), "unknown option 'A级'"),
    ("status not a string", lambda c: b.change_status(c, LEAD, 3),
     ("body", "leads_status"), "must be a string (reference field)"),
    ("empty note", lambda c: b.add_note(c, LEAD, "  "), ("body", "notes"), "must not be empty"),
    ("note not text", lambda c: b.add_note(c, LEAD, 5),
     ("body", "notes"), "must be a string of at most 10000 characters"),
    ("follow-up flag", lambda c: b.add_note(c, LEAD, "n", "yes"),
     ("body", "is_follow_up"), "must be a boolean or 0/1"),
    ("void reason not text", lambda c: b.void(c, LEAD, 5),
     ("body", "reason"), "must be a string of at most 10000 characters"),
    ("relation name", lambda c: b.relate(c, LEAD, "acc ount", "A1"),
     ("body", "target_object_name"), "must be 1-64 ASCII letters, digits, '_' or '-'"),
    ("relation entity", lambda c: b.relate(c, LEAD, "account", ""),
     ("body", "target_entity_id"), EXTERNAL_ID),
    ("relation entity too long", lambda c: b.relate(c, LEAD, "account", "x" * 65),
     ("body", "target_entity_id"), EXTERNAL_ID),
    ("relation entity spaced", lambda c: b.relate(c, LEAD, "account", " A1"),
     ("body", "target_entity_id"), EXTERNAL_ID),
    ("relation entity control", lambda c: b.relate(c, LEAD, "account", "A\t1"),
     ("body", "target_entity_id"), EXTERNAL_ID),
    ("relation object id", lambda c: b.relate(c, LEAD, "account", "A1", 57),
     ("body", "target_object_id"), EXTERNAL_ID),
    ("relation object id empty", lambda c: b.relate(c, LEAD, "account", "A1", ""),
     ("body", "target_object_id"), EXTERNAL_ID),
    # scene_type and owner per scene
    *[
        (f"scene_type {scene!r}", (lambda s: lambda c: b.change_owner(c, LEAD, ALICE, s))(scene),
         ("body", "scene_type"), "must be an integer from 1 to 6")
        for scene in (0, 7, -1, True, False, "1", None, 1.0, 2.5)
    ],
    *[
        (f"no owner in scene {scene}",
         (lambda s: lambda c: b.change_owner(c, OWNED, None, s))(scene),
         ("body", "owner"), f"must name a member in scene {scene}")
        for scene in (1, 2, 3)
    ],
    *[
        (f"an owner in scene {scene}",
         (lambda s: lambda c: b.change_owner(c, LEAD, ALICE, s))(scene),
         ("body", "owner"), f"must be null in scene {scene}")
        for scene in (4, 5)
    ],
    *[
        (f"a pool in scene {scene}",
         (lambda s: lambda c: b.change_owner(c, LEAD, ALICE, s, lead_pool="sales"))(scene),
         ("body", "lead_pool"), "only scenes 4 and 5 move the lead pool")
        for scene in (1, 2, 3, 6)
    ],
    ("owner change notes", lambda c: b.change_owner(c, LEAD, ALICE, 2, notes=["x"]),
     ("body", "notes"), "must be a string of at most 10000 characters"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "loc", "msg"), [pytest.param(*case[1:], id=case[0]) for case in REFUSALS]
)
def test_refusal_is_a_typed_error_naming_field_and_reason(
    call: Call, loc: tuple[str | int, ...], msg: str
) -> None:
    error = refusal(call)
    assert error.errors[0].loc == loc
    assert error.errors[0].msg == msg
    assert error.detail == f"{'.'.join(map(str, loc))}: {msg}"


def test_a_field_code_that_is_not_a_string_is_refused() -> None:
    error = refusal(lambda c: b.update_fields(c, LEAD, {1: "x"}))
    assert error.errors[0].loc == ("body", "fields", 1)
    assert error.errors[0].msg == "unknown field code"


# ---- a voided lead refuses every behaviour but restore ----------------------------------------

ON_VOIDED: list[tuple[str, Call]] = [
    ("update_fields", lambda c: b.update_fields(c, VOIDED, {"name": "x"})),
    ("change_source", lambda c: b.change_source(c, VOIDED, {"utm_source": "x"})),
    ("change_status", lambda c: b.change_status(c, VOIDED, WON)),
    ("change_owner", lambda c: b.change_owner(c, VOIDED, BOB, 2)),
    ("change_owner to a pool", lambda c: b.change_owner(c, VOIDED, None, 4, lead_pool="sales")),
    ("change_lead_pool", lambda c: b.change_lead_pool(c, VOIDED, "sales")),
    ("change_life_cycle", lambda c: b.change_life_cycle(c, VOIDED, "mql")),
    ("add_note", lambda c: b.add_note(c, VOIDED, "n")),
    ("add_team_members", lambda c: b.add_team_members(c, VOIDED, [BOB])),
    ("remove_team_member", lambda c: b.remove_team_member(c, VOIDED, BOB)),
    ("void", lambda c: b.void(c, VOIDED, "again")),
    ("relate", lambda c: b.relate(c, VOIDED, "account", "A1")),
    # even invalid input: the lead's state is checked first
    ("update_fields with junk", lambda c: b.update_fields(c, VOIDED, {"nickname": 1})),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=name) for name, c in ON_VOIDED])
def test_voided_lead_refuses_every_behaviour_but_restore(call: Call) -> None:
    with pytest.raises(LeadVoidedError) as info:
        call(ctx())
    assert isinstance(info.value, ConflictError)


def test_restore_brings_a_voided_lead_back() -> None:
    assert VOIDED.voided
    outcome = b.restore(ctx(), VOIDED)
    assert [e.event_type for e in outcome.events] == ["object_restore"]
    assert not outcome.lead.voided
    assert outcome.lead.version == VOIDED.version + 1
    assert outcome.events[0].extra_data.mapping_data == {}
    assert b.update_fields(ctx(), outcome.lead, {"name": "x"}).events


def test_void_carries_the_reason_in_notes() -> None:
    event = b.void(ctx(), OWNED, "重复线索").events[0]
    assert (event.event_type, event.extra_data.notes) == ("object_voids", "重复线索")
    assert b.void(ctx(), OWNED).events[0].extra_data.notes == ""


# ---- no-op behaviours emit nothing -----------------------------------------------------------

WITH_NAME = b.update_fields(ctx(), LEAD, {"name": "赵拥晨", "budget": 10}).lead
WITH_SOURCE = b.change_source(ctx(), LEAD, {"utm_source": "wechat"}).lead
WITH_STATUS = b.change_status(ctx(), LEAD, WON).lead
WITH_ZERO = b.update_fields(ctx(), LEAD, {"budget": 0}).lead
WITH_ONE_FLOAT = b.update_fields(ctx(), LEAD, {"budget": 1.0}).lead

NO_OPS: list[tuple[str, Lead, Callable[[b.Context, Lead], b.Effect]]] = [
    ("same ordinary value", WITH_NAME,
     lambda c, lead: b.update_fields(c, lead, {"name": "赵拥晨"})),
    ("same number", WITH_NAME, lambda c, lead: b.update_fields(c, lead, {"budget": 10})),
    ("same number as a float", WITH_NAME,
     lambda c, lead: b.update_fields(c, lead, {"budget": 10.0})),
    ("0.0 over 0", WITH_ZERO, lambda c, lead: b.update_fields(c, lead, {"budget": 0.0})),
    ("-0.0 over 0", WITH_ZERO, lambda c, lead: b.update_fields(c, lead, {"budget": -0.0})),
    ("1 over 1.0", WITH_ONE_FLOAT, lambda c, lead: b.update_fields(c, lead, {"budget": 1})),
    ("empty an empty field", LEAD, lambda c, lead: b.update_fields(c, lead, {"title": None})),
    ("'' on an empty field", LEAD, lambda c, lead: b.update_fields(c, lead, {"title": ""})),
    ("no fields", LEAD, lambda c, lead: b.update_fields(c, lead, {})),
    ("same business type", LEAD, lambda c, lead: b.update_fields(c, lead, {"business_type": BT})),
    ("same source", WITH_SOURCE,
     lambda c, lead: b.change_source(c, lead, {"utm_source": "wechat"})),
    ("same status", WITH_STATUS, lambda c, lead: b.change_status(c, lead, WON)),
    ("clear no status", LEAD, lambda c, lead: b.change_status(c, lead, None)),
    ("same owner", OWNED, lambda c, lead: b.change_owner(c, lead, ALICE, 2)),
    ("return an ownerless lead", LEAD, lambda c, lead: b.change_owner(c, lead, None, 4)),
    ("return to its own pool", LEAD,
     lambda c, lead: b.change_owner(c, lead, None, 5, lead_pool="market")),
    ("same stage", LEAD, lambda c, lead: b.change_life_cycle(c, lead, "baby_lead")),
    ("same pool", LEAD, lambda c, lead: b.change_lead_pool(c, lead, "market")),
    ("restore a live lead", LEAD, b.restore),
    ("re-add a member", TEAM, lambda c, lead: b.add_team_members(c, lead, [BOB])),
    ("remove a non-member", TEAM, lambda c, lead: b.remove_team_member(c, lead, CAROL)),
    ("same relation again", RELATED,
     lambda c, lead: b.relate(c, lead, "account", "Ac2sD4fG6hJ8kL1zX3cV5b")),
    ("same relation, other object id", RELATED,
     lambda c, lead: b.relate(c, lead, "account", "Ac2sD4fG6hJ8kL1zX3cV5b", "99")),
]  # fmt: skip


@pytest.mark.parametrize(("lead", "call"), [pytest.param(*c[1:], id=c[0]) for c in NO_OPS])
def test_no_op_behaviour_emits_no_event(
    lead: Lead, call: Callable[[b.Context, Lead], b.Effect]
) -> None:
    outcome = call(ctx(), lead)
    assert outcome.events == ()
    assert outcome.lead == lead


def test_adding_members_skips_those_already_there_and_duplicates() -> None:
    outcome = b.add_team_members(ctx(), TEAM, [BOB, CAROL, CAROL])
    (event,) = outcome.events
    assert event.extra_data.model_dump()["members"] == [CAROL]
    assert outcome.lead.team_members == (BOB, CAROL)


def test_update_reports_only_the_fields_that_changed() -> None:
    outcome = b.update_fields(ctx(), WITH_NAME, {"name": "赵拥晨", "title": "CTO", "budget": 10.0})
    data = outcome.events[0].extra_data.mapping_data
    # 10 and 10.0 are one JSON number: no change, and the stored value stays as it was
    assert data == {"title": [None, "CTO"]}
    assert type(outcome.lead.value("budget")) is int


@pytest.mark.parametrize(
    ("before", "after"), [(0, 1), (1, 1.5), (0.5, 0), (None, 0), (0, None), (2, 2.000001)]
)
def test_a_number_that_really_changes_is_reported(before: Any, after: Any) -> None:
    lead = b.update_fields(ctx(), LEAD, {"budget": before}).lead
    (event,) = b.update_fields(ctx(), lead, {"budget": after}).events
    assert event.extra_data.mapping_data == {"budget": [before, after]}


def test_a_number_shows_as_decimal_text_never_with_an_exponent() -> None:
    lead = b.update_fields(ctx(), LEAD, {"budget": 1e-7}).lead
    (event,) = b.update_fields(ctx(), lead, {"budget": 1e20}).events
    assert event.extra_data.mapping_data == {"budget": [1e-7, 1e20]}
    assert event.extra_data.mapping_data_text == {"budget": ["0.0000001", "100000000000000000000"]}
    (event,) = b.update_fields(ctx(), lead, {"budget": 3}).events
    assert event.extra_data.mapping_data_text == {"budget": ["0.0000001", "3"]}


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.0, "3"), (1e2, "100"), (1e15, "1000000000000000"), (1e16, "10000000000000000"),
     (1.5e20, "150000000000000000000"), (-2.0, "-2"), (-0.0, "0"), (2.5, "2.5"),
     (0.1, "0.1"), (1.5e-7, "0.00000015"), (123456.789, "123456.789"),
     # Past 2**53 the digits as sent, not the double's binary value (99999999999999991611392).
     (1e23, "100000000000000000000000"), (-1e23, "-100000000000000000000000"),
     (1.5e300, "15" + "0" * 299), (9007199254740993.0, "9007199254740992"),
     (123456789012345678e10, "1234567890123456700000000000")],
)  # fmt: skip
def test_a_whole_number_shows_its_digits_however_it_was_written(value: float, text: str) -> None:
    (event,) = b.update_fields(ctx(), LEAD, {"budget": value}).events
    assert event.extra_data.mapping_data_text == {"budget": ["-", text]}


def test_a_number_kept_after_its_field_became_text_still_shows_without_an_exponent() -> None:
    # A field's type can change after leads hold values of it (contract.md §6): the old value
    # an event reports is still the number it was, shown as its decimal text.
    numeric = upsert_entry(CATALOG, "fields", "amount", {"name": "Amount", "type": "number"})
    lead = b.update_fields(ctx(numeric), LEAD, {"amount": 1e23}).lead
    texted = upsert_entry(CATALOG, "fields", "amount", {"name": "Amount", "type": "text"})
    (event,) = b.update_fields(ctx(texted), lead, {"amount": "n/a"}).events
    assert event.extra_data.mapping_data == {"amount": [1e23, "n/a"]}
    assert event.extra_data.mapping_data_text == {"amount": ["100000000000000000000000", "n/a"]}
    assert texted.display("gone_field", 1e-7) == "0.0000001"  # a field no longer defined


@pytest.mark.parametrize("to_group", ["source", "ordinary"])
def test_a_value_moves_with_its_field_to_the_other_group(to_group: str) -> None:
    # A field's group can change after leads hold values of it: the next write of the value
    # moves it to the new group, reports the old value as before, and never keeps both.
    from_group = "ordinary" if to_group == "source" else "source"
    before_cat = upsert_entry(CATALOG, "fields", "g1", {"name": "G1", "group": from_group})
    write = b.update_fields if from_group == "ordinary" else b.change_source
    lead = write(ctx(before_cat), LEAD, {"g1": "a"}).lead
    moved = upsert_entry(CATALOG, "fields", "g1", {"name": "G1", "group": to_group})
    write = b.change_source if to_group == "source" else b.update_fields
    outcome = write(ctx(moved), lead, {"g1": "b"})
    (event,) = outcome.events
    assert event.extra_data.mapping_data == {"g1": ["a", "b"]}
    new_home, old_home = (
        (outcome.lead.source, outcome.lead.fields)
        if to_group == "source"
        else (outcome.lead.fields, outcome.lead.source)
    )
    assert new_home["g1"] == "b" and "g1" not in old_home
    assert write(ctx(moved), outcome.lead, {"g1": "b"}).events == ()  # no change now


def test_a_text_field_holding_digits_is_not_a_number() -> None:
    lead = b.update_fields(ctx(), LEAD, {"title": "1"}).lead
    assert b.update_fields(ctx(), lead, {"title": "1"}).events == ()
    with pytest.raises(ValidationError):
        b.update_fields(ctx(), lead, {"title": 1})


# ---- owner changes: scene_type and action_keyword ----------------------------------------------

SYSTEM_OP = SYSTEM
PERSON_OPS = (USER, MEMBER)
SCENES: list[tuple[int, Operator, str]] = [
    (1, SYSTEM_OP, "auto_distribution"),
    (1, USER, "auto_distribution"),
    (2, USER, "manual_distribution"),
    (2, MEMBER, "manual_distribution"),
    (2, SYSTEM_OP, "manual_distribution"),
    (3, MEMBER, "manual_distribution"),
    (4, USER, "manual_distribution"),
    (4, MEMBER, "manual_distribution"),
    (5, SYSTEM_OP, "auto_distribution"),
    (6, SYSTEM_OP, "auto_distribution"),
    (6, USER, "manual_distribution"),
    (6, MEMBER, "manual_distribution"),
]


@pytest.mark.parametrize(("scene", "operator", "keyword"), SCENES)
def test_action_keyword_follows_the_scene_table(
    scene: int, operator: Operator, keyword: str
) -> None:
    start, owner = (OWNED, None) if scene in (4, 5) else (LEAD, BOB)
    outcome = b.change_owner(ctx(operator=operator), start, owner, scene)
    (event,) = outcome.events
    extra = event.extra_data.model_dump()
    assert (event.event_type, event.action_keyword) == ("object_change_owner", keyword)
    assert extra["scene_type"] == scene
    assert extra["former_owner"] == start.owner
    assert extra["former_owner_name"] == ("王芳" if start.owner else "")
    assert extra["owner"] == owner == outcome.lead.owner
    assert extra["operator_type"] == operator.operator_type


def test_owner_change_between_two_members_names_both() -> None:
    event = b.change_owner(ctx(), OWNED, BOB, 2, notes="换人跟进").events[0]
    extra = event.extra_data.model_dump()
    assert extra["notes"] == "换人跟进"
    assert extra["mapping_data"] == {"owner": [ALICE, BOB]}
    assert extra["mapping_data_text"] == {"owner": ["王芳", "李娜"]}
    assert extra["entity_change_mapping"] == {
        "owner": {
            "before": {"value": ALICE, "text": "王芳"},
            "after": {"value": BOB, "text": "李娜"},
        }
    }


@pytest.mark.parametrize(("scene", "operator"), [(4, MEMBER), (5, SYSTEM)])
def test_return_to_another_pool_emits_owner_then_pool_change(
    scene: int, operator: Operator
) -> None:
    outcome = b.change_owner(ctx(operator=operator), OWNED, None, scene, lead_pool="sales")
    owner_event, pool_event = outcome.events
    assert [e.event_type for e in outcome.events] == [
        "object_change_owner",
        "object_change_lead_pool",
    ]
    assert [owner_event.entity_version, pool_event.entity_version] == [
        OWNED.version + 1,
        OWNED.version + 2,
    ]
    assert outcome.lead.version == OWNED.version + 2
    assert (outcome.lead.owner, outcome.lead.lead_pool) == (None, "sales")
    owner_extra = owner_event.extra_data.model_dump()
    assert owner_extra["mapping_data"] == {"owner": [ALICE, None]}
    assert owner_extra["mapping_data_text"] == {"owner": ["王芳", "-"]}
    assert owner_extra["scene_type"] == scene
    pool_extra = pool_event.extra_data.model_dump()
    # the pool event describes the lead after the owner change: owner already null
    assert pool_extra["owner"] is None
    assert pool_extra["mapping_data"] == {"lead_pool": ["market", "sales"]}
    assert pool_extra["mapping_data_text"] == {"lead_pool": ["市场公海", "销售公海"]}
    assert (pool_extra["from_lead_pool"], pool_extra["to_lead_pool"]) == ("market", "sales")
    assert pool_extra["entity_change_mapping"] == {
        "lead_pool": {
            "before": {"value": "market", "text": "市场公海"},
            "after": {"value": "sales", "text": "销售公海"},
        }
    }
    assert owner_event.event_id != pool_event.event_id
    assert owner_event.create_time == pool_event.create_time


def test_pool_change_of_an_ownerless_lead_in_scene_4_emits_only_the_pool_event() -> None:
    outcome = b.change_owner(ctx(), LEAD, None, 4, lead_pool="sales")
    assert [e.event_type for e in outcome.events] == ["object_change_lead_pool"]
    assert outcome.events[0].entity_version == LEAD.version + 1


# ---- time zones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "created", "updated"),
    [
        ("Asia/Shanghai", "2023-02-21 14:50:53", "2023-07-01 08:00:00"),
        ("UTC", "2023-02-21 06:50:53", "2023-07-01 00:00:00"),
        ("America/New_York", "2023-02-21 01:50:53", "2023-06-30 20:00:00"),  # EDT in July
        ("Asia/Kolkata", "2023-02-21 12:20:53", "2023-07-01 05:30:00"),
    ],
)
def test_created_timestamp_is_in_the_tenant_time_zone(
    timezone: str, created: str, updated: str
) -> None:
    cat = make_catalog(timezone)
    outcome = b.create_lead(b.Context(cat, T0, lambda: "01A", SYSTEM), "L1", {"name": "x"})
    extra = outcome.events[0].extra_data.model_dump()
    assert extra["created_timestamp"] == created
    assert extra["mapping_data"]["to_baby_lead_timestamp"] == [created]
    assert extra["mapping_data_text"]["to_baby_lead_timestamp"] == created
    july = 1688169600  # 2023-07-01 00:00:00 UTC
    event = b.change_life_cycle(ctx(cat, now=july), outcome.lead, "mql").events[0]
    extra = event.extra_data.model_dump()
    assert extra["created_timestamp"] == updated
    assert extra["mapping_data"]["to_mql_timestamp"] == [None, updated]


# ---- lifecycle stages ------------------------------------------------------------------------


def test_re_entering_a_stage_gives_old_and_new_timestamp() -> None:
    mql = b.change_life_cycle(ctx(now=T0 + 3600), LEAD, "mql").lead
    back = b.change_life_cycle(ctx(now=T0 + 7200), mql, "baby_lead")
    extra = back.events[0].extra_data.model_dump()
    assert extra["mapping_data"] == {
        "life_status": ["mql", "baby_lead"],
        "to_baby_lead_timestamp": ["2023-02-21 14:50:53", "2023-02-21 16:50:53"],
    }
    assert extra["mapping_data_text"]["life_status"] == ["市场认可线索", "初始线索"]
    assert (extra["from_life_status"], extra["to_life_status"]) == ("mql", "baby_lead")
    # leaving a stage keeps when the lead entered it
    assert back.lead.value("to_mql_timestamp") == "2023-02-21 15:50:53"
    again = b.change_life_cycle(ctx(now=T0 + 10800), back.lead, "mql").events[0]
    assert again.extra_data.mapping_data["to_mql_timestamp"] == [
        "2023-02-21 15:50:53",
        "2023-02-21 17:50:53",
    ]


def test_skipping_stages_stamps_only_the_stage_entered() -> None:
    extra = b.change_life_cycle(ctx(), LEAD, "customer").events[0].extra_data.model_dump()
    assert list(extra["mapping_data"]) == ["life_status", "to_customer_timestamp"]
    assert extra["entity_change_mapping"] == {
        "life_status": {
            "before": {"value": "baby_lead", "text": "初始线索"},
            "after": {"value": "customer", "text": "成交客户"},
        }
    }


def test_a_tenant_stage_is_a_stage_like_the_defaults() -> None:
    cat = upsert_entry(CATALOG, "life_stages", "vip", {"name": "重要客户"})
    lead = new_lead(cat)
    extra = b.change_life_cycle(ctx(cat), lead, "vip").events[0].extra_data.model_dump()
    assert extra["mapping_data_text"] == {
        "life_status": ["初始线索", "重要客户"],
        "to_vip_timestamp": ["-", "2023-02-21 15:50:53"],
    }


def test_a_tenant_first_stage_is_where_leads_start() -> None:
    cat = upsert_entry(CATALOG, "life_stages", "raw", {"name": "原始", "order": 0})
    create = b.create_lead(b.Context(cat, T0, lambda: "01A", SYSTEM), "L1", {})
    extra = create.events[0].extra_data.model_dump()
    assert extra["life_status"] == "raw"
    assert extra["mapping_data"]["to_raw_timestamp"] == ["2023-02-21 14:50:53"]


# ---- status and pool -------------------------------------------------------------------------


def test_status_change_and_clear() -> None:
    set_event = b.change_status(ctx(), LEAD, FOLLOWING_UP).events[0].extra_data.model_dump()
    assert (set_event["from_leads_status"], set_event["to_leads_status"]) == ("", FOLLOWING_UP)
    assert set_event["mapping_data_text"] == {"leads_status": ["-", "跟进中"]}
    cleared = b.change_status(ctx(), WITH_STATUS, None).events[0].extra_data.model_dump()
    assert (cleared["from_leads_status"], cleared["to_leads_status"]) == (WON, "")
    assert cleared["mapping_data"] == {"leads_status": [WON, None]}
    assert cleared["entity_change_mapping"] == {
        "leads_status": {"before": {"value": WON, "text": "已成交"}, "after": None}
    }


# ---- custom fields ---------------------------------------------------------------------------


def test_custom_fields_travel_with_their_display_text() -> None:
    outcome = b.update_fields(
        ctx(),
        LEAD,
        {
            "grade": "a",
            "budget": 12.5,
            "visit_date": "2023-03-01",
            "photos": ["https://img/1.png"],
            "name": "赵拥晨",
        },
    )
    extra = outcome.events[0].extra_data.model_dump()
    # builtin fields first in contract order, then custom fields by code
    assert list(extra["mapping_data"]) == ["name", "budget", "grade", "photos", "visit_date"]
    assert extra["mapping_data"]["grade"] == [None, "a"]
    assert extra["mapping_data"]["budget"] == [None, 12.5]
    assert extra["mapping_data"]["photos"] == [None, '["https://img/1.png"]']
    assert extra["mapping_data_text"] == {
        "name": ["-", "赵拥晨"],
        "budget": ["-", "12.5"],
        "grade": ["-", "A级"],
        "photos": ["-", "image"],
        "visit_date": ["-", "2023-03-01"],
    }
    changed = b.update_fields(ctx(), outcome.lead, {"grade": "b", "budget": 0, "visit_date": None})
    extra = changed.events[0].extra_data.model_dump()
    assert extra["mapping_data"] == {
        "budget": [12.5, 0],
        "grade": ["a", "b"],
        "visit_date": ["2023-03-01", None],
    }
    assert extra["mapping_data_text"]["grade"] == ["A级", "B级"]
    assert extra["mapping_data_text"]["visit_date"] == ["2023-03-01", "-"]
    assert changed.lead.value("visit_date") is None


def test_custom_fields_at_creation_and_custom_source_fields() -> None:
    create = b.create_lead(
        b.Context(CATALOG, T0, lambda: "01A", SYSTEM),
        "L1",
        {"grade": "b", "budget": 3, "referrer": "老王", "utm_source": "wechat"},
    )
    extra = create.events[0].extra_data.model_dump()
    assert extra["mapping_data_text"]["grade"] == "B级"
    assert extra["mapping_data_text"]["budget"] == "3"
    assert create.lead.source == {"referrer": "老王", "utm_source": "wechat"}
    assert "grade" in create.lead.fields
    source = b.change_source(ctx(), create.lead, {"referrer": "老李", "utm_source": None})
    assert source.events[0].extra_data.mapping_data == {
        "utm_source": ["wechat", None],
        "referrer": ["老王", "老李"],
    }
    assert source.lead.source == {"referrer": "老李"}


@pytest.mark.parametrize(
    ("kind", "key", "body", "loc", "msg"),
    [
        ("fields", "grade", {"name": "等级", "type": "option"}, ("body", "options"),
         "an option field needs options: {value: label, ...}"),
        ("fields", "budget", {"name": "预算", "type": "number", "options": {"a": "A"}},
         ("body", "options"), "only option fields take options"),
        ("fields", "x", {"name": "X", "type": "reference"}, ("body", "type"),
         "must be one of text, number, date, datetime, image, option"),
        ("fields", "x", {"name": "X", "group": "system"}, ("body", "group"),
         "must be one of ordinary, source"),
        ("fields", "title", {"name": "职位"}, ("key",),
         "'title' is a built-in field and cannot be redefined"),
        ("fields", "to_mql_timestamp", {"name": "t"}, ("key",),
         "'to_mql_timestamp' is a built-in field and cannot be redefined"),
        ("members", "a b", {"name": "x"}, ("key",),
         "must be 1-64 characters of ASCII letters, digits, '_' and '-'"),
        ("members", "M1", {"name": "x", "role": "admin"}, ("body", "role"),
         "unknown key for members"),
        ("members", "M1", {}, ("body", "name"), "is required"),
        ("life_stages", "vip", {"name": "v", "order": "1"}, ("body", "order"),
         "must be an integer"),
        # A related object's id goes into object_relation events as it is: the rule a
        # relation's own target_object_id is held to.
        *[("objects", "o1", {"name": "O1", "object_id": bad}, ("body", "object_id"),
           "must be 1-64 characters, with no control character and no space around it")
          for bad in (" 57", "57 ", "5\t7", "5\x857", "", "x" * 65, 57)],
        ("objects", "o1", {"name": "O1"}, ("body", "object_id"), "is required"),
    ],
)  # fmt: skip
def test_catalog_entry_refusals(
    kind: str, key: str, body: dict[str, Any], loc: tuple[str, ...], msg: str
) -> None:
    with pytest.raises(ValidationError) as info:
        upsert_entry(CATALOG, kind, key, body)
    assert (info.value.errors[0].loc, info.value.errors[0].msg) == (loc, msg)


# ---- relation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("account", None, "57"),
        ("account", "99", "99"),
        ("opportunity", None, ""),
        ("lead", None, "56"),
    ],
)
def test_relation_target_object_id(name: str, given: str | None, expected: str) -> None:
    outcome = b.relate(ctx(), LEAD, name, "T1", given)
    extra = outcome.events[0].extra_data.model_dump()
    assert (extra["target_object_name"], extra["target_entity_id"]) == (name, "T1")
    assert extra["target_object_id"] == expected
    assert extra["mapping_data"] == {} == extra["mapping_data_text"]


# ---- notes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "expected"), [(True, 1), (False, 0), (1, 1), (0, 0)])
def test_note_follow_up_flag(flag: Any, expected: int) -> None:
    event = b.add_note(ctx(operator=MEMBER), LEAD, "电话沟通", flag).events[0]
    assert event.extra_data.is_follow_up == expected
    assert event.extra_data.notes == "电话沟通"
    assert event.extra_data.omni_user_uuid == MEMBER.omni_user_uuid


# ---- Operator.parse --------------------------------------------------------------------------

FULL_OPERATOR = {
    "operator_type": 2,
    "operator_id": 3021,
    "omni_user_uuid": "Rt5yU8iO2pA4sD6fG9hJ1k",
    "login_platform": "member_center",
    "login_source_value": "wx8f3a2b1c9d4e5f60",
    "login_source_type": "wechat",
    "login_environment": "mobile",
    "login_source_name": "径硕服务号",
}


def test_operator_parse_accepts_a_full_operator_and_defaults() -> None:
    assert Operator.parse(FULL_OPERATOR) == Operator(**FULL_OPERATOR)  # type: ignore[arg-type]
    assert Operator.parse(None) is SYSTEM
    assert Operator.parse({}) == SYSTEM
    assert Operator.parse({"operator_type": 1, "operator_id": 17, "omni_user_uuid": None}) == (
        Operator(operator_type=1, operator_id=17)
    )


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        ("member", ("body", "operator"), "must be an object"),
        ({"operator_name": "x"}, ("body", "operator", "operator_name"), "unknown key"),
        ({"operator_type": 3}, ("body", "operator", "operator_type"),
         "must be 0 (system), 1 (user) or 2 (member)"),
        ({"operator_type": True}, ("body", "operator", "operator_type"),
         "must be 0 (system), 1 (user) or 2 (member)"),
        ({"operator_type": "1"}, ("body", "operator", "operator_type"),
         "must be 0 (system), 1 (user) or 2 (member)"),
        ({"operator_type": 1.0}, ("body", "operator", "operator_type"),
         "must be 0 (system), 1 (user) or 2 (member)"),
        ({"operator_type": 1, "operator_id": -1}, ("body", "operator", "operator_id"),
         "must be a non-negative integer"),
        ({"operator_type": 1, "operator_id": "17"}, ("body", "operator", "operator_id"),
         "must be a non-negative integer"),
        ({"operator_type": 1, "operator_id": True}, ("body", "operator", "operator_id"),
         "must be a non-negative integer"),
        ({"operator_type": 0, "operator_id": 5}, ("body", "operator", "operator_id"),
         "must be 0 when operator_type is 0"),
        ({"login_source_value": 5}, ("body", "operator", "login_source_value"),
         "must be a string of at most 200 characters"),
        ({"login_platform": 5}, ("body", "operator", "login_platform"),
         "must be a string of at most 64 characters"),
        ({"login_source_name": "x" * 201}, ("body", "operator", "login_source_name"),
         "must be a string of at most 200 characters"),
        ({"login_environment": "x" * 65}, ("body", "operator", "login_environment"),
         "must be a string of at most 64 characters"),
        ({"login_platform": "a\nb"}, ("body", "operator", "login_platform"),
         "must not contain control characters"),
        ({"login_source_type": "wechat\x00"}, ("body", "operator", "login_source_type"),
         "must not contain control characters"),
        ({"login_environment": "pc\x7f"}, ("body", "operator", "login_environment"),
         "must not contain control characters"),
        ({"login_environment": 1}, ("body", "operator", "login_environment"),
         "must be a string of at most 64 characters"),
    ],
)  # fmt: skip
def test_operator_parse_refusals(data: Any, loc: tuple[str, ...], msg: str) -> None:
    with pytest.raises(ValidationError) as info:
        Operator.parse(data)
    assert (info.value.errors[0].loc, info.value.errors[0].msg) == (loc, msg)


def test_operator_fields_travel_on_every_event() -> None:
    op = Operator.parse(FULL_OPERATOR)
    extra = b.add_note(ctx(operator=op), LEAD, "n").events[0].extra_data.model_dump()
    for key in ("operator_type", "operator_id", "omni_user_uuid", "login_platform"):
        assert extra[key] == FULL_OPERATOR[key]
    assert extra["timeline_data"] == {
        "login_platform": "member_center",
        "login_environment": "mobile",
        "login_source_type": "wechat",
        "login_source_name": "径硕服务号",
    }


@pytest.mark.parametrize(
    "value", ["tablet", "wechat_mini_program", "iPad OS 17", "小程序", "x" * 64, ""]
)
def test_login_vocabularies_are_open_and_kept_as_given(value: str) -> None:
    data = {"login_environment": value, "login_platform": value, "login_source_type": value}
    op = Operator.parse({"operator_type": 1, "operator_id": 17, **data})
    extra = b.add_note(ctx(operator=op), LEAD, "n").events[0].extra_data.model_dump()
    assert {k: extra[k] for k in data} == data
    timeline = extra["timeline_data"]
    assert (timeline["login_environment"], timeline["login_platform"]) == (value, value)
    assert timeline["login_source_type"] == value


# ---- the operator's member: omni_user_uuid from the catalog's binding -------------------------

BOUND_UUID = "Bd3uUsErUuId000000000a"


def bound_catalog() -> Catalog:
    """CATALOG with member ALICE bound to back-office account 17 (USER's operator_id)."""
    return upsert_entry(
        CATALOG, "members", ALICE, {"name": "王芳", "operator_id": 17, "omni_user_uuid": BOUND_UUID}
    )


def test_an_operator_bound_to_a_member_reports_that_members_user_id() -> None:
    cat = bound_catalog()
    assert cat.member_bound_to(17) == cat.members[ALICE]
    outcome = b.change_owner(ctx(cat, operator=USER), LEAD, BOB, 2)
    (event,) = outcome.events
    assert event.extra_data.omni_user_uuid == BOUND_UUID
    assert (event.extra_data.operator_type, event.extra_data.operator_id) == (1, 17)


def test_every_event_of_one_behaviour_carries_the_bound_user_id() -> None:
    cat = bound_catalog()
    owned = b.change_owner(ctx(cat), LEAD, BOB, 2).lead
    events = b.change_owner(ctx(cat), owned, None, 4, lead_pool="sales").events
    assert [e.event_type for e in events] == ["object_change_owner", "object_change_lead_pool"]
    assert {e.extra_data.omni_user_uuid for e in events} == {BOUND_UUID}


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (Operator(operator_type=1, operator_id=17, omni_user_uuid="FromRequest"), "FromRequest"),
        (Operator(operator_type=2, operator_id=17), BOUND_UUID),  # a member account: same rule
        (Operator(operator_type=1, operator_id=18), ""),  # bound to nobody
        (SYSTEM, ""),
    ],
)
def test_the_request_value_wins_and_unbound_operators_report_none(
    operator: Operator, expected: str
) -> None:
    event = b.add_note(ctx(bound_catalog(), operator=operator), LEAD, "n").events[0]
    assert event.extra_data.omni_user_uuid == expected


def test_a_member_bound_without_a_user_id_reports_empty() -> None:
    cat = upsert_entry(CATALOG, "members", BOB, {"name": "李娜", "operator_id": 17})
    assert b.add_note(ctx(cat), LEAD, "n").events[0].extra_data.omni_user_uuid == ""


def test_binding_an_operator_already_bound_to_another_member_is_a_conflict() -> None:
    cat = bound_catalog()
    with pytest.raises(ConflictError, match=f"operator_id 17 is already bound to member '{ALICE}'"):
        upsert_entry(cat, "members", BOB, {"name": "李娜", "operator_id": 17})
    assert cat.member_bound_to(17) == cat.members[ALICE]  # unchanged
    # The same member may be replaced with its binding; unbinding frees the account for another.
    again = upsert_entry(cat, "members", ALICE, {"name": "王芳二", "operator_id": 17})
    assert again.member_bound_to(17) == again.members[ALICE]
    freed = upsert_entry(cat, "members", ALICE, {"name": "王芳"})
    assert freed.member_bound_to(17) is None
    moved = upsert_entry(freed, "members", BOB, {"name": "李娜", "operator_id": 17})
    assert moved.member_bound_to(17) == moved.members[BOB]


@pytest.mark.parametrize("operator_id", [0, -1, "17", True, 1.5, 17.0])
def test_a_binding_must_be_a_positive_integer(operator_id: Any) -> None:
    with pytest.raises(ValidationError) as info:
        upsert_entry(CATALOG, "members", ALICE, {"name": "王芳", "operator_id": operator_id})
    assert info.value.errors[0].loc == ("body", "operator_id")


def test_the_binding_survives_the_catalogs_json_round_trip() -> None:
    from leadhook.domain.catalog_entries import catalog_from_json, catalog_to_json

    cat = bound_catalog()
    shown = catalog_to_json(cat)
    alice = next(m for m in shown["members"] if m["id"] == ALICE)
    assert alice == {"id": ALICE, "name": "王芳", "omni_user_uuid": BOUND_UUID, "operator_id": 17}
    assert next(m for m in shown["members"] if m["id"] == BOB)["operator_id"] is None
    assert catalog_from_json(shown) == cat
    assert catalog_from_json(shown).member_bound_to(17) == cat.members[ALICE]


def test_a_lead_copy_changes_only_what_it_names_and_refuses_unknown_fields() -> None:
    """Catches: `Lead.but` (the hot path's `dataclasses.replace`) sharing state with the
    original, or accepting a misspelt field the way a plain `__dict__` update would."""
    import dataclasses

    import pytest

    from leadhook.domain.lead import Lead

    lead = Lead(id="L", mid="m", version=1, business_type="b", owner=None, lead_pool="p",
                life_status="s", fields={"name": "a"})  # fmt: skip
    copy = lead.but(version=2, owner="u")
    assert copy == dataclasses.replace(lead, version=2, owner="u")
    assert (lead.version, lead.owner) == (1, None)
    assert copy.fields is lead.fields  # shared like replace: a Lead never mutates its maps
    with pytest.raises(TypeError, match="no field vresion"):
        lead.but(vresion=3)


@pytest.mark.parametrize("entity_id", ["ACME.001", "acct:42", "客户001", "a b", "x" * 64])
def test_a_relation_takes_another_systems_ids_as_it_spells_them(entity_id: str) -> None:
    (event,) = b.relate(ctx(), LEAD, "account", entity_id, "obj.57:v2").events
    assert event.extra_data.model_dump()["target_entity_id"] == entity_id
    assert event.extra_data.model_dump()["target_object_id"] == "obj.57:v2"
