"""Properties of any lead life: random, catalog-consistent behaviour sequences on one lead.

For every life hypothesis draws (refused steps are skipped, as a caller would see them):
(a) each `[before, after]` of `mapping_data` is the field's value before and after its event, and
    the envelope (owner, life_status, business_type) and display texts agree with it;
(b) `entity_version` is 1 on create and rises by exactly one per event;
(c) folding all events (also after a JSON round trip) rebuilds the final lead exactly;
(d) every event's JSON validates against its JSON Schema;
(e) no event reports an empty change: no `[before, after]` pair whose two sides are equal as
    JSON values (numbers compare as numbers: 0 and 0.0, 1 and 1.0 are one value).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from leadhook.domain import behaviours as b
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import upsert_entry
from leadhook.domain.errors import LeadhookError, LeadVoidedError
from leadhook.domain.events import (
    EVENT_TYPES,
    CreateExtra,
    LeadEvent,
    event_json,
    json_schema,
    parse_event,
    parse_event_json,
)
from leadhook.domain.lead import ATTRIBUTE_FIELDS, Lead
from leadhook.domain.operator import SYSTEM, Operator
from leadhook.domain.replay import fold
from leadhook.domain.values import same

BT, BT2 = "WNh7rwLXUQPFwACQ6EKPqD", "Other_type"
MEMBERS = ("Kq7vX2mNpR4sT8wY3zA5bC", "Hd9fG6jL2mP4rS7tV1xZ3c", "Wn4pQ8sT2vX6zB9dF3hJ5k")
STATUSES = ("St6uI9oP3aS5dF8gH1jK4l", "won")
STAGES = ("baby_lead", "mql", "sql", "customer", "vip")
POOLS = ("market", "sales", "vip_pool")
T0 = 1676962253

VALIDATORS = {t: Draft202012Validator(json_schema(t)) for t in EVENT_TYPES}
OPERATORS = (
    SYSTEM,
    Operator(operator_type=1, operator_id=17, login_platform="jingsocial", login_environment="pc"),
    Operator(
        operator_type=2,
        operator_id=3021,
        omni_user_uuid="Rt5yU8iO2pA4sD6fG9hJ1k",
        login_platform="member_center",
        login_source_value="wx8f3a2b1c9d4e5f60",
        login_source_type="wechat",
        login_environment="mobile",
        login_source_name="径硕服务号",
    ),
)


def make_catalog(timezone: str) -> Catalog:
    cat = Catalog.default("941", BT, timezone=timezone)
    cat = upsert_entry(cat, "business_types", BT, {"name": "Authing"})
    cat = upsert_entry(cat, "business_types", BT2, {"name": "其他"})
    for member, name in zip(MEMBERS, ("王芳", "李娜", "张伟"), strict=True):
        cat = upsert_entry(cat, "members", member, {"name": name})
    cat = upsert_entry(cat, "lead_statuses", STATUSES[0], {"name": "跟进中"})
    cat = upsert_entry(cat, "lead_statuses", STATUSES[1], {"name": "已成交"})
    cat = upsert_entry(cat, "life_stages", "vip", {"name": "重要客户"})
    cat = upsert_entry(cat, "lead_pools", "vip_pool", {"name": "重要公海"})
    cat = upsert_entry(cat, "objects", "account", {"name": "客户", "object_id": "57"})
    cat = upsert_entry(
        cat,
        "fields",
        "grade",
        {"name": "等级", "type": "option", "options": {"a": "A级", "b": "B级"}},
    )
    cat = upsert_entry(cat, "fields", "budget", {"name": "预算", "type": "number"})
    cat = upsert_entry(cat, "fields", "visit_date", {"name": "拜访日期", "type": "date"})
    return upsert_entry(cat, "fields", "referrer", {"name": "推荐人", "group": "source"})


CATALOGS = {tz: make_catalog(tz) for tz in ("Asia/Shanghai", "UTC", "America/New_York")}

# Few distinct values, so that "the same value again" (a no-op) happens often.
texts = st.sampled_from([None, "", "赵拥晨", "Zhao", "技术总监", "x" * 30])
ORDINARY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": texts,
    "title": texts,
    "department": texts,
    "email": texts,
    "business_type": st.sampled_from([BT, BT2]),
    "headimgurl": st.sampled_from([None, '["http://a/1.png"]', ["http://b/2.png"], []]),
    "grade": st.sampled_from([None, "a", "b"]),
    # Integers and the floats equal to them, often: setting one over the other must be a no-op.
    "budget": st.one_of(
        st.sampled_from([None, 0, 0.0, -0.0, 1, 1.0]),
        st.sampled_from([0, 0.0, 1, 1.0, 2, 2.0]),
        st.integers(-3, 3),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
    ),
    "visit_date": st.sampled_from([None, "2023-03-01", "2024-02-29"]),
}
SOURCE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "source": texts,
    "utm_source": st.sampled_from([None, "wechat", "google"]),
    "utm_campaign": st.sampled_from([None, "2023-spring-webinar"]),
    "referrer": st.sampled_from([None, "老王", ""]),
}
# Values that a caller may send by mistake: each behaviour must refuse them with a typed error.
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "business_type": st.sampled_from(["Nope", None]),
    "budget": st.sampled_from(["12", True]),
    "visit_date": st.just("2023/03/01"),
    "grade": st.just("c"),
    "headimgurl": st.just("http://not-a-list"),
    "owner": st.sampled_from(MEMBERS),
    "utm_source": st.just("wechat"),
    "nickname": st.just("x"),
}


def field_values(
    draw: st.DrawFn, good: dict[str, st.SearchStrategy[Any]], bad: bool
) -> dict[str, Any]:
    codes = draw(st.lists(st.sampled_from(sorted(good)), min_size=0, max_size=3, unique=True))
    out = {code: draw(good[code]) for code in codes}
    if bad and draw(st.integers(0, 9)) == 0:
        code = draw(st.sampled_from(sorted(BAD_VALUES)))
        out[code] = draw(BAD_VALUES[code])
    return out


Call = Callable[[b.Context, Lead], b.Effect]


@st.composite
def behaviours(draw: st.DrawFn) -> tuple[str, Call]:
    """Draw one behaviour call with mostly valid, sometimes invalid, arguments."""
    kind = draw(
        st.sampled_from(
            [
                "update",
                "source",
                "status",
                "owner",
                "owner",
                "owner",
                "pool",
                "life_cycle",
                "note",
                "add_members",
                "remove_member",
                "void",
                "restore",
                "restore",
                "relate",
            ]
        )
    )
    member = st.sampled_from((*MEMBERS, "Nobody"))
    if kind == "update":
        fields = field_values(draw, ORDINARY_VALUES, bad=True)
        return kind, lambda c, lead: b.update_fields(c, lead, fields)
    if kind == "source":
        fields = field_values(draw, SOURCE_VALUES, bad=True)
        return kind, lambda c, lead: b.change_source(c, lead, fields)
    if kind == "status":
        status = draw(st.sampled_from((*STATUSES, None, "lost")))
        return kind, lambda c, lead: b.change_status(c, lead, status)
    if kind == "owner":
        scene = draw(st.sampled_from((1, 2, 3, 4, 4, 5, 5, 6, 0)))
        owner = None if scene in (4, 5) else draw(st.sampled_from(MEMBERS))
        pool = draw(st.sampled_from((None, *POOLS))) if scene in (4, 5) else None
        if draw(st.integers(0, 9)) == 0:  # now and then, an owner or pool the scene refuses
            owner = draw(st.one_of(st.none(), member))
            pool = draw(st.sampled_from((None, *POOLS, "nope")))
        notes = draw(st.sampled_from(("", "14 天未跟进,自动回收至公海")))
        return kind, lambda c, lead: b.change_owner(
            c, lead, owner, scene, notes=notes, lead_pool=pool
        )
    if kind == "pool":
        pool = draw(st.sampled_from((*POOLS, None, "nope")))
        return kind, lambda c, lead: b.change_lead_pool(c, lead, pool)
    if kind == "life_cycle":
        stage = draw(st.sampled_from((*STAGES, "nope")))
        return kind, lambda c, lead: b.change_life_cycle(c, lead, stage)
    if kind == "note":
        text = draw(st.sampled_from(("电话沟通", "", "follow up")))
        follow = draw(st.booleans())
        return kind, lambda c, lead: b.add_note(c, lead, text, follow)
    if kind == "add_members":
        members = draw(st.lists(member, min_size=0, max_size=3))
        return kind, lambda c, lead: b.add_team_members(c, lead, members)
    if kind == "remove_member":
        who = draw(member)
        return kind, lambda c, lead: b.remove_team_member(c, lead, who)
    if kind == "void":
        reason = draw(st.sampled_from((None, "重复线索")))
        return kind, lambda c, lead: b.void(c, lead, reason)
    if kind == "restore":
        return kind, b.restore
    name = draw(st.sampled_from(("account", "opportunity")))
    entity = draw(st.sampled_from(("Ac2sD4fG6hJ8kL1zX3cV5b", "A2", "bad id")))
    object_id = draw(st.sampled_from((None, "99")))
    return kind, lambda c, lead: b.relate(c, lead, name, entity, object_id)


# ---- the checks ------------------------------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Tell whether two values are one JSON value, written independently of the domain's rule:
    numbers (bool excluded) by numeric value, anything else by its canonical JSON text."""
    numbers = (int, float)
    if all(isinstance(v, numbers) and not isinstance(v, bool) for v in (a, b)):
        return bool(a == b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def all_codes(*leads: Lead) -> set[str]:
    codes = set(ATTRIBUTE_FIELDS)
    for lead in leads:
        codes |= set(lead.fields) | set(lead.source)
    return codes


def check_schema_and_round_trip(event: LeadEvent) -> None:
    payload = event.model_dump(mode="json")
    errors = list(VALIDATORS[event.event_type].iter_errors(payload))
    assert not errors, [e.message for e in errors]
    assert parse_event(payload) == event
    assert json.loads(json.dumps(payload, ensure_ascii=False)) == payload
    # The text stored and sent is Pydantic's own serialisation, byte for byte.
    assert event_json(event) == event.model_dump_json()


def check_create(catalog: Catalog, event: LeadEvent, lead: Lead) -> None:
    extra = event.extra_data
    assert isinstance(extra, CreateExtra)
    assert event.entity_version == 1 == lead.version
    for code, (value,) in extra.mapping_data.items():
        assert same(value, lead.value(code)), code
        assert extra.mapping_data_text[code] == catalog.display(code, value)
    present = {c for c in all_codes(lead) if lead.value(c) is not None}
    assert present == set(extra.mapping_data)
    assert (extra.owner, extra.life_status, extra.business_type) == (
        lead.owner,
        lead.life_status,
        lead.business_type,
    )


def check_outcome(catalog: Catalog, before: Lead, outcome: b.Effect) -> None:
    """Check (a) and (b) for one behaviour's events, chained from `before` to `outcome.lead`."""
    after = outcome.lead
    if not outcome.events:
        assert after == before
        return
    current: dict[str, Any] = {c: before.value(c) for c in all_codes(before, after)}
    touched: set[str] = set()
    version = before.version
    for event in outcome.events:
        version += 1
        assert event.entity_version == version
        extra = event.extra_data
        for code, (old, new) in extra.mapping_data.items():
            assert same(old, current.get(code)), (event.event_type, code, old, current.get(code))
            assert not same(old, new), (event.event_type, code)
            assert not json_equal(old, new), ("empty change", event.event_type, code, old, new)
            assert extra.mapping_data_text[code] == [
                catalog.display(code, old),
                catalog.display(code, new),
            ]
            current[code] = new
            touched.add(code)
        assert set(extra.mapping_data_text) == set(extra.mapping_data)
        assert (extra.owner, extra.life_status, extra.business_type) == (
            current["owner"],
            current["life_status"],
            current["business_type"],
        )
        assert extra.business_type_name == catalog.reference_name(
            "business_types", extra.business_type
        )
        own = extra.model_dump()
        for code, change in own.get("entity_change_mapping", {}).items():
            old, new = extra.mapping_data[code]
            assert change["before"] == (
                None if old is None else {"value": old, "text": catalog.display(code, old)}
            )
            assert change["after"] == (
                None if new is None else {"value": new, "text": catalog.display(code, new)}
            )
    assert after.version == version
    for code in all_codes(before, after):
        if code in touched:
            assert same(current[code], after.value(code)), code
        else:
            assert same(before.value(code), after.value(code)), f"{code} changed unreported"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_life_is_reported_truthfully_and_replays(data: st.DataObject) -> None:
    catalog = CATALOGS[data.draw(st.sampled_from(sorted(CATALOGS)), label="timezone")]
    ids = itertools.count(1)

    def next_id() -> str:
        return f"01HQ{next(ids):022d}"

    now = T0 + data.draw(st.integers(0, 10**8), label="start")
    created = b.create_lead(
        b.Context(catalog, now, next_id, data.draw(st.sampled_from(OPERATORS))),
        "e9vMaiGWybEQ3Nc9xGgwV4",
        data.draw(st.fixed_dictionaries({}, optional={**ORDINARY_VALUES, **SOURCE_VALUES})),
        owner=data.draw(st.sampled_from((None, *MEMBERS)), label="owner"),
        lead_pool=data.draw(st.sampled_from((None, *POOLS)), label="pool"),
        lead_omni_user_uuid=data.draw(st.sampled_from(("", "7wJy7CNpCPWnP7XMYwEHdn"))),
    )
    assert len(created.events) == 1
    check_create(catalog, created.events[0], created.lead)
    check_schema_and_round_trip(created.events[0])
    events: list[LeadEvent] = list(created.events)
    lead = created.lead

    steps = data.draw(st.lists(behaviours(), max_size=20), label="steps")
    for kind, call in steps:
        now += data.draw(st.sampled_from((0, 1, 59, 3600, 86400 * 40)))
        ctx = b.Context(catalog, now, next_id, data.draw(st.sampled_from(OPERATORS)))
        try:
            outcome = call(ctx, lead)
        except LeadhookError as error:
            note_event(f"{kind}: refused ({type(error).__name__})")
            # a voided lead refuses everything but restore, before looking at the input
            if lead.voided:
                assert isinstance(error, LeadVoidedError), (kind, error)
            else:
                assert not isinstance(error, LeadVoidedError)
            continue
        assert not lead.voided or kind == "restore"
        note_event(f"{kind}: {len(outcome.events)} event(s)")
        check_outcome(catalog, lead, outcome)
        for event in outcome.events:
            check_schema_and_round_trip(event)
            assert event.create_time == now
        events.extend(outcome.events)
        lead = outcome.lead

    assert [e.entity_version for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert fold(catalog, events) == lead
    stored = [parse_event_json(e.model_dump_json()) for e in events]
    assert fold(catalog, stored) == lead


NUMBERS = st.one_of(
    st.sampled_from([None, 0, 0.0, -0.0, 1, 1.0, 2, 2.0]),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
)


@settings(max_examples=150, deadline=None)
@given(first=NUMBERS, values=st.lists(NUMBERS, min_size=1, max_size=8))
def test_a_number_field_never_reports_an_empty_change(first: Any, values: list[Any]) -> None:
    """(e) focused on numbers: whatever sequence of ints and floats is set, an event appears
    exactly when the value changes as a JSON number, and the lead keeps the value it had."""
    catalog = CATALOGS["UTC"]
    ids = itertools.count(1)

    def next_id() -> str:
        return f"01HQ{next(ids):022d}"

    lead = b.create_lead(
        b.Context(catalog, T0, next_id), "e9vMaiGWybEQ3Nc9xGgwV4", {"budget": first}
    ).lead
    for value in values:
        before = lead.value("budget")
        outcome = b.update_fields(b.Context(catalog, T0, next_id), lead, {"budget": value})
        if json_equal(before, value):
            assert outcome.events == (), ("empty change", before, value)
            assert same(outcome.lead.value("budget"), before)
        else:
            (event,) = outcome.events
            old, new = event.extra_data.mapping_data["budget"]
            assert same(old, before) and same(new, value) and not json_equal(old, new)
        lead = outcome.lead
