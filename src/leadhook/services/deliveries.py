"""Delivery use cases across a tenant's subscriptions: list them filtered, read their attempts."""

from __future__ import annotations

from leadhook.domain.errors import FieldProblem, NotFoundError, ValidationError
from leadhook.domain.events import EVENT_TYPES
from leadhook.domain.times import parse_rfc3339
from leadhook.services.ports import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryFilter,
    Page,
    UnitOfWorkFactory,
)


def status_problem(status: str | None) -> str | None:
    """What is wrong with a delivery status given as a filter, if anything."""
    if status is not None and status not in DELIVERY_STATUSES:
        return f"must be one of {', '.join(DELIVERY_STATUSES)}"
    return None


def event_type_problem(event_type: str | None) -> str | None:
    """What is wrong with an event type given as a filter, if anything."""
    if event_type is not None and event_type not in EVENT_TYPES:
        return f"unknown event type {event_type!r}"
    return None


def _read_time(text: str | None) -> tuple[float | None, str | None]:
    """A time given as a filter, as unix seconds, or what is wrong with it."""
    if text is None:
        return None, None
    try:
        return parse_rfc3339(text), None
    except ValueError as exc:
        return None, str(exc)


def time_problem(text: str | None) -> str | None:
    """What is wrong with a time (RFC 3339 with a time zone) given as a filter, if anything."""
    return _read_time(text)[1]


def delivery_filter(
    *,
    status: str | None = None,
    event_type: str | None = None,
    lead_id: str | None = None,
    subscription_id: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
) -> DeliveryFilter:
    """Check the query's filters and build the listing's filter; 422 naming each bad one."""
    problems: list[FieldProblem] = []

    def bad(name: str, msg: str) -> None:
        problems.append(FieldProblem(("query", name), msg))

    for name, problem in (
        ("status", status_problem(status)),
        ("event_type", event_type_problem(event_type)),
    ):
        if problem is not None:
            bad(name, problem)
    times: dict[str, float | None] = {}
    for name, text in (("created_after", created_after), ("created_before", created_before)):
        times[name], problem = _read_time(text)
        if problem is not None:
            bad(name, problem)
    after, before = times["created_after"], times["created_before"]
    if after is not None and before is not None and after >= before:
        bad("created_before", "must be later than created_after")
    if problems:
        first = problems[0]
        raise ValidationError(f"{'.'.join(map(str, first.loc))}: {first.msg}", problems)
    return DeliveryFilter(
        status=status,
        event_type=event_type,
        entity_id=lead_id,
        subscription_id=subscription_id,
        created_after=after,
        created_before=before,
    )


def read_delivery(read: UnitOfWorkFactory, mid: str, delivery_id: str) -> Delivery:
    """Return one delivery of the tenant with its attempts, oldest first, or 404."""
    with read() as uow:
        found = uow.deliveries.get(mid, delivery_id)
    if found is None:
        raise NotFoundError(f"delivery {delivery_id!r} not found")
    return found


class DeliveryService:
    """Read deliveries of every subscription of a tenant, and the attempts of one."""

    def __init__(self, readonly_uow: UnitOfWorkFactory) -> None:
        self._read = readonly_uow

    def list(
        self, mid: str, filters: DeliveryFilter, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        """List the tenant's deliveries, newest first, each with its attempts.

        Deliveries of deleted subscriptions are listed too (they ended `dead`): a filter on a
        subscription id that is not the tenant's simply matches nothing.
        """
        with self._read() as uow:
            return uow.deliveries.search(mid, filters, cursor, limit)

    def attempts(self, mid: str, delivery_id: str) -> Delivery:
        """Return one delivery with its attempts, oldest first; 404 if it is not the tenant's."""
        return read_delivery(self._read, mid, delivery_id)
