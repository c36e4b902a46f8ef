"""Catalog routes: a tenant's members, business types, statuses, stages, pools and fields."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from leadhook.api import bodies
from leadhook.api import models as m
from leadhook.api.deps import ContainerDep, Mid
from leadhook.api.problems_doc import ERRORS
from leadhook.domain.catalog import CATALOG_KINDS

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], responses=ERRORS)

# A plain string, checked by the service: an unknown kind is a resource that does not exist
# (404, as docs/api.md says), not a malformed request. The schema still lists the kinds.
Kind = Annotated[
    str, Path(description="The catalog kind.", json_schema_extra={"enum": list(CATALOG_KINDS)})
]


@router.get("", response_model_exclude_unset=True, summary="The whole catalog")
def get_catalog(mid: Mid, c: ContainerDep) -> m.CatalogOut:
    """Return every kind of the tenant's catalog."""
    return bodies.catalog(c.tenants.catalog(mid))


@router.get("/{kind}/{key}", response_model_exclude_unset=True, summary="One catalog entry")
def get_entry(kind: Kind, key: str, mid: Mid, c: ContainerDep) -> m.CatalogEntryOut:
    """Answer the entry as `GET /v1/catalog` lists it (a member with its `operator_id`
    binding and `omni_user_uuid`); 404 when the tenant has no such entry."""
    return bodies.catalog_entry(c.tenants.catalog_entry(mid, kind, key), kind, key)


@router.put(
    "/{kind}/{key}", response_model_exclude_unset=True, summary="Create or replace a catalog entry"
)
def put_entry(
    kind: Kind,
    key: str,
    mid: Mid,
    c: ContainerDep,
    body: Annotated[dict[str, Any], Body()],
) -> m.CatalogEntryOut:
    """Body: `{"name"}` plus `omni_user_uuid` and `operator_id` (members: the back-office
    account the member is bound to; 409 if another member is bound to it), `order`
    (life_stages), `type` and `group` (fields; `options` for option fields), `object_id`
    (objects), `default` (business_types). Answers the entry as `GET /v1/catalog` lists it."""
    return bodies.catalog_entry(c.tenants.put_catalog_entry(mid, kind, key, body), kind, key)
