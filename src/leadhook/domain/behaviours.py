"""Every behaviour on a lead: validate against the catalog, return the new lead and its events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from leadhook.domain.catalog import (
    EXTERNAL_ID_RULE,
    KEY_PATTERN,
    Catalog,
    has_control,
    is_external_id,
    stage_timestamp_field,
)
from leadhook.domain.errors import LeadVoidedError, ValidationError
from leadhook.domain.events import EVENT_CATEGORY, LeadEvent, parse_event
from leadhook.domain.lead import Lead, Relation, track_clocks
from leadhook.domain.operator import MAX_OPERATOR_TEXT, SYSTEM, Operator
from leadhook.domain.values import (
    MAX_TEXT,
    change_mapping,
    coerce,
    diff,
    local_timestamp,
    parse_fields,
    same,
)

AUTO_SCENES = frozenset({1, 5})
POOL_SCENES = frozenset({4, 5})  # returned or reclaimed into a pool: the owner becomes null
# Besides a note with is_follow_up 1, a status change counts as following the lead up.
FOLLOW_UP_EVENT = "object_update_status"


@dataclass(frozen=True)
class Context:
    """What a behaviour needs besides the lead: catalog, operator, time, event ids."""

    catalog: Catalog
    now: int
    next_event_id: Callable[[], str]
    operator: Operator = SYSTEM

    @cached_property
    def local_now(self) -> str:
        """`now` as `YYYY-MM-DD HH:MM:SS` in the tenant's time zone."""
        return local_timestamp(self.now, self.catalog.timezone)

    @cached_property
    def omni_user_uuid(self) -> str:
        """The user id of the member the operator is bound to: the request's value wins,
        else the catalog's member bound to `operator_id`, else `""`."""
        op = self.operator
        if op.omni_user_uuid or op.operator_type == 0:
            return op.omni_user_uuid
        member = self.catalog.member_bound_to(op.operator_id)
        return "" if member is None else member.omni_user_uuid


@dataclass(frozen=True)
class Effect:
    """The lead after a behaviour and the events it emitted, oldest first."""

    lead: Lead
    events: tuple[LeadEvent, ...] = field(default_factory=tuple)


class _Recorder:
    """Accumulate the events of one behaviour, bumping the lead's version once per event."""

    def __init__(self, ctx: Context, lead: Lead) -> None:
        self.ctx = ctx
        self.lead = lead
        self.events: list[LeadEvent] = []

    def emit(
        self,
        after: Lead,
        event_type: str,
        *,
        mapping: tuple[dict[str, list[Any]], dict[str, Any]] = ({}, {}),
        notes: str = "",
        is_follow_up: int = 0,
        action_keyword: str | None = None,
        own: Mapping[str, Any] | None = None,
    ) -> None:
        ctx, op = self.ctx, self.ctx.operator
        version = 1 if event_type == "object_create" else self.lead.version + 1
        after = track_clocks(
            None if event_type == "object_create" else self.lead,
            after,
            follow_up=is_follow_up == 1 or event_type == FOLLOW_UP_EVENT,
            now=ctx.now,
        )
        self.lead = after.but(version=version, updated_at=ctx.now)
        lead, cat = self.lead, ctx.catalog
        extra: dict[str, Any] = {
            "object_id": cat.object_id,
            "object_name": "lead",
            "entity_id": lead.id,
            "operator_type": op.operator_type,
            "operator_id": op.operator_id,
            "omni_user_uuid": ctx.omni_user_uuid,
            "is_follow_up": is_follow_up,
            "notes": notes,
            "login_platform": op.login_platform,
            "login_source_value": op.login_source_value,
            "login_source_type": op.login_source_type,
            "login_environment": op.login_environment,
            "timeline_data": {
                "login_platform": op.login_platform,
                "login_environment": op.login_environment,
                "login_source_type": op.login_source_type,
                "login_source_name": op.login_source_name,
            },
            "business_type": lead.business_type,
            "created_timestamp": ctx.local_now,
            "owner": lead.owner,
            "life_status": lead.life_status,
            "lead_omni_user_uuid": lead.lead_omni_user_uuid,
            "mapping_data": mapping[0],
            "mapping_data_text": mapping[1],
            "business_type_name": cat.reference_name("business_types", lead.business_type),
            **(own or {}),
        }
        self.events.append(
            parse_event(
                {
                    "mid": lead.mid,
                    "event_category": EVENT_CATEGORY,
                    "event_type": event_type,
                    "action_keyword": action_keyword or event_type,
                    "create_time": ctx.now,
                    "event_id": ctx.next_event_id(),
                    "entity_version": version,
                    "extra_data": extra,
                }
            )
        )

    def outcome(self) -> Effect:
        return Effect(self.lead, tuple(self.events))


def _live(lead: Lead) -> None:
    if lead.voided:
        raise LeadVoidedError(f"lead {lead.id} is voided: only restore is allowed")


def _text(value: Any, loc: tuple[str | int, ...], *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValidationError.at(loc, f"must be a string of at most {MAX_TEXT} characters")
    if required and not value.strip():
        raise ValidationError.at(loc, "must not be empty")
    return value


def _user_id(value: Any) -> str:
    """A lead's `lead_omni_user_uuid`: another system's user id, held to the rule of the
    operator's `omni_user_uuid` (at most 200 characters) and, as every id an event carries, no
    control character. None or "" is none."""
    loc = ("body", "lead_omni_user_uuid")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_OPERATOR_TEXT:
        raise ValidationError.at(loc, f"must be a string of at most {MAX_OPERATOR_TEXT} characters")
    if has_control(value):
        raise ValidationError.at(loc, "must not contain control characters")
    return value


def _ref(catalog: Catalog, code: str, value: Any) -> Any:
    fdef = catalog.field_def(code)
    assert fdef is not None
    return coerce(catalog, fdef, value, ("body", code))


def create_lead(
    ctx: Context,
    lead_id: str,
    fields: Mapping[str, Any],
    *,
    business_type: str | None = None,
    owner: str | None = None,
    lead_pool: str | None = None,
    lead_omni_user_uuid: str | None = None,
) -> Effect:
    """Create a lead in the tenant's first stage; its initial values go in `mapping_data`."""
    cat = ctx.catalog
    values = parse_fields(cat, fields, ("ordinary", "source"))
    in_fields = values.pop("business_type", None)
    if business_type is not None and in_fields is not None and business_type != in_fields:
        raise ValidationError.at(("body", "business_type"), "differs from fields.business_type")
    chosen_type = _ref(cat, "business_type", business_type) or in_fields
    stage = cat.first_stage
    lead = Lead(
        id=lead_id,
        mid=cat.mid,
        version=0,
        business_type=chosen_type or cat.default_business_type,
        owner=_ref(cat, "owner", owner),
        lead_pool=_ref(cat, "lead_pool", lead_pool) or cat.first_pool,
        life_status=stage,
        lead_omni_user_uuid=_user_id(lead_omni_user_uuid),
        created_at=ctx.now,
    )
    source_codes = {c for c in values if (f := cat.field_def(c)) and f.group == "source"}
    lead = lead.with_values(
        {**values, stage_timestamp_field(stage): ctx.local_now},
        frozenset(source_codes),
    )
    codes = [*values, "business_type", "owner", "lead_pool", "life_status"]
    codes.append(stage_timestamp_field(stage))
    data: dict[str, list[Any]] = {}
    text: dict[str, str] = {}
    for code in sorted(set(codes), key=cat.field_order):
        value = lead.value(code)
        if value is not None:
            data[code] = [value]
            text[code] = cat.display(code, value)
    rec = _Recorder(ctx, lead)
    rec.emit(lead, "object_create", mapping=(data, text))
    return rec.outcome()


def _change_fields(ctx: Context, lead: Lead, fields: Any, group: str, event_type: str) -> Effect:
    _live(lead)
    cat = ctx.catalog
    values = parse_fields(cat, fields, ("ordinary",) if group == "ordinary" else ("source",))
    if "business_type" in values and values["business_type"] is None:
        raise ValidationError.at(("body", "fields", "business_type"), "cannot be emptied")
    # A value equal to the current one (as JSON: 0 and 0.0 are one number) is no change:
    # dropping it keeps the stored value as it was and lets an all-equal request emit nothing.
    values = {code: v for code, v in values.items() if not same(lead.value(code), v)}
    if not values:
        return Effect(lead)
    codes = frozenset(values) if group == "source" else frozenset()
    after = lead.with_values(values, codes)
    mapping = diff(cat, lead, after, values)
    rec = _Recorder(ctx, lead)
    rec.emit(after, event_type, mapping=mapping)
    return rec.outcome()


def update_fields(ctx: Context, lead: Lead, fields: Any) -> Effect:
    """Update ordinary fields (business_type and custom ones included)."""
    return _change_fields(ctx, lead, fields, "ordinary", "object_update")


def change_source(ctx: Context, lead: Lead, fields: Any) -> Effect:
    """Update source fields (source, source_channel, utm_*, custom source fields)."""
    return _change_fields(ctx, lead, fields, "source", "object_source_info")


def change_status(ctx: Context, lead: Lead, leads_status: Any) -> Effect:
    """Set the lead status (a catalog status id, or null to clear it)."""
    _live(lead)
    new = _ref(ctx.catalog, "leads_status", leads_status)
    if new == lead.leads_status:
        return Effect(lead)
    after = lead.but(leads_status=new)
    rec = _Recorder(ctx, lead)
    rec.emit(
        after,
        "object_update_status",
        mapping=diff(ctx.catalog, lead, after, ["leads_status"]),
        own={
            "from_leads_status": lead.leads_status or "",
            "to_leads_status": new or "",
            "entity_change_mapping": change_mapping(
                ctx.catalog, "leads_status", lead.leads_status, new
            ),
        },
    )
    return rec.outcome()


def change_owner(
    ctx: Context,
    lead: Lead,
    owner: Any,
    scene_type: Any,
    *,
    notes: Any = None,
    lead_pool: Any = None,
) -> Effect:
    """Change the owner in one of the six scenes; scenes 4 and 5 may also move the pool."""
    _live(lead)
    cat = ctx.catalog
    # An int exactly: 1.0 == 1 and True == 1 would pass a plain `in` test.
    if type(scene_type) is not int or scene_type not in (1, 2, 3, 4, 5, 6):
        raise ValidationError.at(("body", "scene_type"), "must be an integer from 1 to 6")
    new_owner = _ref(cat, "owner", owner)
    if scene_type in POOL_SCENES and new_owner is not None:
        raise ValidationError.at(("body", "owner"), f"must be null in scene {scene_type}")
    if scene_type in (1, 2, 3) and new_owner is None:
        raise ValidationError.at(("body", "owner"), f"must name a member in scene {scene_type}")
    if lead_pool is not None and scene_type not in POOL_SCENES:
        raise ValidationError.at(("body", "lead_pool"), "only scenes 4 and 5 move the lead pool")
    new_pool = _ref(cat, "lead_pool", lead_pool)
    note = _text(notes, ("body", "notes"), required=False)
    rec = _Recorder(ctx, lead)
    if new_owner != lead.owner:
        auto = scene_type in AUTO_SCENES or (scene_type == 6 and ctx.operator.operator_type == 0)
        after = lead.but(owner=new_owner)
        rec.emit(
            after,
            "object_change_owner",
            action_keyword="auto_distribution" if auto else "manual_distribution",
            notes=note,
            mapping=diff(cat, lead, after, ["owner"]),
            own={
                "former_owner": lead.owner,
                "former_owner_name": cat.member_name(lead.owner),
                "scene_type": scene_type,
                "entity_change_mapping": change_mapping(cat, "owner", lead.owner, new_owner),
            },
        )
    if new_pool is not None and new_pool != rec.lead.lead_pool:
        _emit_pool(rec, new_pool)
    return rec.outcome()


def _emit_pool(rec: _Recorder, new_pool: str) -> None:
    before = rec.lead
    after = before.but(lead_pool=new_pool)
    cat = rec.ctx.catalog
    rec.emit(
        after,
        "object_change_lead_pool",
        mapping=diff(cat, before, after, ["lead_pool"]),
        own={
            "from_lead_pool": before.lead_pool or "",
            "to_lead_pool": new_pool,
            "entity_change_mapping": change_mapping(cat, "lead_pool", before.lead_pool, new_pool),
        },
    )


def change_lead_pool(ctx: Context, lead: Lead, lead_pool: Any) -> Effect:
    """Move the lead to another lead pool."""
    _live(lead)
    new_pool = _ref(ctx.catalog, "lead_pool", lead_pool)
    if new_pool is None:
        raise ValidationError.at(("body", "lead_pool"), "is required: a lead always has a pool")
    rec = _Recorder(ctx, lead)
    if new_pool != lead.lead_pool:
        _emit_pool(rec, new_pool)
    return rec.outcome()


def change_life_cycle(ctx: Context, lead: Lead, life_status: Any) -> Effect:
    """Move the lead to a lifecycle stage; entering stage S stamps `to_S_timestamp`."""
    _live(lead)
    cat = ctx.catalog
    stage = _ref(cat, "life_status", life_status)
    if stage is None:
        raise ValidationError.at(("body", "life_status"), "is required")
    if stage == lead.life_status:
        return Effect(lead)
    stamp = stage_timestamp_field(stage)
    after = lead.with_values({"life_status": stage, stamp: ctx.local_now})
    rec = _Recorder(ctx, lead)
    rec.emit(
        after,
        "object_update_life_cycle",
        mapping=diff(cat, lead, after, ["life_status", stamp]),
        own={
            "from_life_status": lead.life_status,
            "to_life_status": stage,
            "entity_change_mapping": change_mapping(cat, "life_status", lead.life_status, stage),
        },
    )
    return rec.outcome()


def add_note(ctx: Context, lead: Lead, notes: Any, is_follow_up: Any = False) -> Effect:
    """Add a note; `is_follow_up` makes it a follow-up record of the lead."""
    _live(lead)
    text = _text(notes, ("body", "notes"), required=True)
    if is_follow_up not in (True, False, 0, 1):
        raise ValidationError.at(("body", "is_follow_up"), "must be a boolean or 0/1")
    rec = _Recorder(ctx, lead)
    rec.emit(lead, "object_add_notes", notes=text, is_follow_up=1 if is_follow_up else 0)
    return rec.outcome()


def add_team_members(ctx: Context, lead: Lead, members: Any) -> Effect:
    """Add collaborators; members already on the team are skipped."""
    _live(lead)
    if not isinstance(members, list) or not members:
        raise ValidationError.at(("body", "members"), "must be a non-empty list of member ids")
    added: list[str] = []
    for i, member in enumerate(members):
        if not isinstance(member, str) or member not in ctx.catalog.members:
            raise ValidationError.at(("body", "members", i), f"unknown member id {member!r}")
        if member not in lead.team_members and member not in added:
            added.append(member)
    if not added:
        return Effect(lead)
    rec = _Recorder(ctx, lead)
    after = lead.but(team_members=(*lead.team_members, *added))
    rec.emit(after, "object_add_team_member", own={"members": added})
    return rec.outcome()


def remove_team_member(ctx: Context, lead: Lead, member_id: str) -> Effect:
    """Remove one collaborator; removing someone not on the team changes nothing."""
    _live(lead)
    if member_id not in lead.team_members:
        if member_id not in ctx.catalog.members:
            raise ValidationError.at(("path", "member_id"), f"unknown member id {member_id!r}")
        return Effect(lead)
    rec = _Recorder(ctx, lead)
    after = lead.but(team_members=tuple(m for m in lead.team_members if m != member_id))
    rec.emit(after, "object_remove_team_member", own={"members": [member_id]})
    return rec.outcome()


def void(ctx: Context, lead: Lead, reason: Any = None) -> Effect:
    """Void (soft-delete) the lead; the reason travels in `notes`."""
    _live(lead)
    text = _text(reason, ("body", "reason"), required=False)
    rec = _Recorder(ctx, lead)
    rec.emit(lead.but(voided=True), "object_voids", notes=text)
    return rec.outcome()


def restore(ctx: Context, lead: Lead) -> Effect:
    """Restore a voided lead; restoring a live lead changes nothing."""
    if not lead.voided:
        return Effect(lead)
    rec = _Recorder(ctx, lead)
    rec.emit(lead.but(voided=False), "object_restore")
    return rec.outcome()


def relate(
    ctx: Context,
    lead: Lead,
    target_object_name: Any,
    target_entity_id: Any,
    target_object_id: Any = None,
) -> Effect:
    """Associate the lead with an object of another kind (e.g. an account)."""
    _live(lead)
    # The object's kind is a key of the tenant's catalog; its ids are another system's, as
    # that system spells them (`ACME.001`, `acct:42`): the catalog's `object_id` rule.
    if not isinstance(target_object_name, str) or not KEY_PATTERN.match(target_object_name):
        raise ValidationError.at(
            ("body", "target_object_name"), "must be 1-64 ASCII letters, digits, '_' or '-'"
        )
    for key, value in (
        ("target_entity_id", target_entity_id),
        ("target_object_id", target_object_id),
    ):
        if (value is not None or key == "target_entity_id") and not is_external_id(value):
            raise ValidationError.at(("body", key), EXTERNAL_ID_RULE)
    object_id = target_object_id or ctx.catalog.related_object_id(target_object_name)
    relation = Relation(target_object_name, target_entity_id, object_id)
    if any(
        r.target_object_name == target_object_name and r.target_entity_id == target_entity_id
        for r in lead.relations
    ):
        return Effect(lead)
    rec = _Recorder(ctx, lead)
    rec.emit(
        lead.but(relations=(*lead.relations, relation)),
        "object_relation",
        own={
            "target_object_id": object_id,
            "target_entity_id": target_entity_id,
            "target_object_name": target_object_name,
        },
    )
    return rec.outcome()
