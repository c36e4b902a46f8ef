"""One registry of event types (`LeadEvent` in `leadhook.domain.events`), and every list of them.

What is derived from the registry is checked to be derived (same types, same order); what
cannot be derived (a committed file, a label, a document) is checked against the registry, and
each such place must be named in CONTRIBUTING.md's "Adding an event type".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest

from leadhook import receiver
from leadhook.api.console.i18n import STRINGS
from leadhook.domain import event_types, events, specimens
from leadhook.domain.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    TEST_EVENT_TYPE,
    LeadEvent,
    event_type_of,
)
from leadhook.schemas import schema_documents

REPO = Path(__file__).parents[2]


def registry() -> tuple[Any, ...]:
    """The models of the union `LeadEvent`, read straight from its annotation."""
    union, discriminator = get_args(LeadEvent)
    assert discriminator.discriminator == "event_type"
    return get_args(union)


def test_the_lists_are_derived_from_the_registry_in_its_order() -> None:
    models = registry()
    assert len(models) == len(set(models)), "a model is listed twice in LeadEvent"
    assert tuple(event_type_of(m) for m in models) == EVENT_TYPES
    assert list(EVENT_MODELS.values()) == list(models)
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)
    assert TEST_EVENT_TYPE not in EVENT_TYPES


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_model_is_tagged_with_its_type_once(event_type: str) -> None:
    model = EVENT_MODELS[event_type]
    fields = model.model_fields
    assert get_args(fields["event_type"].annotation) == (event_type,)
    keywords = get_args(fields["action_keyword"].annotation)
    if event_type == "object_change_owner":  # by hand or automatically (contract, section 5)
        assert keywords == ("manual_distribution", "auto_distribution")
    else:
        assert keywords == (event_type,), "action_keyword is the event type itself"
    assert model.__doc__ and model.__doc__.strip(), "the docstring is the type's description"
    assert model.emitted_by.startswith(("POST ", "PATCH ", "DELETE ")), model.emitted_by
    assert model.emitted_by in event_types.description(event_type)


def test_every_model_of_the_module_is_registered() -> None:
    # A model written but left out of the union would be silently unreachable.
    envelopes = {
        obj
        for obj in vars(events).values()
        if isinstance(obj, type)
        and issubclass(obj, events._Envelope)
        and obj is not events._Envelope
    }
    assert envelopes == set(EVENT_MODELS.values())


def test_the_receiver_re_exports_every_typed_event() -> None:
    assert receiver.EVENT_TYPES is EVENT_TYPES
    assert receiver.TEST_EVENT_TYPE is TEST_EVENT_TYPE
    for model in EVENT_MODELS.values():
        assert model.__name__ in receiver.__all__, f"leadhook.receiver lacks {model.__name__}"
        assert getattr(receiver, model.__name__) is model


def test_the_committed_files_follow_the_registry() -> None:
    want = [f"{t}.json" for t in EVENT_TYPES]
    assert list(schema_documents()) == want
    assert sorted(p.name for p in (REPO / "schemas").glob("*.json")) == sorted(want)
    assert sorted(p.name for p in (REPO / "tests" / "golden").glob("*.json")) == sorted(want)
    # docs/examples: the example life has an event of every type, each in its own file.
    in_examples = set()
    for path in (REPO / "docs" / "examples").glob("*.json"):
        in_examples.add(json.loads(path.read_text(encoding="utf-8"))["event_type"])
    assert in_examples == set(EVENT_TYPES)
    assert list(specimens.examples()) == list(EVENT_TYPES)


def test_the_console_names_every_type_in_both_languages() -> None:
    labelled = {k.removeprefix("type.") for k in STRINGS if k.startswith("type.")}
    assert labelled == set(EVENT_TYPES)


TABLES = ("docs/contract.md", "docs/events.md", "docs/api.md")
COUNTED = ("README.md", "docs/api.md", "docs/contract.md", "docs/delivery.md", "docs/events.md")
# "13 event types", "one of 13 types", "the 13 lead events", "all 13 behaviours"...
COUNT = re.compile(
    r"\b(\d+)(?= (?:lead events|event types|types)\b)|(?:\ball |\bone of the )(\d+)\b"
)


@pytest.mark.parametrize("doc", TABLES)
def test_the_documents_tables_name_every_type(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    rows = {
        name
        for line in text.splitlines()
        if line.startswith("|")
        for name in re.findall(r"`(object_[a-z_]+)`", line)
    }
    assert set(EVENT_TYPES) <= rows, f"{doc} has no table row for {set(EVENT_TYPES) - rows}"


@pytest.mark.parametrize("doc", COUNTED)
def test_the_documents_count_the_types_right(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    counts = {int(a or b) for a, b in COUNT.findall(text)}
    assert counts == {len(EVENT_TYPES)}, (
        f"{doc} counts {counts}, the registry has {len(EVENT_TYPES)}"
    )


def test_contributing_names_every_place_that_is_not_derived() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("## Adding an event type", 1)[1].split("\n## ", 1)[0]
    for place in (
        "src/leadhook/domain/events.py",
        "src/leadhook/domain/behaviours.py",
        "src/leadhook/domain/specimens.py",
        "docs/examples/",
        "tests/golden/",
        "schemas/",
        "src/leadhook/api/console/i18n.py",
        "src/leadhook/receiver.py",
        *TABLES,
        *COUNTED,
    ):
        assert place in section, f"CONTRIBUTING.md's 'Adding an event type' omits {place}"
    for path in re.findall(r"`((?:src|docs|tests|schemas)/[^`*<>\s]*)`", section):
        assert (REPO / path).exists(), f"CONTRIBUTING.md names {path}, which does not exist"


# ---- which calls emit a type: what GET /v1/event-types says must name every one ------------


def _pool_routes() -> dict[str, tuple[str, ...]]:
    """Each lead-pool call (docs/api.md, docs/automation.md) and the event types it emits,
    produced by the domain functions the routes call, on the contract's example lead."""
    from dataclasses import replace as _replace

    from leadhook.domain import behaviours as b
    from leadhook.domain import pools
    from leadhook.domain.catalog import Assignment
    from leadhook.domain.catalog_entries import upsert_entry

    cat = specimens.life_catalog()
    cat = upsert_entry(
        cat, "lead_pools", "market", {"name": "市场公海", "members": [specimens.WANG_FANG]}
    )
    ids = iter(specimens.event_id(n) for n in range(1, 99))
    ctx = b.Context(cat, specimens.at(2), lambda: next(ids), specimens.BACK_OFFICE)
    lead = specimens.create(cat, lambda: next(ids)).lead
    claimed = pools.claim(_replace(ctx, operator=specimens.MEMBER), lead, specimens.WANG_FANG, 0)
    returned = pools.return_to_pool(ctx, claimed.lead, "sales", "back")
    pool = _replace(
        cat.lead_pools["sales"], assignment=Assignment("round_robin", (specimens.MEMBER_2,))
    )
    allocated = pools.allocate(ctx, returned.lead, pool, specimens.MEMBER_2)
    other = b.update_fields(ctx, b.add_note(ctx, claimed.lead, "n").lead, {"title": "t"}).lead
    other = _replace(other, id="Zz9yX8wV7uT6sR5qP4oN3m", team_members=(specimens.MEMBER_3,))
    merged = pools.merge(ctx, lead, [pools.Duplicate(other, ("old note",))])
    return {
        "POST /v1/leads/{id}/claim": tuple(e.event_type for e in claimed.events),
        "POST /v1/leads/{id}/return": tuple(
            e.event_type for e in (*returned.events, *allocated.events)
        ),
        "POST /v1/leads/{id}/merge": tuple(e.event_type for e in merged.events),
    }


def test_each_type_names_every_call_that_emits_it() -> None:
    routes = _pool_routes()
    assert set(routes["POST /v1/leads/{id}/merge"]) == {
        "object_update",
        "object_add_team_member",
        "object_add_notes",
        "object_change_owner",
        "object_voids",
    }
    assert routes["POST /v1/leads/{id}/return"] == (
        "object_change_owner",
        "object_change_lead_pool",
        "object_change_owner",
    )
    for route, types in routes.items():
        for event_type in types:
            said = event_types.description(event_type)
            assert route in said, f"{event_type}: {route} emits it, its description says {said!r}"
