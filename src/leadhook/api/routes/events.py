"""Event routes: the pull side, the exact JSON that subscribers are sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from leadhook.api.deps import ContainerDep, EventTypeQuery, Mid
from leadhook.api.models import EventPageOut
from leadhook.api.problems_doc import ERRORS
from leadhook.domain.errors import BadRequestError, ValidationError
from leadhook.domain.events import LeadEvent

router = APIRouter(prefix="/v1/events", tags=["events"], responses=ERRORS)
JSON = "application/json"


@router.get("", response_model=EventPageOut, summary="List events, oldest first")
def list_events(
    mid: Mid,
    c: ContainerDep,
    after: str | None = None,
    event_type: EventTypeQuery = None,
    entity_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None, Query(description="the same as `after`, as the other listings name it")
    ] = None,
) -> Response:
    """Page through the log after an `event_id`; pass `next_cursor` back as `after` (or as
    `cursor`, as every other listing takes it)."""
    if cursor is not None and after is not None and cursor != after:
        raise ValidationError.at(("query", "cursor"), "differs from `after`: send one of them")
    by_cursor = after is None and cursor is not None
    try:
        body = c.events.list(
            mid,
            after=cursor if by_cursor else after,
            event_type=event_type,
            entity_id=entity_id,
            limit=limit,
        )
    except BadRequestError as exc:
        if not by_cursor:
            raise
        # The error names the parameter the client sent.
        raise BadRequestError(exc.detail.replace("after=", "cursor=", 1)) from None
    return Response(body, media_type=JSON)


@router.get("/{event_id}", response_model=LeadEvent, summary="Get one event")
def get_event(event_id: str, mid: Mid, c: ContainerDep) -> Response:
    """Return one event exactly as stored and sent."""
    return Response(c.events.get(mid, event_id), media_type=JSON)
