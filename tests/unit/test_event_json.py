"""`event_json`, the text the log stores and subscribers receive, is `model_dump_json`'s.

orjson writes it (domain/events.py); these cases aim at where two JSON writers differ: every
float (exponents, negative zero, the shortest round-tripping digits), integers past 64 bits
(orjson refuses them: Pydantic writes them), text that is not ASCII, and nested models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadhook.domain.events import event_json, parse_event

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_every_golden_event_is_written_as_pydantic_writes_it(path: Path) -> None:
    event = parse_event(json.loads(path.read_text(encoding="utf-8")))
    assert event_json(event) == event.model_dump_json()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(before=JSON_VALUES, after=JSON_VALUES, text=st.text(), notes=st.text())
def test_any_value_is_written_as_pydantic_writes_it(
    before: Any, after: Any, text: str, notes: str
) -> None:
    data = _golden("object_update")
    data["extra_data"]["mapping_data"] = {"budget": [before, after], text: [after, before]}
    data["extra_data"]["mapping_data_text"] = {"budget": [text, notes]}
    data["extra_data"]["notes"] = notes
    event = parse_event(data)
    assert event_json(event) == event.model_dump_json()
