"""Automation routes: run the due pool rules now, and list past runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from leadhook.api import bodies
from leadhook.api import models as m
from leadhook.api.deps import ContainerDep, Mid
from leadhook.api.problems_doc import ERRORS

router = APIRouter(prefix="/v1/automation", tags=["automation"], responses=ERRORS)


@router.post("/run", response_model=m.AutomationRunNowOut, summary="Run the due rules now")
def run_now(mid: Mid, c: ContainerDep) -> m.AutomationRunNowOut:
    """Run the tenant's due automatic rules (reclaim) now, as the worker does on its
    schedule; answer the runs that moved leads."""
    return bodies.runs_now(c.automation.run_now(mid))


@router.get("/runs", response_model=m.AutomationRunPageOut, summary="Past automation runs")
def runs(
    mid: Mid,
    c: ContainerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> m.AutomationRunPageOut:
    """Past runs that moved leads, newest first: when, which rule, which pool, which leads."""
    return bodies.runs(c.automation.runs(mid, cursor, limit))
