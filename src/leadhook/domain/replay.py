"""Rebuild a lead from its event log: the log, not the lead row, is the source of truth."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from leadhook.domain.catalog import Catalog
from leadhook.domain.errors import ConflictError
from leadhook.domain.events import LeadEvent, MembersExtra, RelationExtra
from leadhook.domain.lead import Lead, Relation, track_clocks


def fold(catalog: Catalog, events: Iterable[LeadEvent]) -> Lead:
    """Fold one lead's events, oldest first, into the lead they describe."""
    lead: Lead | None = None
    for event in events:
        lead = apply(catalog, lead, event)
    if lead is None:
        raise ConflictError("no events to fold")
    return lead


def apply(catalog: Catalog, lead: Lead | None, event: LeadEvent) -> Lead:
    """Apply one event to the lead before it (None before object_create)."""
    extra = event.extra_data
    before = lead
    if lead is None:
        if event.event_type != "object_create":
            raise ConflictError(
                f"a lead's first event must be object_create, not {event.event_type}"
            )
        values = {code: pair[0] for code, pair in extra.mapping_data.items()}
        source = frozenset(c for c in values if (f := catalog.field_def(c)) and f.group == "source")
        base = Lead(
            id=extra.entity_id,
            mid=event.mid,
            version=0,
            business_type=extra.business_type,
            owner=extra.owner,
            lead_pool="",
            life_status=extra.life_status,
            lead_omni_user_uuid=extra.lead_omni_user_uuid,
            created_at=event.create_time,
        )
        lead = base.with_values(values, source)
    else:
        if event.entity_version != lead.version + 1:
            raise ConflictError(
                f"event version {event.entity_version} does not follow {lead.version}"
            )
        source_codes = (
            frozenset(extra.mapping_data)
            if event.event_type == "object_source_info"
            else frozenset()
        )
        lead = lead.with_values(
            {c: pair[1] for c, pair in extra.mapping_data.items()}, source_codes
        )
        lead = _apply_own(lead, event)
    follow_up = extra.is_follow_up == 1 or event.event_type == "object_update_status"
    lead = track_clocks(before, lead, follow_up=follow_up, now=event.create_time)
    return replace(lead, version=event.entity_version, updated_at=event.create_time)


def _apply_own(lead: Lead, event: LeadEvent) -> Lead:
    extra = event.extra_data
    if event.event_type == "object_voids":
        return replace(lead, voided=True)
    if event.event_type == "object_restore":
        return replace(lead, voided=False)
    if isinstance(extra, MembersExtra):
        if event.event_type == "object_add_team_member":
            return replace(lead, team_members=(*lead.team_members, *extra.members))
        gone = set(extra.members)
        return replace(lead, team_members=tuple(m for m in lead.team_members if m not in gone))
    if isinstance(extra, RelationExtra):
        rel = Relation(extra.target_object_name, extra.target_entity_id, extra.target_object_id)
        return replace(lead, relations=(*lead.relations, rel))
    return lead
