"""The contract's examples, reproduced by the domain: one lead's life, event by event.

The source document's own example (`docs/examples/object_create.json`) is the lead's creation;
every other file in `docs/examples` continues that lead's life, one event per file, in
`entity_version` order. `leadhook.domain.specimens` calls each behaviour with the operator,
time and catalog its example implies, and must produce that example exactly: same keys, same
order, same values.

The same life also writes `tests/golden/<event_type>.json` (the claim for the owner change);
`LEADHOOK_UPDATE_GOLDEN=1 pytest tests/unit/test_golden_examples.py` rewrites them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from leadhook.domain import behaviours as b
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import upsert_entry
from leadhook.domain.events import EVENT_TYPES, LeadEvent
from leadhook.domain.lead import Relation
from leadhook.domain.operator import Operator
from leadhook.domain.replay import fold
from leadhook.domain.specimens import (
    ACCOUNT,
    BACK_OFFICE,
    FOLLOWING_UP,
    LEAD_ID,
    MEMBER_2,
    STEPS,
    WANG_FANG,
    Life,
    at,
    create,
    event_id,
    examples,
    life_catalog,
    live,
    source_catalog,
)

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "docs" / "examples"
GOLDEN = Path(__file__).parents[1] / "golden"
UPDATE_GOLDEN = os.environ.get("LEADHOOK_UPDATE_GOLDEN") == "1"


def dump(event: LeadEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def ordered(value: Any) -> Any:
    """Turn every object into a list of (key, value) pairs, so that key order counts."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def assert_same_event(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got == expected
    assert ordered(got) == ordered(expected), "same keys and values, but in another order"
    as_text = json.dumps(got, ensure_ascii=False, indent=2)
    assert as_text == json.dumps(expected, ensure_ascii=False, indent=2)


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def life() -> Life:
    return live(life_catalog())


# ---- the source document's own example ------------------------------------------------------


def test_create_reproduces_the_source_example_apart_from_the_additions() -> None:
    outcome = create(source_catalog(), lambda: "01HQZZZZZZZZZZZZZZZZZZZZZZ")
    got = dump(outcome.events[0])
    assert got.pop("event_id") == "01HQZZZZZZZZZZZZZZZZZZZZZZ"
    assert got.pop("entity_version") == 1
    assert_same_event(got, example("object_create.json"))


def test_create_with_an_id_factory_reproduces_the_example_with_additions() -> None:
    outcome = create(source_catalog(), lambda: "01GSQ8H3G8Q6W7ZQ2V8N5K4T01")
    assert_same_event(dump(outcome.events[0]), example("object_create.with-additions.json"))
    lead = outcome.lead
    assert (lead.id, lead.version, lead.owner, lead.lead_pool) == (LEAD_ID, 1, None, "market")
    assert lead.value("to_baby_lead_timestamp") == "2023-02-21 14:50:53"


def test_the_additions_are_the_only_difference_between_the_two_create_examples() -> None:
    verbatim = example("object_create.json")
    added = example("object_create.with-additions.json")
    assert [k for k in added if k not in verbatim] == ["event_id", "entity_version"]
    assert {k: v for k, v in added.items() if k in verbatim} == verbatim


# ---- the rest of the lead's life -----------------------------------------------------------


def test_the_life_covers_every_example_file_once() -> None:
    files = {p.name for p in EXAMPLES.glob("*.json")} - {"object_create.json"}
    assert files == {"object_create.with-additions.json", *(s.example for s in STEPS)}


@pytest.mark.parametrize("name", ["object_create.with-additions.json", *(s.example for s in STEPS)])
def test_the_life_reproduces_each_example(life: Life, name: str) -> None:
    expected = example(name)
    got = dump(life.events[name])
    assert got["entity_version"] == expected["entity_version"]
    assert_same_event(got, expected)


def test_versions_rise_by_one_and_every_event_type_occurs(life: Life) -> None:
    events = list(life.events.values())
    assert [e.entity_version for e in events] == list(range(1, 15))
    assert {e.event_type for e in events} == set(EVENT_TYPES)
    assert [e.create_time for e in events] == sorted(e.create_time for e in events)


def test_the_life_ends_in_the_state_its_events_describe(life: Life) -> None:
    lead = life.lead
    assert lead.version == 14
    assert (lead.owner, lead.lead_pool, lead.life_status) == (None, "sales", "mql")
    assert (lead.leads_status, lead.voided) == (FOLLOWING_UP, False)
    assert lead.team_members == (MEMBER_2,)
    assert lead.relations == (Relation("account", ACCOUNT, "57"),)
    assert lead.value("title") == "技术总监"
    assert lead.value("utm_campaign") == "2023-spring-webinar"
    assert lead.value("to_mql_timestamp") == "2023-02-21 19:50:53"
    assert fold(life_catalog(), life.events.values()) == lead


# ---- golden files --------------------------------------------------------------------------


def golden_text(event: LeadEvent) -> str:
    return json.dumps(dump(event), indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_golden_file_pins_the_event(life: Life, event_type: str) -> None:
    path = GOLDEN / f"{event_type}.json"
    text = golden_text(examples()[event_type])
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    hint = "if the change is intended, rerun with LEADHOOK_UPDATE_GOLDEN=1 and review the diff"
    assert path.is_file(), f"{path} is missing: {hint}"
    assert path.read_text(encoding="utf-8") == text, f"{path} no longer matches: {hint}"


def test_no_stray_golden_file() -> None:
    stray = {p.name for p in GOLDEN.glob("*.json")} - {f"{t}.json" for t in EVENT_TYPES}
    assert not stray, f"tests/golden holds files of no event type: {sorted(stray)}"


# ---- cases beyond the examples: section 1 of the contract as corrected -------------------------
# Each case starts from the source example's lead (version 1) and pins, as JSON, what the
# behaviours emit: the member's user id filled from the catalog's binding, a login environment
# outside the two examples kept as given, and numbers equal as JSON that change nothing.

CASES = GOLDEN / "cases"
BOUND_OPERATOR_UUID = "Xm3nB5vC7xZ9lK2jH4gF6d"
WORKWECHAT_MEMBER = Operator(
    operator_type=2,
    operator_id=3021,
    omni_user_uuid="Rt5yU8iO2pA4sD6fG9hJ1k",
    login_platform="member_center",
    login_source_value="ww5e1c9a7b3d2f4a60",
    login_source_type="workwechat_user",
    login_environment="workwechat_sidebar",
    login_source_name="企业微信侧边栏",
)


def case_catalog() -> Catalog:
    """The life's catalog, with the back-office account 17 bound to 王芳 and a number field."""
    cat = upsert_entry(
        life_catalog(),
        "members",
        WANG_FANG,
        {
            "name": "王芳",
            "operator_id": BACK_OFFICE.operator_id,
            "omni_user_uuid": BOUND_OPERATOR_UUID,
        },
    )
    return upsert_entry(cat, "fields", "budget", {"name": "预算", "type": "number"})


def bound_operator_case() -> list[dict[str, Any]]:
    """The back-office user (bound to 王芳) adds a follow-up note: omni_user_uuid is hers."""
    cat = case_catalog()
    lead = create(cat, lambda: event_id(1)).lead
    ctx = b.Context(cat, at(2), lambda: event_id(2), BACK_OFFICE)
    outcome = b.add_note(ctx, lead, "电话沟通,客户对私有化部署感兴趣,下周演示", True)
    return [dump(e) for e in outcome.events]


def open_login_environment_case() -> list[dict[str, Any]]:
    """A member logged in from the WeCom sidebar: login fields outside the examples, as given."""
    cat = case_catalog()
    lead = create(cat, lambda: event_id(1)).lead
    ctx = b.Context(cat, at(2), lambda: event_id(2), WORKWECHAT_MEMBER)
    return [dump(e) for e in b.change_owner(ctx, lead, WANG_FANG, 3).events]


def numeric_no_op_case() -> list[dict[str, Any]]:
    """Set a number field to 0, 0.0, 1.0, 1 and 1 again: only 0 and 1.0 change it."""
    cat = case_catalog()
    lead = create(cat, lambda: event_id(1)).lead
    steps: list[dict[str, Any]] = []
    for n, value in enumerate((0, 0.0, -0.0, 1.0, 1), start=2):
        ctx = b.Context(cat, at(n), partial(event_id, lead.version + 1), BACK_OFFICE)
        outcome = b.update_fields(ctx, lead, {"budget": value})
        steps.append({"fields": {"budget": value}, "events": [dump(e) for e in outcome.events]})
        lead = outcome.lead
    return steps


GOLDEN_CASES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "bound_operator.json": bound_operator_case,
    "open_login_environment.json": open_login_environment_case,
    "numeric_no_op.json": numeric_no_op_case,
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_case_pins_what_is_emitted(name: str) -> None:
    path = CASES / name
    text = json.dumps(GOLDEN_CASES[name](), indent=2, ensure_ascii=False) + "\n"
    if UPDATE_GOLDEN:
        CASES.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    hint = "if the change is intended, rerun with LEADHOOK_UPDATE_GOLDEN=1 and review the diff"
    assert path.is_file(), f"{path} is missing: {hint}"
    assert path.read_text(encoding="utf-8") == text, f"{path} no longer matches: {hint}"


def test_no_stray_golden_case() -> None:
    stray = {p.name for p in CASES.glob("*.json")} - set(GOLDEN_CASES)
    assert not stray, f"tests/golden/cases holds files of no case: {sorted(stray)}"


def test_the_bound_operator_reports_the_members_user_id() -> None:
    (event,) = bound_operator_case()
    extra = event["extra_data"]
    assert (extra["operator_type"], extra["operator_id"]) == (1, BACK_OFFICE.operator_id)
    assert extra["omni_user_uuid"] == BOUND_OPERATOR_UUID
    # the same behaviour in the examples' catalog (no binding) reports none, as the example does
    lead = create(life_catalog(), lambda: event_id(1)).lead
    ctx = b.Context(life_catalog(), at(2), lambda: event_id(2), BACK_OFFICE)
    assert b.add_note(ctx, lead, "n").events[0].extra_data.omni_user_uuid == ""


def test_the_open_login_environment_is_kept_as_given() -> None:
    (event,) = open_login_environment_case()
    extra = event["extra_data"]
    assert extra["login_environment"] == "workwechat_sidebar"
    assert extra["login_source_type"] == "workwechat_user"
    assert extra["timeline_data"]["login_environment"] == "workwechat_sidebar"
    assert extra["timeline_data"]["login_source_name"] == "企业微信侧边栏"


def test_numbers_equal_as_json_emit_nothing() -> None:
    steps = numeric_no_op_case()
    assert [len(s["events"]) for s in steps] == [1, 0, 0, 1, 0]
    assert steps[0]["events"][0]["extra_data"]["mapping_data"] == {"budget": [None, 0]}
    assert steps[3]["events"][0]["extra_data"]["mapping_data"] == {"budget": [0, 1.0]}
    assert [s["events"][0]["entity_version"] for s in steps if s["events"]] == [2, 3]
