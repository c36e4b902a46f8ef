"""Request bodies and documented response shapes of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from leadhook.domain.events import LeadEvent


def _zero_one_as_bool(value: Any) -> Any:
    return bool(value) if type(value) is int and value in (0, 1) else value


# true/false or 1/0, as one type: a union would name its members in an error's `loc`.
BoolOrBit = Annotated[
    bool,
    BeforeValidator(_zero_one_as_bool),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]}),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


OPERATOR_CODE = 64
OPERATOR_TEXT = 200


def _an_int_exactly(value: Any) -> Any:
    # True == 1 and 1.0 == 1 to a Literal's membership test: both passed as operator_type 1.
    if type(value) is not int:
        raise PydanticCustomError("literal_error", "must be 0 (system), 1 (user) or 2 (member)")
    return value


class OperatorIn(_In):
    """Who performs the behaviour; omitted means the system (operator_type 0)."""

    operator_type: Annotated[Literal[0, 1, 2], BeforeValidator(_an_int_exactly)] = 0
    operator_id: int = Field(0, ge=0, le=2**53 - 1)
    # Codes of an open vocabulary (`pc` and `mobile` are examples of an environment): up to
    # OPERATOR_CODE characters, kept as given; ids and names up to OPERATOR_TEXT. Every
    # event of the behaviour carries them (docs/api.md, "Leads").
    omni_user_uuid: str = Field("", max_length=OPERATOR_TEXT)
    login_platform: str = Field(
        "", max_length=OPERATOR_CODE, examples=["member_center", "jingsocial"]
    )
    login_source_value: str = Field("", max_length=OPERATOR_TEXT)
    login_source_type: str = Field(
        "", max_length=OPERATOR_CODE, examples=["wechat", "workwechat_user"]
    )
    login_environment: str = Field("", max_length=OPERATOR_CODE, examples=["pc", "mobile"])
    login_source_name: str = Field("", max_length=OPERATOR_TEXT)


class Mutating(_In):
    """Every mutating call may name its operator."""

    operator: OperatorIn | None = None


# One model of a new lead's fields; a single create adds its operator (a batch names it once,
# so an operator inside a batch item is refused). The two OpenAPI names stay.
class BatchItemIn(_In):
    """One lead of a batch create."""

    fields: dict[str, Any] = Field(default_factory=dict)
    business_type: str | None = None
    owner: str | None = None
    lead_pool: str | None = None
    lead_omni_user_uuid: str | None = None


class CreateLeadIn(BatchItemIn, Mutating):
    """Create a lead: ordinary and source fields, plus where it starts."""


class BatchCreateIn(Mutating):
    """Create up to 1,000 leads at once; all or none are created."""

    leads: list[BatchItemIn] = Field(min_length=1, max_length=1000)


class FieldsIn(Mutating):
    """Field code → new value (null or "" clears a field)."""

    fields: dict[str, Any]


class StatusIn(Mutating):
    """The new lead status id, or null to clear it."""

    leads_status: str | None


class OwnerIn(Mutating):
    """The new owner (member id, or null in scenes 4 and 5) and the scene of the change."""

    owner: str | None
    scene_type: int = Field(ge=1, le=6)
    notes: str | None = None
    lead_pool: str | None = Field(
        None, description="scenes 4 and 5 only: also move the lead to this pool"
    )


class LifeCycleIn(Mutating):
    """The lifecycle stage to enter."""

    life_status: str


class LeadPoolIn(Mutating):
    """The lead pool to move to."""

    lead_pool: str


class NotesIn(Mutating):
    """A note, or a follow-up record when `is_follow_up` is true."""

    notes: str
    is_follow_up: BoolOrBit = False


class TeamMembersIn(Mutating):
    """Member ids to add as collaborators."""

    members: list[str] = Field(min_length=1)


class ClaimIn(Mutating):
    """The member claiming the lead (she is the operator, operator_type 2)."""

    member: str


class ReturnIn(Mutating):
    """Return the lead to a pool without owner: into `lead_pool` when named, else its own."""

    lead_pool: str | None = None
    notes: str | None = None


class MergeIn(Mutating):
    """The leads to merge into this one (each is voided)."""

    duplicates: list[str] = Field(min_length=1, max_length=50)


class VoidIn(Mutating):
    """Why the lead is voided (travels in the event's `notes`)."""

    reason: str | None = None


class RelationIn(Mutating):
    """The object to associate the lead with."""

    target_object_name: str
    target_entity_id: str
    target_object_id: str | None = None


class TenantIn(_In):
    """A new tenant."""

    mid: str
    name: str | None = None
    timezone: str | None = None
    object_id: str | None = None


class RelationOut(BaseModel):
    """A relation of a lead."""

    target_object_name: str
    target_entity_id: str
    target_object_id: str


class LeadOut(BaseModel):
    """A lead as it is now."""

    id: str
    mid: str
    version: int
    business_type: str
    owner: str | None
    lead_pool: str
    life_status: str
    leads_status: str | None
    voided: bool
    fields: dict[str, Any]
    source: dict[str, Any]
    team_members: list[str]
    relations: list[RelationOut]
    lead_omni_user_uuid: str
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC: the latest behaviour")
    owner_since: str | None = Field(
        None, description="RFC 3339, UTC: when the current owner got the lead"
    )
    last_follow_up_at: str | None = Field(
        None, description="RFC 3339, UTC: the last follow-up note or status change"
    )


class BehaviourOut(BaseModel):
    """The lead after a behaviour and the events it emitted, as subscribers receive them."""

    lead: LeadOut
    events: list[LeadEvent]


class BatchOut(BaseModel):
    """The result of a batch create, one entry per lead in request order."""

    data: list[BehaviourOut]


class LeadPageOut(BaseModel):
    """A page of leads."""

    data: list[LeadOut]
    next_cursor: str | None


class EventPageOut(BaseModel):
    """A page of events."""

    data: list[LeadEvent]
    next_cursor: str | None


class DuplicateOut(BaseModel):
    """A live lead sharing the lead's mobile or email, and which of them it shares."""

    lead: LeadOut
    matched_on: list[Literal["mobile", "email"]]


class DuplicatesOut(BaseModel):
    """The lead's duplicates, oldest first."""

    data: list[DuplicateOut]


class AutomationRunOut(BaseModel):
    """One batch of an automatic rule in one lead pool, and the leads it moved."""

    id: str
    rule: Literal["reclaim"]
    lead_pool: str
    trigger: Literal["schedule", "manual"]
    started_at: str = Field(description="RFC 3339, UTC")
    finished_at: str = Field(description="RFC 3339, UTC")
    moved: int
    lead_ids: list[str]


class AutomationRunPageOut(BaseModel):
    """A page of automation runs, newest first."""

    data: list[AutomationRunOut]
    next_cursor: str | None


class AutomationRunNowOut(BaseModel):
    """What running the due rules now moved."""

    moved: int
    data: list[AutomationRunOut]


class TenantOut(BaseModel):
    """A tenant's settings."""

    mid: str
    name: str
    timezone: str = Field(description="IANA time zone of the tenant's local times")
    object_id: str
    default_business_type: str
    created_at: str = Field(description="RFC 3339, UTC")


class TenantPageOut(BaseModel):
    """A page of tenants, oldest first."""

    data: list[TenantOut]
    next_cursor: str | None


class TenantCreatedOut(TenantOut):
    """A new tenant and its first API key (shown only in this answer)."""

    api_key: str
    key_id: str


class KeyOut(BaseModel):
    """An API key without the key itself: its id and first characters."""

    id: str
    mid: str
    prefix: str
    created_at: str = Field(description="RFC 3339, UTC")
    revoked_at: str | None = Field(description="RFC 3339, UTC; null while it works")


class IssuedKeyOut(KeyOut):
    """A new API key (`api_key` is shown only in this answer)."""

    api_key: str
    key_id: str = Field(description="the same as `id`, named as `POST /v1/tenants` names it")


class KeyListOut(BaseModel):
    """A tenant's keys, oldest first."""

    data: list[KeyOut]


class EventTypeOut(BaseModel):
    """An event type: what it means, its JSON Schema and an example as subscribers get it."""

    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema, Draft 2020-12")
    example: dict[str, Any]


class EventTypesOut(BaseModel):
    """Every event type, in the contract's order."""

    data: list[EventTypeOut]


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


class _CatalogEntry(BaseModel):
    # Exact shapes: an entry of one kind never passes for another (they share `id`, `name`).
    model_config = ConfigDict(extra="forbid")


class MemberOut(_CatalogEntry):
    """A member: who may own leads; `operator_id` binds her back-office account."""

    id: str
    name: str
    omni_user_uuid: str
    operator_id: int | None


class NamedEntryOut(_CatalogEntry):
    """A business type or a lead status."""

    id: str
    name: str


class LifeStageOut(_CatalogEntry):
    """A life-cycle stage, in `order`."""

    code: str
    name: str
    order: int


class AssignmentOut(_CatalogEntry):
    """How new leads of a pool are given an owner."""

    mode: str
    members: list[str]
    enabled: bool


class ReclaimOut(_CatalogEntry):
    """When owned leads go back to the pool (or to `to_lead_pool`)."""

    after_days: int | float
    enabled: bool
    to_lead_pool: str | None


class LeadPoolOut(_CatalogEntry):
    """A lead pool and its rules (null when unset)."""

    code: str
    name: str
    members: list[str]
    claim_limit: int | None
    assignment: AssignmentOut | None
    reclaim: ReclaimOut | None


class FieldOut(_CatalogEntry):
    """A field of a lead: built in or the tenant's own. `ref` and `options` only when set."""

    code: str
    name: str
    type: str
    group: str
    ref: str | None = Field(None, description="the catalog kind its value names (when it has one)")
    options: dict[str, str] | None = Field(None, description="option fields: value → label")
    builtin: bool


class ObjectOut(_CatalogEntry):
    """An object leads may relate to."""

    object_name: str
    name: str
    object_id: str


CatalogEntryOut = MemberOut | NamedEntryOut | LifeStageOut | LeadPoolOut | FieldOut | ObjectOut


class CatalogOut(BaseModel):
    """A tenant's whole catalog."""

    mid: str
    name: str
    timezone: str
    object_id: str
    default_business_type: str
    members: list[MemberOut]
    business_types: list[NamedEntryOut]
    lead_statuses: list[NamedEntryOut]
    life_stages: list[LifeStageOut]
    lead_pools: list[LeadPoolOut]
    fields: list[FieldOut]
    objects: list[ObjectOut]
