"""The one place where domain objects become the JSON bodies of the API.

Services answer domain objects (a `Subscription`, a `Page` of `Delivery`, a `NewKey`); the
routes turn them into the Pydantic models they declare with the functions here, so the OpenAPI
document describes exactly what is sent. Times are RFC 3339, UTC, as everywhere in an answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leadhook.api import models as m
from leadhook.api import subscription_models as sm
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import catalog_to_json, find_entry
from leadhook.domain.circuit import Circuit
from leadhook.domain.times import rfc3339, rfc3339_or_none
from leadhook.services.ports import (
    UNFINISHED,
    ApiKey,
    Attempt,
    AutomationRun,
    Delivery,
    Page,
    Subscription,
    Tenant,
)
from leadhook.services.subscriptions import TestResult
from leadhook.services.tenants import NewKey, NewTenant


def circuit(c: Circuit, now: float) -> sm.CircuitOut:
    """The endpoint's circuit breaker as it stands at `now`."""
    return sm.CircuitOut(
        state=c.state(now),
        opened_at=rfc3339_or_none(c.opened_at),
        retry_at=rfc3339_or_none(c.retry_at),
        consecutive_failures=c.failures,
    )


def _previous_expiry(sub: Subscription, now: float) -> float | None:
    # Shown only while the previous secret still signs beside the current one.
    return sub.previous_secret_expires_at if len(sub.signing_secrets(now)) > 1 else None


def _subscription_fields(sub: Subscription, now: float) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "event_types": list(sub.event_types),
        "description": sub.description,
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "max_in_flight": sub.max_in_flight,
        "rate_limit_per_s": sub.rate_limit_per_s,
        "failing_since": rfc3339_or_none(sub.first_failure_at),
        "previous_secret_expires_at": rfc3339_or_none(_previous_expiry(sub, now)),
        "circuit": circuit(sub.circuit, now),
        "created_at": rfc3339(sub.created_at),
        "updated_at": rfc3339(sub.updated_at),
    }


def subscription(sub: Subscription, now: float) -> sm.SubscriptionOut:
    """A subscription without its secret."""
    return sm.SubscriptionOut(**_subscription_fields(sub, now))


def subscription_with_secret(sub: Subscription, now: float) -> sm.SubscriptionWithSecretOut:
    """A subscription and its current secret (on create and rotate only)."""
    return sm.SubscriptionWithSecretOut(**_subscription_fields(sub, now), secret=sub.secret)


def subscriptions(page: Page[Subscription], now: float) -> sm.SubscriptionPageOut:
    """A page of subscriptions."""
    data = [subscription(s, now) for s in page.data]
    return sm.SubscriptionPageOut(data=data, next_cursor=page.next_cursor)


def secret(sub: Subscription, now: float) -> sm.SecretOut:
    """A subscription's current secret, and when the previous one stops signing."""
    return sm.SecretOut(
        secret=sub.secret, previous_secret_expires_at=rfc3339_or_none(_previous_expiry(sub, now))
    )


def attempt(a: Attempt) -> sm.AttemptOut:
    """One HTTP attempt."""
    return sm.AttemptOut(
        attempted_at=rfc3339(a.attempted_at),
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        error=a.error,
        response_body=a.response_body,
    )


def delivery(d: Delivery) -> sm.DeliveryOut:
    """A delivery and its attempts, oldest attempt first."""
    unfinished = d.status in UNFINISHED
    return sm.DeliveryOut(
        id=d.id,
        subscription_id=d.subscription_id,
        event_id=d.event_id,
        event_type=d.event_type,
        entity_id=d.entity_id,
        entity_version=d.entity_version,
        status=str(d.status),
        attempt_count=d.attempt_count,
        next_attempt_at=rfc3339_or_none(d.next_attempt_at) if unfinished else None,
        last_error=d.last_error,
        created_at=rfc3339(d.created_at),
        updated_at=rfc3339(d.updated_at),
        attempts=[attempt(a) for a in d.attempts],
    )


def deliveries(page: Page[Delivery]) -> sm.DeliveryPageOut:
    """A page of deliveries, newest first."""
    return sm.DeliveryPageOut(data=[delivery(d) for d in page.data], next_cursor=page.next_cursor)


def attempts(d: Delivery) -> sm.AttemptPageOut:
    """The attempts of one delivery, oldest first."""
    return sm.AttemptPageOut(
        delivery_id=d.id,
        status=str(d.status),
        data=[attempt(a) for a in d.attempts],
    )


def test_result(result: TestResult) -> sm.TestEventOut:
    """How the endpoint answered a test event."""
    return sm.TestEventOut(
        success=result.success, event=result.event, attempt=attempt(result.attempt)
    )


def replayed(count: int) -> sm.ReplayOut:
    """How many deliveries a replay queued again."""
    return sm.ReplayOut(replayed=count)


def _tenant_fields(tenant: Tenant) -> dict[str, Any]:
    cat = tenant.catalog
    return {
        "mid": tenant.mid,
        "name": cat.name,
        "timezone": cat.timezone,
        "object_id": cat.object_id,
        "default_business_type": cat.default_business_type,
        "created_at": rfc3339(tenant.created_at),
    }


def tenant(t: Tenant) -> m.TenantOut:
    """A tenant's settings."""
    return m.TenantOut(**_tenant_fields(t))


def tenants(page: Page[Tenant]) -> m.TenantPageOut:
    """A page of tenants."""
    return m.TenantPageOut(data=[tenant(x) for x in page.data], next_cursor=page.next_cursor)


def new_tenant(made: NewTenant) -> m.TenantCreatedOut:
    """A new tenant with its first key, shown this once."""
    return m.TenantCreatedOut(
        **_tenant_fields(made.tenant), api_key=made.api_key, key_id=made.key.id
    )


def _key_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "mid": key.mid,
        "prefix": key.prefix,
        "created_at": rfc3339(key.created_at),
        "revoked_at": rfc3339_or_none(key.revoked_at),
    }


def key(k: ApiKey) -> m.KeyOut:
    """An API key without the key itself."""
    return m.KeyOut(**_key_fields(k))


def keys(found: Iterable[ApiKey]) -> m.KeyListOut:
    """A tenant's keys."""
    return m.KeyListOut(data=[key(k) for k in found])


def new_key(issued: NewKey) -> m.IssuedKeyOut:
    """A new API key, shown this once."""
    fields = _key_fields(issued.key)
    return m.IssuedKeyOut(**fields, api_key=issued.api_key, key_id=fields["id"])


# The model of each catalog kind's entries. The catalog's JSON form is the domain's (the store
# keeps the same document); these models check it and document it. A field's `ref` and
# `options` are absent, not null, when unset: the routes answer with `exclude_unset`.
ENTRY_MODELS: dict[str, type[m.CatalogEntryOut]] = {
    "members": m.MemberOut,
    "business_types": m.NamedEntryOut,
    "lead_statuses": m.NamedEntryOut,
    "life_stages": m.LifeStageOut,
    "lead_pools": m.LeadPoolOut,
    "fields": m.FieldOut,
    "objects": m.ObjectOut,
}


def catalog(c: Catalog) -> m.CatalogOut:
    """The whole catalog."""
    return m.CatalogOut.model_validate(catalog_to_json(c))


def catalog_entry(c: Catalog, kind: str, key: str) -> m.CatalogEntryOut:
    """One catalog entry as the catalog lists it (the service checked that it exists)."""
    found = find_entry(c, kind, key)
    assert found is not None, (kind, key)
    return ENTRY_MODELS[kind].model_validate(found)


def run(r: AutomationRun) -> m.AutomationRunOut:
    """One automation run and the leads it moved."""
    return m.AutomationRunOut(
        id=r.id,
        rule=r.rule,
        lead_pool=r.lead_pool,
        trigger=r.trigger,
        started_at=rfc3339(r.started_at),
        finished_at=rfc3339(r.finished_at),
        moved=len(r.lead_ids),
        lead_ids=list(r.lead_ids),
    )


def runs_now(found: list[AutomationRun]) -> m.AutomationRunNowOut:
    """The runs a manual run made, and how many leads they moved in all."""
    moved = sum(len(r.lead_ids) for r in found)
    return m.AutomationRunNowOut(moved=moved, data=[run(r) for r in found])


def runs(page: Page[AutomationRun]) -> m.AutomationRunPageOut:
    """A page of past automation runs, newest first."""
    return m.AutomationRunPageOut(data=[run(r) for r in page.data], next_cursor=page.next_cursor)
