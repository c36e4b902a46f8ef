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
from pathlib import Path
from typing import Any

import pytest

from leadhook.domain.events import EVENT_TYPES, LeadEvent
from leadhook.domain.lead import Relation
from leadhook.domain.replay import fold
from leadhook.domain.specimens import (
    ACCOUNT,
    FOLLOWING_UP,
    LEAD_ID,
    MEMBER_2,
    STEPS,
    Life,
    create,
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
