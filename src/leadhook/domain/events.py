"""The event contract: the envelope and each event type's `extra_data`, as Pydantic models.

`LeadEvent`, the union of the event models, is the one registry of event types: `EVENT_MODELS`,
`EVENT_TYPES`, the schemas, `GET /v1/event-types`, the OpenAPI webhooks and every list of types
elsewhere are derived from it (CONTRIBUTING.md, "Adding an event type").
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

EVENT_CATEGORY = "object_v2"
TEST_EVENT_TYPE = "webhook_test"
"""The `event_type` of the subscription's test event (`POST /v1/subscriptions/{id}/test`):
signed like a lead event but not one of them (never logged, not in `EVENT_TYPES`)."""
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"

Pair = Annotated[list[Any], Field(min_length=2, max_length=2)]
TextPair = Annotated[list[str], Field(min_length=2, max_length=2)]
Single = Annotated[list[Any], Field(min_length=1, max_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimelineData(_Strict):
    """Login context of the operator, as shown on the lead's timeline."""

    login_platform: str
    login_environment: str
    login_source_type: str
    login_source_name: str


class ChangeSide(_Strict):
    """One side of an `entity_change_mapping` comparison: the value and its label."""

    value: str
    text: str


class ChangeEntry(_Strict):
    """Before and after of a reference or option field; a side is null when empty."""

    before: ChangeSide | None
    after: ChangeSide | None


class ExtraData(_Strict):
    """The keys present in `extra_data` of every event (docs/contract.md, section 3)."""

    object_id: str
    object_name: str
    entity_id: str
    operator_type: Literal[0, 1, 2]
    operator_id: int
    omni_user_uuid: str
    is_follow_up: Literal[0, 1]
    notes: str
    login_platform: str
    login_source_value: str
    login_source_type: str
    login_environment: str
    timeline_data: TimelineData
    business_type: str
    created_timestamp: Annotated[str, Field(pattern=TIMESTAMP_PATTERN)]
    owner: str | None
    life_status: str
    lead_omni_user_uuid: str
    mapping_data: dict[str, Pair]
    mapping_data_text: dict[str, TextPair]
    business_type_name: str


class CreateExtra(ExtraData):
    """`object_create`: every initial value as a one-element list, its text as a string."""

    mapping_data: dict[str, Single]
    mapping_data_text: dict[str, str]  # type: ignore[assignment]


class StatusExtra(ExtraData):
    """`object_update_status`: status ids before and after (`""` if none)."""

    from_leads_status: str
    to_leads_status: str
    entity_change_mapping: dict[str, ChangeEntry]


class OwnerExtra(ExtraData):
    """`object_change_owner`: the former owner and the scene of the change."""

    former_owner: str | None
    former_owner_name: str
    scene_type: Literal[1, 2, 3, 4, 5, 6]
    entity_change_mapping: dict[str, ChangeEntry]


class LifeCycleExtra(ExtraData):
    """`object_update_life_cycle`: stage codes before and after."""

    from_life_status: str
    to_life_status: str
    entity_change_mapping: dict[str, ChangeEntry]


class LeadPoolExtra(ExtraData):
    """`object_change_lead_pool`: pool codes before and after (`""` if none)."""

    from_lead_pool: str
    to_lead_pool: str
    entity_change_mapping: dict[str, ChangeEntry]


class MembersExtra(ExtraData):
    """`object_add_team_member` / `object_remove_team_member`: the member ids concerned."""

    members: list[str]


class RelationExtra(ExtraData):
    """`object_relation`: the object the lead was associated with."""

    target_object_id: str
    target_entity_id: str
    target_object_name: str


class _Envelope(_Strict):
    """What every event has; each event type is a subclass, listed once in `LeadEvent`."""

    emitted_by: ClassVar[str]
    """The HTTP call of the behaviour that emits the type (docs/contract.md, section 4)."""

    mid: str
    event_category: Literal["object_v2"]
    event_type: str
    action_keyword: str
    create_time: int
    event_id: str
    entity_version: Annotated[int, Field(ge=1)]
    extra_data: ExtraData


class ObjectCreate(_Envelope):
    """A lead was created."""

    emitted_by: ClassVar[str] = "POST /v1/leads (and POST /v1/leads/batch, one per lead)"
    event_type: Literal["object_create"]
    action_keyword: Literal["object_create"]
    extra_data: CreateExtra


class ObjectUpdate(_Envelope):
    """Ordinary fields of a lead were updated."""

    emitted_by: ClassVar[str] = (
        "PATCH /v1/leads/{id} (and POST /v1/leads/{id}/merge: the survivor's empty fields)"
    )
    event_type: Literal["object_update"]
    action_keyword: Literal["object_update"]
    extra_data: ExtraData


class ObjectUpdateStatus(_Envelope):
    """The lead status changed."""

    emitted_by: ClassVar[str] = "POST /v1/leads/{id}/status"
    event_type: Literal["object_update_status"]
    action_keyword: Literal["object_update_status"]
    extra_data: StatusExtra


class ObjectVoids(_Envelope):
    """The lead was voided (soft-deleted); `notes` carries the reason."""

    emitted_by: ClassVar[str] = (
        "POST /v1/leads/{id}/void (and POST /v1/leads/{id}/merge: each duplicate)"
    )
    event_type: Literal["object_voids"]
    action_keyword: Literal["object_voids"]
    extra_data: ExtraData


class ObjectChangeOwner(_Envelope):
    """The owner changed; `action_keyword` says whether by hand or automatically."""

    emitted_by: ClassVar[str] = (
        "POST /v1/leads/{id}/owner, POST /v1/leads/{id}/claim (scene 3),"
        " POST /v1/leads/{id}/return (scene 4), POST /v1/leads/{id}/merge (scene 6), and the"
        " lead pools' rules: allocation (scene 1) and reclaim (scene 5)"
    )
    event_type: Literal["object_change_owner"]
    action_keyword: Literal["manual_distribution", "auto_distribution"]
    extra_data: OwnerExtra


class ObjectUpdateLifeCycle(_Envelope):
    """The lifecycle stage changed."""

    emitted_by: ClassVar[str] = "POST /v1/leads/{id}/life-cycle"
    event_type: Literal["object_update_life_cycle"]
    action_keyword: Literal["object_update_life_cycle"]
    extra_data: LifeCycleExtra


class ObjectAddNotes(_Envelope):
    """A note (or follow-up record, `is_follow_up` 1) was added."""

    emitted_by: ClassVar[str] = (
        "POST /v1/leads/{id}/notes (and POST /v1/leads/{id}/merge: the duplicates' notes)"
    )
    event_type: Literal["object_add_notes"]
    action_keyword: Literal["object_add_notes"]
    extra_data: ExtraData


class ObjectAddTeamMember(_Envelope):
    """Collaborators were added."""

    emitted_by: ClassVar[str] = (
        "POST /v1/leads/{id}/team-members (and POST /v1/leads/{id}/merge: the duplicates'"
        " collaborators)"
    )
    event_type: Literal["object_add_team_member"]
    action_keyword: Literal["object_add_team_member"]
    extra_data: MembersExtra


class ObjectRemoveTeamMember(_Envelope):
    """Collaborators were removed."""

    emitted_by: ClassVar[str] = "DELETE /v1/leads/{id}/team-members/{member_id}"
    event_type: Literal["object_remove_team_member"]
    action_keyword: Literal["object_remove_team_member"]
    extra_data: MembersExtra


class ObjectChangeLeadPool(_Envelope):
    """The lead pool changed."""

    emitted_by: ClassVar[str] = (
        "POST /v1/leads/{id}/lead-pool (and an owner change in scene 4 or 5 that moves the pool:"
        " POST /v1/leads/{id}/owner, POST /v1/leads/{id}/return, a reclaim rule)"
    )
    event_type: Literal["object_change_lead_pool"]
    action_keyword: Literal["object_change_lead_pool"]
    extra_data: LeadPoolExtra


class ObjectRestore(_Envelope):
    """A voided lead was restored."""

    emitted_by: ClassVar[str] = "POST /v1/leads/{id}/restore"
    event_type: Literal["object_restore"]
    action_keyword: Literal["object_restore"]
    extra_data: ExtraData


class ObjectRelation(_Envelope):
    """The lead was associated with another object."""

    emitted_by: ClassVar[str] = "POST /v1/leads/{id}/relations"
    event_type: Literal["object_relation"]
    action_keyword: Literal["object_relation"]
    extra_data: RelationExtra


class ObjectSourceInfo(_Envelope):
    """Source information (source, channel, utm_*) changed."""

    emitted_by: ClassVar[str] = "PATCH /v1/leads/{id}/source"
    event_type: Literal["object_source_info"]
    action_keyword: Literal["object_source_info"]
    extra_data: ExtraData


# THE registry of event types: adding one is a model above and a line here (CONTRIBUTING.md,
# "Adding an event type"). Its order is the contract's; everything below is derived from it.
LeadEvent = Annotated[
    ObjectCreate
    | ObjectUpdate
    | ObjectUpdateStatus
    | ObjectVoids
    | ObjectChangeOwner
    | ObjectUpdateLifeCycle
    | ObjectAddNotes
    | ObjectAddTeamMember
    | ObjectRemoveTeamMember
    | ObjectChangeLeadPool
    | ObjectRestore
    | ObjectRelation
    | ObjectSourceInfo,
    Field(discriminator="event_type"),
]


def event_type_of(model: type[_Envelope]) -> str:
    """Return the `event_type` an event model is tagged with (its `Literal`)."""
    (name,) = get_args(model.model_fields["event_type"].annotation)
    return str(name)


def _registered() -> dict[str, type[_Envelope]]:
    union, _discriminator = get_args(LeadEvent)
    models: tuple[type[_Envelope], ...] = get_args(union)
    return {event_type_of(m): m for m in models}


EVENT_MODELS: dict[str, type[_Envelope]] = _registered()
"""The model of each event type, in the contract's order."""
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)
"""Every event type, in the contract's order."""
LEAD_EVENT_ADAPTER: TypeAdapter[LeadEvent] = TypeAdapter(LeadEvent)


def parse_event(data: Any) -> LeadEvent:
    """Validate a decoded event (dict) into the model of its `event_type`."""
    return LEAD_EVENT_ADAPTER.validate_python(data)


def _fields(model: Any) -> dict[str, Any]:
    # A model's __dict__ is its fields in declaration order, as validated (and nothing else).
    fields: dict[str, Any] = model.__dict__
    return fields


def event_json(event: _Envelope) -> str:
    """Return the JSON text of an event: what `event.model_dump_json()` returns, byte for byte.

    This is the text the log stores and every subscriber receives. orjson writes it, walking
    each model's fields in their declaration order (as Pydantic's serializer does), in 0.8 µs
    where `model_dump_json` took 3 (a batch import encodes a thousand events a request). What
    orjson refuses (an integer beyond 64 bits in a custom field's value) goes to Pydantic,
    not to `jsontext.dumps`'s standard-library fallback, whose floats read `1e-07` where
    Pydantic (and orjson) write `1e-7`. tests/unit/test_event_json.py and the property tests
    compare the two texts.
    """
    try:
        return orjson.dumps(event, default=_fields).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return event.model_dump_json()


def parse_event_json(raw: bytes | str) -> LeadEvent:
    """Validate an event's JSON text into the model of its `event_type`."""
    return LEAD_EVENT_ADAPTER.validate_json(raw)


def parse_event_tolerant(raw: bytes | str) -> LeadEvent:
    """Validate an event's JSON text, ignoring keys this version does not know.

    The contract grows only by new keys: a subscriber on an older leadhook must still read
    newer events. Anything else wrong (a missing key, a wrong type) still fails.
    """
    try:
        return LEAD_EVENT_ADAPTER.validate_json(raw)
    except PydanticValidationError as exc:
        extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not extra or len(extra) != len(exc.errors()):
            raise
    data = json.loads(raw)
    for loc in extra:
        _drop(data, loc)
    return LEAD_EVENT_ADAPTER.validate_python(data)


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    # The loc of a union member starts with its tag (the event type): skip that, and only
    # that (a new key may be named like an event type too).
    node = data
    path = (
        list(loc[1:]) if loc and isinstance(loc[0], str) and loc[0] in EVENT_MODELS else list(loc)
    )
    for part in path[:-1]:
        node = node[part]
    node.pop(path[-1], None)


def json_schema(event_type: str) -> dict[str, Any]:
    """Return the JSON Schema of one event type (Draft 2020-12)."""
    schema = EVENT_MODELS[event_type].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://leadhook.dev/schemas/{event_type}.json"
    return schema
