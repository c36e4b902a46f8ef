"""Lead routes: one endpoint per behaviour, plus reading leads and their timeline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Header, Query
from starlette.responses import Response

from leadhook.api import models as m
from leadhook.api.deps import (
    BEHAVIOUR_HEADERS,
    BehaviourReq,
    ContainerDep,
    Mid,
    if_match_versions,
)
from leadhook.api.problems_doc import ERRORS
from leadhook.bootstrap import Container
from leadhook.domain.errors import ValidationError
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest, check_listed_version, dumps
from leadhook.services.ports import LeadFilter

router = APIRouter(prefix="/v1/leads", tags=["leads"], responses=ERRORS)
JSON = "application/json"
Limit = Annotated[int, Query(ge=1, le=500)]
T = TypeVar("T")


def committed(pending: Future[T]) -> asyncio.Future[T]:
    """Await a behaviour's commit: `asyncio.wrap_future` without its thread hop when it can.

    Behaviours are written by the store's writer (group commit), and the request waits for its
    commit without holding a thread of the pool. On SQLite the writer commits on this event
    loop: the answer is then copied over at once, where `wrap_future` always went through
    `call_soon_threadsafe` (a write to the loop's self-pipe and one more turn of the loop per
    request). From a writer thread (PostgreSQL) it still goes through the loop's thread-safe
    call.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()
    here = threading.get_ident()

    def copy(done: Future[T]) -> None:
        if threading.get_ident() == here:
            _settle(waiter, done)
        else:
            # A closed loop: the server stopped and nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiter, done)

    pending.add_done_callback(copy)
    return waiter


def _settle(waiter: asyncio.Future[T], done: Future[T]) -> None:
    if waiter.cancelled():
        return
    if done.cancelled():
        waiter.cancel()
        return
    exc = done.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(done.result())


async def _answer(pending: Future[tuple[int, str]]) -> Response:
    status, body = await committed(pending)
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


@router.get(
    "/{lead_id}",
    response_model=m.LeadOut,
    summary="Get a lead",
    responses={304: {"description": "`If-None-Match` names the lead's current version"}},
)
def get_lead(
    lead_id: str,
    mid: Mid,
    c: ContainerDep,
    if_none_match: Annotated[str | None, Header()] = None,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Return the lead object itself, with its version as its `ETag` (`"3"`): what a
    behaviour's `If-Match` takes. `If-None-Match` naming that version (or `*`) answers 304.
    `If-Match` is read as a behaviour reads it and first (RFC 9110 13.2.2): a lead at a
    version it does not list is 412, whatever `If-None-Match` says."""
    versions = if_match_versions(if_match)  # a malformed one is 400, before the lead is read
    lead = c.leads.get(mid, lead_id)
    check_listed_version(versions, lead_id, lead.version)
    tag = f'"{lead.version}"'
    if if_none_match is not None and _names(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(dumps(lead.to_api_json()), media_type=JSON, headers={"ETag": tag})


def _names(if_none_match: str, tag: str) -> bool:
    # A list of entity tags, compared weakly (RFC 9110 13.1.2): W/"3" matches "3".
    for item in if_none_match.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == tag:
            return True
    return False


@router.get("/{lead_id}/timeline", response_model=m.EventPageOut, summary="A lead's events")
def timeline(
    lead_id: str,
    mid: Mid,
    c: ContainerDep,
    is_follow_up: Annotated[
        Literal["0", "1", "true", "false"] | None,
        Query(description="1 (or true): follow-ups only; 0 (or false): the others"),
    ] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Response:
    """Return the lead's events, newest first."""
    follow_up = None if is_follow_up is None else int(is_follow_up in ("1", "true"))
    body = c.leads.timeline(mid, lead_id, follow_up, cursor, limit)
    return Response(body, media_type=JSON)


@dataclass(frozen=True)
class _BehaviourRoute:
    """One behaviour on a lead, as an operation: everything but its handler, which is the same
    for all (`submit` the action with the body, answer once committed)."""

    name: str  # the endpoint's name: the OpenAPI operation id is made from it
    method: str
    path: str
    action: str  # LeadService.submit_perform's behaviour
    model: type[m.Mutating]
    summary: str
    doc: str
    body_optional: bool = False


def _behaviour_route(spec: _BehaviourRoute) -> None:
    """Add `spec` to the router, marked for the short way (api/fastpath.py)."""

    async def endpoint(
        lead_id: str, req: BehaviourRequest, c: Container, body: m.Mutating | None = None
    ) -> Response:
        return await _answer(submit(c, spec.action, req, body, lead_id))

    body: Any = Annotated[spec.model | None, Body()] if spec.body_optional else spec.model
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [
        inspect.Parameter("lead_id", kind, annotation=str),
        inspect.Parameter("req", kind, annotation=BehaviourReq),
        inspect.Parameter("c", kind, annotation=ContainerDep),
        inspect.Parameter(
            "body",
            kind,
            annotation=body,
            default=None if spec.body_optional else inspect.Parameter.empty,
        ),
    ]
    # What FastAPI reads to document and parse the operation: set here, as the table says.
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.annotation for p in params} | {"return": Response}
    endpoint.__name__ = endpoint.__qualname__ = spec.name
    endpoint.__doc__ = spec.doc
    router.add_api_route(
        spec.path,
        _fast(spec.action)(endpoint),
        methods=[spec.method],
        response_model=m.BehaviourOut,
        openapi_extra=BEHAVIOUR_HEADERS,
        summary=spec.summary,
        name=spec.name,
    )


_B = _BehaviourRoute
for _spec in (
    _B("update_lead", "PATCH", "/{lead_id}", "update", m.FieldsIn, "Update ordinary fields",
       "Emits `object_update` with the fields that changed."),
    _B("change_status", "POST", "/{lead_id}/status", "status", m.StatusIn, "Change lead status",
       "Emits `object_update_status`."),
    _B("change_owner", "POST", "/{lead_id}/owner", "owner", m.OwnerIn, "Change owner",
       "Emits `object_change_owner` (then `object_change_lead_pool` if the pool moves too)."),
    _B("change_life_cycle", "POST", "/{lead_id}/life-cycle", "life_cycle", m.LifeCycleIn,
       "Change lifecycle stage",
       "Emits `object_update_life_cycle` and stamps `to_<stage>_timestamp`."),
    _B("change_lead_pool", "POST", "/{lead_id}/lead-pool", "lead_pool", m.LeadPoolIn,
       "Change lead pool", "Emits `object_change_lead_pool`."),
    _B("add_notes", "POST", "/{lead_id}/notes", "notes", m.NotesIn, "Add a note",
       "Emits `object_add_notes` (`is_follow_up` 1 for a follow-up record)."),
    _B("add_team_members", "POST", "/{lead_id}/team-members", "add_team_members",
       m.TeamMembersIn, "Add members",
       "Emits `object_add_team_member` with the members actually added."),
):  # fmt: skip
    _behaviour_route(_spec)


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


for _spec in (
    _B("void_lead", "POST", "/{lead_id}/void", "void", m.VoidIn, "Void a lead",
       "Emits `object_voids`; the reason travels in `notes`.", body_optional=True),
    _B("restore_lead", "POST", "/{lead_id}/restore", "restore", m.Mutating, "Restore a lead",
       "Emits `object_restore`.", body_optional=True),
    _B("relate", "POST", "/{lead_id}/relations", "relation", m.RelationIn, "Relate an object",
       "Emits `object_relation`."),
    _B("change_source", "PATCH", "/{lead_id}/source", "source", m.FieldsIn, "Change source info",
       "Emits `object_source_info`."),
):  # fmt: skip
    _behaviour_route(_spec)


# ---- lead pools: claim, return, duplicate check and merge (docs/automation.md) --------------


@router.post(
    "/{lead_id}/claim",
    response_model=m.BehaviourOut,
    summary="Claim from the pool",
    openapi_extra=BEHAVIOUR_HEADERS,
)
def claim(lead_id: str, body: m.ClaimIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """A member of the lead's pool takes the unowned lead (scene 3, she is the operator):
    `object_change_owner`. 409 when the lead has an owner, the member may not claim from the
    pool, or she holds the pool's `claim_limit` already. An `operator` in the body is the
    member herself: its `operator_type` is 2, given or left out."""
    op = body.operator
    if op is not None:
        if "operator_type" not in op.model_fields_set:
            body = body.model_copy(update={"operator": op.model_copy(update={"operator_type": 2})})
        elif op.operator_type != 2:
            raise ValidationError.at(
                ("body", "operator", "operator_type"), "a claim is made by the member: must be 2"
            )
    return _json(c.pools.claim(_with_operator(req, body), lead_id, body.member))


@router.post(
    "/{lead_id}/return",
    response_model=m.BehaviourOut,
    summary="Return to a pool",
    openapi_extra=BEHAVIOUR_HEADERS,
)
def return_lead(
    lead_id: str,
    req: BehaviourReq,
    c: ContainerDep,
    body: Annotated[m.ReturnIn | None, Body()] = None,
) -> Response:
    """Empty the owner (scene 4) and move the lead to `lead_pool` if named:
    `object_change_owner`, then `object_change_lead_pool`; a pool whose assignment is enabled
    then gives it an owner (`object_change_owner`, scene 1). Every key is optional, and so is
    the body: none returns the lead to its own pool."""
    body = body or m.ReturnIn()
    req = _with_operator(req, body)
    return _json(c.pools.return_(req, lead_id, body.lead_pool, body.notes))


@router.get("/{lead_id}/duplicates", response_model=m.DuplicatesOut, summary="Duplicates of a lead")
def duplicates(lead_id: str, mid: Mid, c: ContainerDep, limit: Limit = 50) -> Response:
    """Live leads of the tenant with the same mobile or email (ignoring spaces, dashes, a
    leading +86 and case), oldest first."""
    return Response(c.pools.duplicates(mid, lead_id, limit), media_type=JSON)


@router.post(
    "/{lead_id}/merge",
    response_model=m.BehaviourOut,
    summary="Merge duplicates",
    openapi_extra=BEHAVIOUR_HEADERS,
)
def merge(lead_id: str, body: m.MergeIn, req: BehaviourReq, c: ContainerDep) -> Response:
    """Keep this lead, fill its empty fields, notes, team members and (if it has none) owner
    from the duplicates, and void them, in one transaction (scene 6). `events` lists every
    event in order: see docs/automation.md."""
    return _json(c.pools.merge(_with_operator(req, body), lead_id, body.duplicates))
