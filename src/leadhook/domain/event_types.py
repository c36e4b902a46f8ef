"""What each event type is: its description, JSON Schema and an example, from one source.

`GET /v1/event-types` and the OpenAPI *Webhooks* section both describe the types of the
registry (`LeadEvent` in `leadhook.domain.events`) from here: the description is the event
model's docstring and its `emitted_by`, the schema is the one committed in `schemas/`
(generated from the same model; a test keeps them equal), the example is the event of that
type in the contract's example life (`docs/examples/`, see `leadhook.domain.specimens`).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from leadhook.domain.errors import NotFoundError
from leadhook.domain.events import EVENT_MODELS, EVENT_TYPES, json_schema
from leadhook.domain.specimens import examples


def description(event_type: str) -> str:
    """Say what happened when an event of `event_type` is emitted, and which call emits it."""
    model = EVENT_MODELS[event_type]
    doc = " ".join((model.__doc__ or event_type).split())
    return f"{doc} Emitted by {model.emitted_by}."


def example(event_type: str) -> dict[str, Any]:
    """Return an example event of `event_type`, exactly as a subscriber receives it."""
    return examples()[event_type].model_dump(mode="json")


def describe(event_type: str) -> dict[str, Any]:
    """Return `{name, description, schema, example}` of one event type; 404 if unknown."""
    if event_type not in EVENT_MODELS:
        raise NotFoundError(
            f"event type {event_type!r} not found: it is one of {', '.join(EVENT_TYPES)}"
        )
    # Built once (a schema takes milliseconds to generate), copied so no caller can change it.
    return copy.deepcopy(_described(event_type))


@cache
def _described(event_type: str) -> dict[str, Any]:
    return {
        "name": event_type,
        "description": description(event_type),
        "schema": json_schema(event_type),
        "example": example(event_type),
    }


def describe_all() -> list[dict[str, Any]]:
    """Describe every event type, in the contract's order."""
    return [describe(t) for t in EVENT_TYPES]
