"""Subscription and delivery routes: manage webhook endpoints, inspect, retry and replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator
from starlette.responses import Response

from leadhook.api import bodies
from leadhook.api import subscription_models as m
from leadhook.api.deps import (
    IDEMPOTENCY_HEADER,
    ContainerDep,
    EventTypeQuery,
    IdempotentCreate,
    Mid,
    optional_enum,
    query_check,
)
from leadhook.api.problems_doc import ERRORS
from leadhook.services.deliveries import delivery_filter, status_problem, time_problem
from leadhook.services.ports import DELIVERY_STATUSES as STATUSES

CREATE_ONCE_HEADER = {
    **IDEMPOTENCY_HEADER,
    "description": "Retrying with the same key (1-255 characters) answers the subscription the"
    " first request created, as it is now, and creates nothing; the same key with another"
    " request, or after that subscription was deleted, is a 409.",
}

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], responses=ERRORS)
deliveries_router = APIRouter(prefix="/v1/deliveries", tags=["subscriptions"], responses=ERRORS)
Limit = Annotated[int, Query(ge=1, le=200)]
# The filters are checked with the other parameters (a bad `limit` beside a bad `status` is
# one 422 naming both), by the same rules `delivery_filter` applies.
Status = Annotated[
    str | None,
    Query(description="the delivery's status"),
    AfterValidator(query_check(status_problem)),
    optional_enum(STATUSES),
]
Time = AfterValidator(query_check(time_problem))


@router.post(
    "",
    status_code=201,
    response_model=m.SubscriptionWithSecretOut,
    summary="Create a subscription",
    openapi_extra={"parameters": [CREATE_ONCE_HEADER]},
)
def create_subscription(
    body: m.SubscriptionIn, mid: Mid, c: ContainerDep, once: IdempotentCreate
) -> m.SubscriptionWithSecretOut:
    """Create a webhook endpoint. The answer carries its signing `secret`; afterwards the secret
    is only shown by `GET /v1/subscriptions/{id}/secret` and by a rotation, never in `GET`.

    With an `Idempotency-Key`, a retry of the same request answers the subscription the first
    one created (as it is now) instead of creating another."""
    sub = c.subscriptions.create(mid, body.model_dump(), once=once)
    return bodies.subscription_with_secret(sub, c.clock())


@router.get("", response_model=m.SubscriptionPageOut, summary="List subscriptions")
def list_subscriptions(
    mid: Mid, c: ContainerDep, cursor: str | None = None, limit: Limit = 50
) -> m.SubscriptionPageOut:
    """List the tenant's subscriptions, oldest first; follow `next_cursor` for more."""
    return bodies.subscriptions(c.subscriptions.list(mid, cursor, limit), c.clock())


@router.get("/{sub_id}", response_model=m.SubscriptionOut, summary="Get a subscription")
def get_subscription(sub_id: str, mid: Mid, c: ContainerDep) -> m.SubscriptionOut:
    """Return a subscription without its secret; `disabled_reason` says why it is disabled."""
    return bodies.subscription(c.subscriptions.get(mid, sub_id), c.clock())


@router.patch("/{sub_id}", response_model=m.SubscriptionOut, summary="Change a subscription")
def update_subscription(
    sub_id: str, body: m.SubscriptionPatch, mid: Mid, c: ContainerDep
) -> m.SubscriptionOut:
    """Change the fields sent; invalid input changes nothing. Re-enabling lets the deliveries
    still pending flow again; events of the disabled period are not queued
    (`POST /v1/subscriptions/{id}/replay-missing` queues them)."""
    sub = c.subscriptions.update(mid, sub_id, body.model_dump(exclude_unset=True))
    return bodies.subscription(sub, c.clock())


@router.delete("/{sub_id}", status_code=204, summary="Delete a subscription")
def delete_subscription(sub_id: str, mid: Mid, c: ContainerDep) -> Response:
    """Delete a subscription; its unfinished deliveries end as `dead`."""
    c.subscriptions.delete(mid, sub_id)
    return Response(status_code=204)


@router.get("/{sub_id}/secret", response_model=m.SecretOut, summary="Get the signing secret")
def get_secret(sub_id: str, mid: Mid, c: ContainerDep) -> m.SecretOut:
    """Return the current signing secret (`whsec_` + base64)."""
    return bodies.secret(c.subscriptions.get(mid, sub_id), c.clock())


@router.post(
    "/{sub_id}/rotate-secret",
    response_model=m.SubscriptionWithSecretOut,
    summary="Rotate the signing secret",
)
def rotate_secret(sub_id: str, mid: Mid, c: ContainerDep) -> m.SubscriptionWithSecretOut:
    """Issue a new secret. For 24 h every delivery is signed with both the new and the previous
    secret (two `v1,` signatures), so receivers can switch without losing a message."""
    return bodies.subscription_with_secret(c.subscriptions.rotate_secret(mid, sub_id), c.clock())


@router.post("/{sub_id}/test", response_model=m.TestEventOut, summary="Send a test event")
async def send_test(sub_id: str, mid: Mid, c: ContainerDep) -> m.TestEventOut:
    """POST a signed `{"event_type": "webhook_test", ...}` event to the endpoint now, once,
    and answer how it responded (200 whatever the endpoint said: see `success`). The test event
    is not one of the lead event types, is not logged, retried or listed among deliveries, and
    is sent even when the subscription is disabled or does not subscribe to it."""
    return bodies.test_result(await c.subscriptions.send_test(mid, sub_id))


@router.get("/{sub_id}/deliveries", response_model=m.DeliveryPageOut, summary="List deliveries")
def list_deliveries(
    sub_id: str,
    mid: Mid,
    c: ContainerDep,
    status: Status = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> m.DeliveryPageOut:
    """List the subscription's deliveries, newest first, each with its attempts."""
    return bodies.deliveries(c.subscriptions.deliveries(mid, sub_id, status, cursor, limit))


@router.post(
    "/{sub_id}/replay", status_code=202, response_model=m.ReplayOut, summary="Replay deliveries"
)
def replay(sub_id: str, body: m.ReplayIn, mid: Mid, c: ContainerDep) -> m.ReplayOut:
    """Queue again the finished deliveries created since `since` (`status`: only `dead` or
    only `delivered` ones), or, with `status` `failed`, send now those waiting for a retry.
    They are sent again with the same `webhook-id`, in order per lead, with a fresh retry
    schedule."""
    return bodies.replayed(c.subscriptions.replay(mid, sub_id, body.since, body.status))


@router.post(
    "/{sub_id}/replay-missing",
    status_code=202,
    response_model=m.ReplayMissingOut,
    summary="Send the events a subscription never got",
)
def replay_missing(
    sub_id: str, body: m.ReplayMissingIn, mid: Mid, c: ContainerDep
) -> m.ReplayMissingOut:
    """Queue the tenant's logged events created since `since` (and before `until`) that this
    subscription has no delivery of: the events of a period it was disabled, or from before
    it was created (a backfill). Only the event types it receives now; each is sent with its
    own `webhook-id` (the event's id), in order per lead. At most 10,000 a call, oldest
    first: `more` says whether the same call again has more to queue."""
    count, more = c.subscriptions.replay_missing(mid, sub_id, body.since, body.until)
    return m.ReplayMissingOut(replayed=count, more=more)


@deliveries_router.get(
    "", response_model=m.DeliveryPageOut, summary="List deliveries of every subscription"
)
def list_all_deliveries(
    mid: Mid,
    c: ContainerDep,
    status: Status = None,
    event_type: EventTypeQuery = None,
    lead_id: Annotated[
        str | None, Query(description="the lead (the events' `extra_data.entity_id`)")
    ] = None,
    subscription_id: str | None = None,
    created_after: Annotated[
        str | None,
        Query(description="RFC 3339 with a time zone; deliveries created at or after"),
        Time,
    ] = None,
    created_before: Annotated[
        str | None,
        Query(description="RFC 3339 with a time zone; deliveries created before"),
        Time,
    ] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> m.DeliveryPageOut:
    """List the tenant's deliveries across all its subscriptions (deleted ones included),
    newest first, each with its attempts; every filter narrows the list. A bad filter is a 422
    naming it; follow `next_cursor` (with the same filters) for the next page."""
    filters = delivery_filter(
        status=status,
        event_type=event_type,
        lead_id=lead_id,
        subscription_id=subscription_id,
        created_after=created_after,
        created_before=created_before,
    )
    return bodies.deliveries(c.deliveries.list(mid, filters, cursor, limit))


@deliveries_router.get("/{delivery_id}", response_model=m.DeliveryOut, summary="Get a delivery")
def get_delivery(delivery_id: str, mid: Mid, c: ContainerDep) -> m.DeliveryOut:
    """Return one delivery with its attempts."""
    return bodies.delivery(c.subscriptions.delivery(mid, delivery_id))


@deliveries_router.get(
    "/{delivery_id}/attempts", response_model=m.AttemptPageOut, summary="A delivery's attempts"
)
def list_attempts(delivery_id: str, mid: Mid, c: ContainerDep) -> m.AttemptPageOut:
    """Every HTTP attempt of one delivery, oldest first (404 for another tenant's)."""
    return bodies.attempts(c.deliveries.attempts(mid, delivery_id))


@deliveries_router.post(
    "/{delivery_id}/retry", status_code=202, response_model=m.DeliveryOut, summary="Retry now"
)
def retry_delivery(delivery_id: str, mid: Mid, c: ContainerDep) -> m.DeliveryOut:
    """Send a `failed`, `dead` or `delivered` delivery again now, with a fresh retry schedule
    (409 if it is already `pending`, a worker is sending it right now, or its subscription
    was deleted)."""
    return bodies.delivery(c.subscriptions.retry(mid, delivery_id))
