"""The committed JSON Schemas match the models, and the contract's examples validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from leadhook.domain.events import EVENT_TYPES, json_schema, parse_event
from leadhook.schemas import REGENERATE_COMMAND, schema_documents, write_schemas

REPO = Path(__file__).parents[2]
SCHEMA_DIR = REPO / "schemas"
EXAMPLES = REPO / "docs" / "examples"


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


# ---- committed schemas ---------------------------------------------------------------------


def test_schema_documents_cover_every_event_type_once() -> None:
    docs = schema_documents()
    assert list(docs) == [f"{t}.json" for t in EVENT_TYPES]
    assert len(docs) == 13


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_committed_schema_matches_the_model(event_type: str) -> None:
    name = f"{event_type}.json"
    path = SCHEMA_DIR / name
    hint = f"regenerate the committed schemas with `{REGENERATE_COMMAND}` from the repository root"
    assert path.is_file(), f"{path} is missing: {hint}"
    expected = schema_documents()[name]
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path} has drifted from leadhook.domain.events: {hint}"
    )


def test_no_stray_committed_schema() -> None:
    committed = {p.name for p in SCHEMA_DIR.glob("*.json")}
    stray = committed - set(schema_documents())
    assert not stray, (
        f"schemas/ holds files of no event type: {sorted(stray)}; delete them and regenerate "
        f"with `{REGENERATE_COMMAND}`"
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_is_a_valid_draft_2020_12_schema(event_type: str) -> None:
    schema = json_schema(event_type)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{event_type}.json")


def test_write_schemas_writes_the_documents(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path / "out")
    docs = schema_documents()
    assert [p.name for p in paths] == list(docs)
    for path in paths:
        assert path.read_text(encoding="utf-8") == docs[path.name]
        assert path.read_text(encoding="utf-8").endswith("}\n")


def test_schema_text_keeps_non_ascii_and_model_key_order() -> None:
    text = schema_documents()["object_create.json"]
    schema = json.loads(text)
    assert text == json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    props = list(schema["properties"])
    assert props[:4] == ["mid", "event_category", "event_type", "action_keyword"]


# ---- the contract's examples ---------------------------------------------------------------


def _event_examples() -> list[Any]:
    found = [p for p in _examples() if "event_id" in json.loads(p.read_text(encoding="utf-8"))]
    assert found, f"no example events in {EXAMPLES}"
    return [pytest.param(p, id=p.name) for p in found]


@pytest.mark.parametrize("path", _event_examples())
def test_example_validates_against_its_schema(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    schema = json_schema(event["event_type"])
    errors = sorted(Draft202012Validator(schema).iter_errors(event), key=str)
    assert not errors, f"{path.name}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )
    assert parse_event(event).model_dump(mode="json") == event


def test_every_event_type_has_an_example() -> None:
    types = {
        json.loads(p.read_text(encoding="utf-8"))["event_type"]
        for p in _examples()
        if "event_id" in json.loads(p.read_text(encoding="utf-8"))
    }
    assert types == set(EVENT_TYPES)


def test_the_verbatim_source_example_lacks_only_the_additions() -> None:
    event = json.loads((EXAMPLES / "object_create.json").read_text(encoding="utf-8"))
    errors = list(Draft202012Validator(json_schema("object_create")).iter_errors(event))
    assert {e.validator for e in errors} == {"required"}
    missing = {m for e in errors for m in ("event_id", "entity_version") if repr(m) in e.message}
    assert missing == {"event_id", "entity_version"}
    assert len(errors) == 2


def test_schema_refuses_an_unknown_key_and_a_bad_scene() -> None:
    event = json.loads((EXAMPLES / "object_change_owner.claim.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(json_schema("object_change_owner"))
    assert validator.is_valid(event)
    assert not validator.is_valid({**event, "surprise": 1})
    assert not validator.is_valid({**event, "extra_data": {**event["extra_data"], "scene_type": 7}})
    assert not validator.is_valid({**event, "action_keyword": "object_change_owner"})


def test_the_default_folder_is_the_checkouts_or_else_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadhook import schemas

    assert schemas._default_directory() == SCHEMA_DIR.resolve()
    # Installed from a wheel: never a folder inside the Python installation.
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "leadhook" / "schemas.py"
    monkeypatch.setattr(schemas, "__file__", str(installed))
    monkeypatch.chdir(tmp_path)
    assert schemas._default_directory() == tmp_path / "schemas"
