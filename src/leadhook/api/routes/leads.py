"""Lead routes: one endpoint per behaviour, plus reading leads and their timeline."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from starlette.responses import Response

from leadhook.api import models as m
from leadhook.api.deps import BehaviourReq, ContainerDep, Mid
from leadhook.api.problems_doc import ERRORS
from leadhook.domain.operator import Operator
from leadhook.services.leads import Request, dumps
from leadhook.services.ports import LeadFilter

router = APIRouter(prefix="/v1/leads", tags=["leads"], responses=ERRORS)
JSON = "application/json"
Limit = Annotated[int, Query(ge=1, le=500)]


def _json(status_body: tuple[int, str]) -> Response:
    status, body = status_body
    return Response(body, status_code=status, media_type=JSON)


def _with_operator(req: Request, body: m.Mutating | None) -> Request:
    op = body.operator if body is not None else None
    return replace(req, operator=Operator.parse(None if op is None else op.model_dump()))


def _args(body: m.Mutating) -> dict[str, Any]:
    return body.model_dump(exclude={"operator"})


@router.post("", status_code=201, response_model=m.BehaviourOut, summary="Create a lead")
def create_lead(body: m.CreateLeadIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Create a lead; emits `object_create`."""
    return _json(c.leads.create(_with_operator(req, body), _args(body)))


@router.post(
    "/batch", status_code=201, response_model=m.BatchOut, summary="Create up to 1,000 leads"
)
def create_leads(body: m.BatchCreateIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Create many leads in one transaction; each emits its own `object_create`."""
    items = [item.model_dump() for item in body.leads]
    return _json(c.leads.create_many(_with_operator(req, body), items))


@router.get("", response_model=m.LeadPageOut, summary="List leads")
def list_leads(
    mid: Mid,
    c: ContainerDep,
    owner: str | None = None,
    lead_pool: str | None = None,
    life_status: str | None = None,
    voided: bool | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    """List the tenant's leads, oldest first, filtered; follow `next_cursor` for more."""
    leads, nxt = c.leads.list(mid, LeadFilter(owner, lead_pool, life_status, voided), cursor, limit)
    return Response(
        dumps({"data": [lead.to_api_json() for lead in leads], "next_cursor": nxt}), media_type=JSON
    )


@router.get("/{lead_id}", response_model=m.LeadOut, summary="Get a lead")
def get_lead(lead_id: str, mid: Mid, c: ContainerDep) -> Response:
    """Return the lead object itself."""
    return Response(dumps(c.leads.get(mid, lead_id).to_api_json()), media_type=JSON)


@router.get("/{lead_id}/timeline", response_model=m.EventPageOut, summary="A lead's events")
def timeline(
    lead_id: str,
    mid: Mid,
    c: ContainerDep,
    is_follow_up: Annotated[int | None, Query(ge=0, le=1)] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    """Return the lead's events, newest first."""
    body = c.leads.timeline(mid, lead_id, is_follow_up, cursor, limit)
    return Response(body, media_type=JSON)


def _behaviour(name: str, lead_id: str, req: Request, body: m.Mutating | None, c: Any) -> Response:
    args = _args(body) if body is not None else {}
    return _json(c.leads.perform(_with_operator(req, body), name, lead_id, args))


@router.patch("/{lead_id}", response_model=m.BehaviourOut, summary="Update ordinary fields")
def update_lead(lead_id: str, body: m.FieldsIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_update` with the fields that changed."""
    return _behaviour("update", lead_id, req, body, c)


@router.post("/{lead_id}/status", response_model=m.BehaviourOut, summary="Change lead status")
def change_status(lead_id: str, body: m.StatusIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_update_status`."""
    return _behaviour("status", lead_id, req, body, c)


@router.post("/{lead_id}/owner", response_model=m.BehaviourOut, summary="Change owner")
def change_owner(lead_id: str, body: m.OwnerIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_change_owner` (then `object_change_lead_pool` if the pool moves too)."""
    return _behaviour("owner", lead_id, req, body, c)


@router.post(
    "/{lead_id}/life-cycle", response_model=m.BehaviourOut, summary="Change lifecycle stage"
)
def change_life_cycle(
    lead_id: str, body: m.LifeCycleIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_update_life_cycle` and stamps `to_<stage>_timestamp`."""
    return _behaviour("life_cycle", lead_id, req, body, c)


@router.post("/{lead_id}/lead-pool", response_model=m.BehaviourOut, summary="Change lead pool")
def change_lead_pool(
    lead_id: str, body: m.LeadPoolIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_change_lead_pool`."""
    return _behaviour("lead_pool", lead_id, req, body, c)


@router.post("/{lead_id}/notes", response_model=m.BehaviourOut, summary="Add a note")
def add_notes(lead_id: str, body: m.NotesIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_add_notes` (`is_follow_up` 1 for a follow-up record)."""
    return _behaviour("notes", lead_id, req, body, c)


@router.post("/{lead_id}/team-members", response_model=m.BehaviourOut, summary="Add members")
def add_team_members(
    lead_id: str, body: m.TeamMembersIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_add_team_member` with the members actually added."""
    return _behaviour("add_team_members", lead_id, req, body, c)


@router.delete(
    "/{lead_id}/team-members/{member_id}", response_model=m.BehaviourOut, summary="Remove member"
)
def remove_team_member(
    lead_id: str,
    member_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.Mutating | None, Body()] = None,
) -> Response:
    """Emits `object_remove_team_member`."""
    req = _with_operator(req, body)
    return _json(c.leads.perform(req, "remove_team_member", lead_id, {"member_id": member_id}))


@router.post("/{lead_id}/void", response_model=m.BehaviourOut, summary="Void a lead")
def void_lead(
    lead_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.VoidIn | None, Body()] = None,
) -> Response:
    """Emits `object_voids`; the reason travels in `notes`."""
    return _behaviour("void", lead_id, req, body, c)


@router.post("/{lead_id}/restore", response_model=m.BehaviourOut, summary="Restore a lead")
def restore_lead(
    lead_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.Mutating | None, Body()] = None,
) -> Response:
    """Emits `object_restore`."""
    return _behaviour("restore", lead_id, req, body, c)


@router.post("/{lead_id}/relations", response_model=m.BehaviourOut, summary="Relate an object")
def relate(lead_id: str, body: m.RelationIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_relation`."""
    return _behaviour("relation", lead_id, req, body, c)


@router.patch("/{lead_id}/source", response_model=m.BehaviourOut, summary="Change source info")
def change_source(lead_id: str, body: m.FieldsIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_source_info`."""
    return _behaviour("source", lead_id, req, body, c)
