"""Lead routes: one endpoint per behaviour, plus reading leads and their timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Query
from starlette.responses import Response

from leadhook.api import models as m
from leadhook.api.deps import BEHAVIOUR_HEADERS, BehaviourReq, ContainerDep, Mid
from leadhook.api.problems_doc import ERRORS
from leadhook.bootstrap import Container
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest, dumps
from leadhook.services.ports import LeadFilter

router = APIRouter(prefix="/v1/leads", tags=["leads"], responses=ERRORS)
JSON = "application/json"
Limit = Annotated[int, Query(ge=1, le=500)]


async def _answer(pending: Future[tuple[int, str]]) -> Response:
    # Behaviours are written by the store's writer (group commit): the request waits for its
    # commit without holding a thread of the pool.
    status, body = await asyncio.wrap_future(pending)
    return Response(body, status_code=status, media_type=JSON)


def _json(status_body: tuple[int, str]) -> Response:
    status, body = status_body
    return Response(body, status_code=status, media_type=JSON)


def _with_operator(req: BehaviourRequest, body: m.Mutating | None) -> BehaviourRequest:
    op = body.operator if body is not None else None
    return replace(req, operator=Operator.parse(None if op is None else op.model_dump()))


def _args(body: m.Mutating) -> dict[str, Any]:
    return body.model_dump(exclude={"operator"})


def submit(
    c: Container, action: str, req: BehaviourRequest, body: m.Mutating | None, lead_id: str
) -> Future[tuple[int, str]]:
    """Hand one behaviour to the lead service: `create`, `create_many`, or a behaviour name
    of `LeadService.submit_perform` (its `lead_id` is then the path's)."""
    req = _with_operator(req, body)
    if action == "create":
        assert body is not None
        return c.leads.submit_create(req, _args(body))
    if action == "create_many":
        assert isinstance(body, m.BatchCreateIn)
        return c.leads.submit_create_many(req, [item.model_dump() for item in body.leads])
    return c.leads.submit_perform(req, action, lead_id, _args(body) if body is not None else {})


FAST_ACTIONS: dict[Callable[..., Any], str] = {}
"""Route endpoint → the action it submits: the routes `api/fastpath.py` may answer itself."""

_E = TypeVar("_E", bound=Callable[..., Any])


def _fast(action: str) -> Callable[[_E], _E]:
    def mark(endpoint: _E) -> _E:
        FAST_ACTIONS[endpoint] = action
        return endpoint

    return mark


@router.post(
    "",
    status_code=201,
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Create a lead",
)
@_fast("create")
async def create_lead(body: m.CreateLeadIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Create a lead; emits `object_create`."""
    return await _answer(submit(c, "create", req, body, ""))


@router.post(
    "/batch",
    status_code=201,
    response_model=m.BatchOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Create up to 1,000 leads",
)
@_fast("create_many")
async def create_leads(body: m.BatchCreateIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Create many leads in one transaction; each emits its own `object_create`."""
    return await _answer(submit(c, "create_many", req, body, ""))


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


async def _behaviour(
    name: str, lead_id: str, req: BehaviourRequest, body: m.Mutating | None, c: Container
) -> Response:
    return await _answer(submit(c, name, req, body, lead_id))


@router.patch(
    "/{lead_id}",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Update ordinary fields",
)
@_fast("update")
async def update_lead(
    lead_id: str, body: m.FieldsIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_update` with the fields that changed."""
    return await _behaviour("update", lead_id, req, body, c)


@router.post(
    "/{lead_id}/status",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Change lead status",
)
@_fast("status")
async def change_status(
    lead_id: str, body: m.StatusIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_update_status`."""
    return await _behaviour("status", lead_id, req, body, c)


@router.post(
    "/{lead_id}/owner",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Change owner",
)
@_fast("owner")
async def change_owner(
    lead_id: str, body: m.OwnerIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_change_owner` (then `object_change_lead_pool` if the pool moves too)."""
    return await _behaviour("owner", lead_id, req, body, c)


@router.post(
    "/{lead_id}/life-cycle",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Change lifecycle stage",
)
@_fast("life_cycle")
async def change_life_cycle(
    lead_id: str, body: m.LifeCycleIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_update_life_cycle` and stamps `to_<stage>_timestamp`."""
    return await _behaviour("life_cycle", lead_id, req, body, c)


@router.post(
    "/{lead_id}/lead-pool",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Change lead pool",
)
@_fast("lead_pool")
async def change_lead_pool(
    lead_id: str, body: m.LeadPoolIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_change_lead_pool`."""
    return await _behaviour("lead_pool", lead_id, req, body, c)


@router.post(
    "/{lead_id}/notes",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Add a note",
)
@_fast("notes")
async def add_notes(lead_id: str, body: m.NotesIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_add_notes` (`is_follow_up` 1 for a follow-up record)."""
    return await _behaviour("notes", lead_id, req, body, c)


@router.post(
    "/{lead_id}/team-members",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Add members",
)
@_fast("add_team_members")
async def add_team_members(
    lead_id: str, body: m.TeamMembersIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_add_team_member` with the members actually added."""
    return await _behaviour("add_team_members", lead_id, req, body, c)


@router.delete(
    "/{lead_id}/team-members/{member_id}",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Remove member",
)
async def remove_team_member(
    lead_id: str,
    member_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.Mutating | None, Body()] = None,
) -> Response:
    """Emits `object_remove_team_member`."""
    req = _with_operator(req, body)
    args = {"member_id": member_id}
    return await _answer(c.leads.submit_perform(req, "remove_team_member", lead_id, args))


@router.post(
    "/{lead_id}/void",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Void a lead",
)
@_fast("void")
async def void_lead(
    lead_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.VoidIn | None, Body()] = None,
) -> Response:
    """Emits `object_voids`; the reason travels in `notes`."""
    return await _behaviour("void", lead_id, req, body, c)


@router.post(
    "/{lead_id}/restore",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Restore a lead",
)
@_fast("restore")
async def restore_lead(
    lead_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.Mutating | None, Body()] = None,
) -> Response:
    """Emits `object_restore`."""
    return await _behaviour("restore", lead_id, req, body, c)


@router.post(
    "/{lead_id}/relations",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Relate an object",
)
@_fast("relation")
async def relate(lead_id: str, body: m.RelationIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Emits `object_relation`."""
    return await _behaviour("relation", lead_id, req, body, c)


@router.patch(
    "/{lead_id}/source",
    response_model=m.BehaviourOut,
    openapi_extra=BEHAVIOUR_HEADERS,
    summary="Change source info",
)
@_fast("source")
async def change_source(
    lead_id: str, body: m.FieldsIn, req: BehaviourReq, c: ContainerDep
) -> Response:
    """Emits `object_source_info`."""
    return await _behaviour("source", lead_id, req, body, c)


# ---- lead pools: claim, return, duplicate check and merge (docs/automation.md) --------------


@router.post("/{lead_id}/claim", response_model=m.BehaviourOut, summary="Claim from the pool")
def claim(lead_id: str, body: m.ClaimIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """A member of the lead's pool takes the unowned lead (scene 3, she is the operator):
    `object_change_owner`. 409 when the lead has an owner, the member may not claim from the
    pool, or she holds the pool's `claim_limit` already."""
    return _json(c.pools.claim(_with_operator(req, body), lead_id, body.member))


@router.post("/{lead_id}/return", response_model=m.BehaviourOut, summary="Return to a pool")
def return_lead(lead_id: str, body: m.ReturnIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Empty the owner (scene 4) and move the lead to `lead_pool` if named:
    `object_change_owner`, then `object_change_lead_pool`; a pool whose assignment is enabled
    then gives it an owner (`object_change_owner`, scene 1)."""
    req = _with_operator(req, body)
    return _json(c.pools.return_(req, lead_id, body.lead_pool, body.notes))


@router.get("/{lead_id}/duplicates", response_model=m.DuplicatesOut, summary="Duplicates of a lead")
def duplicates(lead_id: str, mid: Mid, c: ContainerDep, limit: Limit = 50) -> Response:
    """Live leads of the tenant with the same mobile or email (ignoring spaces, dashes, a
    leading +86 and case), oldest first."""
    return Response(c.pools.duplicates(mid, lead_id, limit), media_type=JSON)


@router.post("/{lead_id}/merge", response_model=m.BehaviourOut, summary="Merge duplicates")
def merge(lead_id: str, body: m.MergeIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Keep this lead, fill its empty fields, notes, team members and (if it has none) owner
    from the duplicates, and void them, in one transaction (scene 6). `events` lists every
    event in order: see docs/automation.md."""
    return _json(c.pools.merge(_with_operator(req, body), lead_id, body.duplicates))
