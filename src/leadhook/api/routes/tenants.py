"""Admin routes: tenants and their API keys (admin token only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from leadhook.api.deps import Admin, ContainerDep
from leadhook.api.models import TenantIn
from leadhook.api.problems_doc import ERRORS
from leadhook.services.tenants import tenant_json

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], dependencies=[Admin], responses=ERRORS)


@router.post("", status_code=201, summary="Create a tenant")
def create_tenant(body: TenantIn, c: ContainerDep) -> dict[str, Any]:
    """Create a tenant with the default catalog; `api_key` is shown only in this answer."""
    return c.tenants.create(body.mid, body.name, body.timezone, body.object_id)


@router.get("/{mid}", summary="Get a tenant")
def get_tenant(mid: str, c: ContainerDep) -> dict[str, Any]:
    """Return a tenant's settings."""
    return tenant_json(c.tenants.get(mid))


@router.get("/{mid}/keys", summary="List a tenant's keys")
def list_keys(mid: str, c: ContainerDep) -> dict[str, Any]:
    """List key ids and prefixes; the keys themselves are never shown again."""
    return {"data": c.tenants.list_keys(mid)}


@router.post("/{mid}/keys", status_code=201, summary="Issue another key")
def issue_key(mid: str, c: ContainerDep) -> dict[str, Any]:
    """Issue another API key; `api_key` is shown only in this answer."""
    return c.tenants.issue_key(mid)


@router.delete("/{mid}/keys/{key_id}", status_code=204, summary="Revoke a key")
def revoke_key(mid: str, key_id: str, c: ContainerDep) -> Response:
    """Revoke a key: requests with it answer 401 from now on."""
    c.tenants.revoke_key(mid, key_id)
    return Response(status_code=204)
