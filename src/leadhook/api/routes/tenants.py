"""Admin routes: tenants and their API keys (admin token only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from leadhook.api import bodies
from leadhook.api import models as m
from leadhook.api.deps import Admin, ContainerDep
from leadhook.api.problems_doc import ERRORS

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], dependencies=[Admin], responses=ERRORS)


@router.post("", status_code=201, summary="Create a tenant")
def create_tenant(body: m.TenantIn, c: ContainerDep) -> m.TenantCreatedOut:
    """Create a tenant with the default catalog; `api_key` is shown only in this answer."""
    made = c.tenants.create(body.mid, body.name, body.timezone, body.object_id)
    return bodies.new_tenant(made)


@router.get("", summary="List tenants")
def list_tenants(
    c: ContainerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> m.TenantPageOut:
    """List every tenant, oldest first; follow `next_cursor` for more."""
    return bodies.tenants(c.tenants.list_tenants(cursor, limit))


@router.get("/{mid}", summary="Get a tenant")
def get_tenant(mid: str, c: ContainerDep) -> m.TenantOut:
    """Return a tenant's settings."""
    return bodies.tenant(c.tenants.get(mid))


@router.get("/{mid}/keys", summary="List a tenant's keys")
def list_keys(mid: str, c: ContainerDep) -> m.KeyListOut:
    """List key ids and prefixes; the keys themselves are never shown again."""
    return bodies.keys(c.tenants.list_keys(mid))


@router.post("/{mid}/keys", status_code=201, summary="Issue another key")
def issue_key(mid: str, c: ContainerDep) -> m.IssuedKeyOut:
    """Issue another API key; `api_key` is shown only in this answer."""
    return bodies.new_key(c.tenants.issue_key(mid))


@router.delete("/{mid}/keys/{key_id}", status_code=204, summary="Revoke a key")
def revoke_key(mid: str, key_id: str, c: ContainerDep) -> Response:
    """Revoke a key: requests with it answer 401 from now on."""
    c.tenants.revoke_key(mid, key_id)
    return Response(status_code=204)
