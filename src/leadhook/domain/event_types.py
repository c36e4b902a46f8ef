"""What each event type is: its description, JSON Schema and an example, from one source.

`GET /v1/event-types` and the OpenAPI *Webhooks* section both describe the 13 types from here:
the description is the event model's docstring, the schema is the one committed in `schemas/`
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

# The HTTP call of the behaviour that emits each type (docs/contract.md, section 4).
EMITTED_BY = {
    "object_create": "POST /v1/leads (and POST /v1/leads/batch, one per lead)",
    "object_update": "PATCH /v1/leads/{id}",
    "object_update_status": "POST /v1/leads/{id}/status",
    "object_voids": "POST /v1/leads/{id}/void",
    "object_change_owner": "POST /v1/leads/{id}/owner",
    "object_update_life_cycle": "POST /v1/leads/{id}/life-cycle",
    "object_add_notes": "POST /v1/leads/{id}/notes",
    "object_add_team_member": "POST /v1/leads/{id}/team-members",
    "object_remove_team_member": "DELETE /v1/leads/{id}/team-members/{member_id}",
    "object_change_lead_pool": (
        "POST /v1/leads/{id}/lead-pool (and an owner change in scene 4 or 5 that moves the pool)"
    ),
    "object_restore": "POST /v1/leads/{id}/restore",
    "object_relation": "POST /v1/leads/{id}/relations",
    "object_source_info": "PATCH /v1/leads/{id}/source",
}


def description(event_type: str) -> str:
    """Say what happened when an event of `event_type` is emitted, and which call emits it."""
    doc = " ".join((EVENT_MODELS[event_type].__doc__ or event_type).split())
    return f"{doc} Emitted by {EMITTED_BY[event_type]}."


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
