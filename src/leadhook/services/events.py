"""Reading the event log (the pull side of delivery)."""

from __future__ import annotations

from collections.abc import Callable

from leadhook.domain.errors import NotFoundError, ValidationError
from leadhook.services.deliveries import event_type_problem
from leadhook.services.leads import page_body
from leadhook.services.ports import UnitOfWorkFactory


class EventService:
    """List and fetch events exactly as subscribers receive them."""

    def __init__(
        self,
        readonly_uow: UnitOfWorkFactory,
        purged_before: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._read = readonly_uow
        # The unix time before which retention has purged events (None: it purged none): an
        # `after` minted before it that the log no longer holds resumes about where it was.
        # Asked only for such an `after` (it may read the database).
        self._purged_before = purged_before

    def list(
        self,
        mid: str,
        *,
        after: str | None,
        event_type: str | None,
        entity_id: str | None,
        limit: int,
    ) -> str:
        """Return `{"data": [...], "next_cursor"}` JSON, oldest first."""
        problem = event_type_problem(event_type or None)  # "" is no filter here
        if problem is not None:
            raise ValidationError.at(("query", "event_type"), problem)
        with self._read() as uow:
            page = uow.events.page(
                mid,
                after=after,
                event_type=event_type,
                entity_id=entity_id,
                limit=limit,
                purged_before=self._purged_before,
            )
        return page_body([e.payload for e in page.data], page.next_cursor)

    def get(self, mid: str, event_id: str) -> str:
        """Return one event's JSON text, or 404."""
        with self._read() as uow:
            event = uow.events.get(mid, event_id)
        if event is None:
            raise NotFoundError(f"event {event_id!r} not found")
        return event.payload
