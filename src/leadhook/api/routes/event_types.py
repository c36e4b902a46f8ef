"""Event type routes: what each event type is, its JSON Schema and an example."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from leadhook.api.deps import Mid
from leadhook.api.models import EventTypeOut, EventTypesOut
from leadhook.api.problems_doc import ERRORS
from leadhook.domain import event_types

router = APIRouter(prefix="/v1/event-types", tags=["event types"], responses=ERRORS)


@router.get("", response_model=EventTypesOut, summary="List the event types")
def list_event_types(_mid: Mid) -> dict[str, Any]:
    """Every event type a subscription can receive, in the contract's order, each with its
    description, its JSON Schema (Draft 2020-12) and an example, exactly as the *Webhooks*
    section of this document shows them."""
    return {"data": event_types.describe_all()}


@router.get("/{name}", response_model=EventTypeOut, summary="Get one event type")
def get_event_type(name: str, _mid: Mid) -> dict[str, Any]:
    """One event type; an unknown name answers 404."""
    return event_types.describe(name)
