"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from leadhook.api.deps import ContainerDep
from leadhook.api.problems import OutageLog
from leadhook.domain.errors import SecretKeyUnavailableError

router = APIRouter(tags=["operations"])
log = logging.getLogger("leadhook.api")


class HealthOut(BaseModel):
    """The process serves requests."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """The database answered a query."""

    status: Literal["ready"]
    database: str


class NotReadyOut(BaseModel):
    """The database did not answer (its error is logged, never shown here)."""

    status: Literal["unavailable"]
    detail: str


@router.get("/healthz", summary="The process is up")
def healthz() -> HealthOut:
    """Answer 200 while the process serves requests."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "The database is not reachable"}},
    summary="The database is reachable",
)
def readyz(request: Request, c: ContainerDep) -> Response:
    """Answer 200 when a query reaches the database, 503 otherwise."""
    outages: OutageLog = request.app.state.outages
    try:
        database = c.readiness.check()
    except Exception as exc:  # any driver error means "not ready"
        # The driver's message can name hosts and users: log it (once per outage, however
        # often probes ask), never show it unauthenticated.
        outages.failed(503, "the readiness check failed", exc)
        detail = "the database is not reachable"
        if isinstance(exc, SecretKeyUnavailableError):  # it answered: the keys are wrong
            outages.answered()
            detail = "this service's secret keys do not open the stored webhook secrets"
        return JSONResponse(
            {"status": "unavailable", "detail": detail},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    outages.answered()
    outages.key_opens()
    return JSONResponse({"status": "ready", "database": database})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """Expose the process's metrics in the Prometheus text format."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
