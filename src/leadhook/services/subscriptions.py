"""Subscription use cases: manage webhook endpoints, send test events, inspect and replay."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from leadhook.domain.attempts import Delivered
from leadhook.domain.circuit import CLOSED, Circuit
from leadhook.domain.errors import ConflictError, NotFoundError, ValidationError
from leadhook.domain.events import EVENT_TYPES, TEST_EVENT_TYPE
from leadhook.domain.signing import webhook_headers
from leadhook.domain.targets import TargetError, validate_url
from leadhook.domain.times import parse_rfc3339
from leadhook.domain.values import finite_number
from leadhook.services import ports
from leadhook.services.deliveries import read_delivery, status_problem
from leadhook.services.idempotency import same_request
from leadhook.services.lanes import MAX_IN_FLIGHT
from leadhook.services.ports import (
    USER_AGENT,
    Attempt,
    Clock,
    Delivery,
    DeliveryStatus,
    IdFactory,
    Page,
    SenderFactory,
    StoredResponse,
    Subscription,
    UnitOfWork,
    UnitOfWorkFactory,
)

ROTATION_OVERLAP = 86400.0
"""Seconds the previous secret keeps signing beside the new one after a rotation."""
DEFAULT_MAX_IN_FLIGHT = 16
MAX_IN_FLIGHT_LIMIT = MAX_IN_FLIGHT
"""More attempts at once to one endpoint only lets one subscriber hold more of the slots."""
MAX_RATE = 100_000.0
MAX_DESCRIPTION = 1000
log = logging.getLogger("leadhook.subscriptions")


def _said_closed(sub_id: str, was: Circuit | None, now: float, by: str) -> None:
    """Log a circuit closed outside the queue (a test event answered, a new URL): `was`, the
    circuit as `close_circuit` found it, if it was open."""
    if was is not None and was.retry_at is not None:
        ports.log_circuit_closed(log, sub_id, now - (was.opened_at or now), by)


REPLAYABLE: tuple[str, ...] = tuple(s.value for s in ports.REPLAYABLE)
"""What a replay that names no status queues again (`dead`, `delivered`)."""
REPLAY_STATUSES: tuple[str, ...] = tuple(s.value for s in ports.REPLAY_STATUSES)
"""What a replay may name (`dead`, `delivered`, `failed`); the console offers them too."""
# The most events one `replay_missing` queues: one transaction of that many inserts holds
# SQLite's write lock for a fraction of a second (the walk that finds them holds none); the
# same call again queues the next ones.
REPLAY_MISSING_LIMIT = 10_000
# The deliveries one transaction of a `replay` queues again: the write lock is let go between
# batches, so other writers wait for one batch (milliseconds), not for the whole replay.
REPLAY_BATCH = 2_000
# Windows of replay-missing calls that left `more`: where the same call again resumes (a
# process's own memory; another process's call walks from `since`, as a first one does).
RESUME_MEMOS = 256
EDITABLE = frozenset(
    {"url", "event_types", "description", "enabled", "max_in_flight", "rate_limit_per_s"}
)


@dataclass(frozen=True)
class TestResult:
    """A test event as it was sent, and how the endpoint answered it."""

    __test__ = False  # not a pytest test class, whatever its name

    success: bool
    event: dict[str, Any]
    attempt: Attempt


LAST_INSTANT = 253_402_300_799  # 9999-12-31T23:59:59Z


def _instant(field: str, value: Any) -> float:
    """A time a replay takes: unix seconds, or an RFC 3339 date-time with its time zone."""
    if isinstance(value, str):
        try:
            value = parse_rfc3339(value, in_query=False)
        except ValueError as exc:
            text = str(exc)
            if text.startswith("must be "):  # not a date-time at all: say both forms
                text = "must be unix seconds (a number >= 0) or " + text[len("must be ") :]
            raise _bad(field, text) from None
        if value < 0:
            raise _bad(field, "is before 1970-01-01T00:00:00Z, unix time 0")
    if not finite_number(value) or value < 0:
        raise _bad(
            field,
            "must be unix seconds (a number >= 0) or an RFC 3339 date-time with a time zone",
        )
    if value > LAST_INSTANT:  # past any time a database column holds (1e308 was a 500)
        raise _bad(field, "is after 9999-12-31T23:59:59Z, unix time 253402300799")
    return float(value)


def _types_of(sub: ports.Subscription) -> tuple[str, ...] | None:
    """The event types a replay of `sub` sends: those it receives now (None: every type)."""
    return None if "*" in sub.event_types else tuple(sub.event_types)


def _bad(field: str | tuple[str | int, ...], msg: str) -> ValidationError:
    loc = (field,) if isinstance(field, str) else field
    return ValidationError.at(("body", *loc), msg)


class SubscriptionService:
    """Create, change, rotate and test subscriptions; list, retry and replay their deliveries."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdFactory,
        sender_factory: SenderFactory,
        *,
        allow_private: bool = False,
        readonly_uow: UnitOfWorkFactory | None = None,
        on_enqueued: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        max_subscriptions: int | None = None,
        check_name: Callable[[str], None] | None = None,
    ) -> None:
        self._max = max_subscriptions  # live subscriptions a tenant may have; None: no bound
        # Resolves a URL's host name now and raises TargetError if it reaches inside (an
        # adapter's); None: names are checked only when sent to.
        self._check_name = check_name
        self._uow = uow
        self._read = readonly_uow or uow
        self._clock = clock
        self._ids = ids
        self._make_sender = sender_factory
        self._allow_private = allow_private
        self._on_enqueued = on_enqueued
        # A subscription was disabled or deleted: the delivery loops hand back what they hold
        # for it and have not started (`Dispatcher`), instead of at their next heartbeat.
        self._on_stopped = on_stopped
        # (mid, subscription, since, until, types) → the last seq a replay-missing of that
        # window queued, when it said `more` (RESUME_MEMOS at most, the oldest dropped).
        self._resume: dict[tuple[Any, ...], int] = {}
        self._resume_lock = threading.Lock()  # calls come on the API's threads

    # ---- validation --------------------------------------------------------------------------

    def _url(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _bad("url", "must be a string")
        try:
            return validate_url(value, allow_private=self._allow_private)
        except TargetError as exc:
            raise _bad("url", str(exc)) from None

    def _reachable(self, url: str) -> None:
        """Refuse a URL whose host name resolves now to an address webhooks must not reach
        (422, as a literal one is); run before any transaction: a lookup may take seconds."""
        host = urlsplit(url).hostname
        if self._allow_private or self._check_name is None or not host:
            return
        try:
            self._check_name(host)
        except TargetError as exc:
            raise _bad("url", str(exc)) from None

    @staticmethod
    def _event_types(value: Any) -> tuple[str, ...]:
        if not isinstance(value, Sequence) or isinstance(value, str) or not value:
            raise _bad("event_types", 'must be a non-empty list of event types, or ["*"]')
        out: list[str] = []
        for i, item in enumerate(value):
            if item == "*":
                if len(value) > 1:
                    raise _bad(("event_types", i), '"*" must be the only item')
            elif item not in EVENT_TYPES:
                raise _bad(("event_types", i), f"unknown event type {item!r}")
            if item not in out:
                out.append(item)
        return tuple(out)

    @staticmethod
    def _checked(field: str, value: Any) -> Any:
        if field == "description":
            if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
                raise _bad(field, f"must be a string of at most {MAX_DESCRIPTION} characters")
        elif field == "enabled":
            if not isinstance(value, bool):
                raise _bad(field, "must be true or false")
        elif field == "max_in_flight":
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok or not 1 <= value <= MAX_IN_FLIGHT_LIMIT:
                raise _bad(field, f"must be an integer from 1 to {MAX_IN_FLIGHT_LIMIT}")
        elif field == "rate_limit_per_s" and value is not None:
            if not finite_number(value) or not 0 < value <= MAX_RATE:
                raise _bad(field, f"must be null or a number above 0 and at most {MAX_RATE:g}")
            value = float(value)
        return value

    def _validated(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(changes) - EDITABLE)
        if unknown:
            raise _bad(unknown[0], "is not a field of a subscription")
        out: dict[str, Any] = {}
        for field, value in changes.items():
            if field == "url":
                out[field] = self._url(value)
            elif field == "event_types":
                out[field] = self._event_types(value)
            else:
                out[field] = self._checked(field, value)
        return out

    # ---- subscriptions -----------------------------------------------------------------------

    def create(
        self, mid: str, fields: Mapping[str, Any], *, once: tuple[str, str] | None = None
    ) -> Subscription:
        """Create a subscription (with its new `secret`).

        `once`: (Idempotency-Key, fingerprint of the request). The first request with the key
        creates the subscription and records its id with the key, in the same transaction; a
        retry of the same request answers that subscription as it is now, with its secret
        (the record keeps the id, never the secret); the key with another request, or after
        that subscription was deleted, is a conflict. A request that failed records nothing.
        """
        for required in ("url", "event_types"):
            if required not in fields:
                raise _bad(required, "is required")
        values = self._validated(fields)
        if once is not None:
            # A retry answers what the first request made before anything is looked up: the
            # URL's name may no longer resolve as it did (or not in time), and the client
            # retrying a create whose answer it lost must still get its subscription.
            with self._read() as uow:
                first = self._created_with(uow, mid, *once)
            if first is not None:
                return first
        self._reachable(values["url"])
        now = self._clock()
        sub = Subscription(
            id=self._ids.short(),
            mid=mid,
            url=values["url"],
            event_types=values["event_types"],
            description=values.get("description", ""),
            enabled=values.get("enabled", True),
            secret=self._ids.secret(),
            max_in_flight=values.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT),
            rate_limit_per_s=values.get("rate_limit_per_s"),
            created_at=now,
            updated_at=now,
            disabled_reason=None if values.get("enabled", True) else "disabled via the API",
        )
        try:
            with self._uow() as uow:
                self._tenant(uow, mid)
                if once is not None:
                    first = self._created_with(uow, mid, *once)
                    if first is not None:
                        return first
                self._room_for_one(uow, mid)
                uow.subscriptions.add(sub)
                if once is not None:
                    record = json.dumps({"subscription_id": sub.id})
                    uow.idempotency.put(mid, once[0], StoredResponse(once[1], 201, record), now)
                uow.commit()
        except ConflictError:
            # The same key in a request that ran beside this one (PostgreSQL runs both; the
            # key's insert waited for the other to commit): this one wrote nothing, and the
            # other's subscription is the answer, as it would have been a moment later.
            if once is None:
                raise
            with self._read() as uow:
                first = self._created_with(uow, mid, *once)
            if first is None:
                raise
            return first
        return sub

    @staticmethod
    def _created_with(uow: UnitOfWork, mid: str, key: str, fp: str) -> Subscription | None:
        stored = uow.idempotency.get(mid, key)
        if stored is None:
            return None
        same_request(stored, fp)
        sub = uow.subscriptions.get(mid, json.loads(stored.body)["subscription_id"])
        if sub is None:
            raise ConflictError(
                "the subscription this Idempotency-Key created has been deleted since"
            )
        return sub

    def _room_for_one(self, uow: UnitOfWork, mid: str) -> None:
        """Refuse (409) a subscription past the tenant's bound (`LEADHOOK_MAX_SUBSCRIPTIONS`)."""
        if self._max is None:
            return
        live = uow.subscriptions.count_for_adding(mid)
        if live >= self._max:
            # More than the bound when a process with a higher one made them (the CLI reads
            # its own environment): "the most it may have" would have been wrong then.
            bound = "the most it may have" if live == self._max else "more than it may have"
            raise ConflictError(
                f"this tenant has {live} subscriptions, {bound}"
                f" (LEADHOOK_MAX_SUBSCRIPTIONS={self._max}): delete one first, or send more"
                " event types to one endpoint (event_types)"
            )

    @staticmethod
    def _tenant(uow: UnitOfWork, mid: str) -> None:
        if uow.tenants.get(mid) is None:
            raise NotFoundError(f"tenant {mid!r} not found")

    @staticmethod
    def _sub(uow: UnitOfWork, mid: str, sub_id: str) -> Subscription:
        sub = uow.subscriptions.get(mid, sub_id)
        if sub is None:
            raise NotFoundError(f"subscription {sub_id!r} not found")
        return sub

    def _load(self, mid: str, sub_id: str) -> Subscription:
        with self._read() as uow:
            return self._sub(uow, mid, sub_id)

    def get(self, mid: str, sub_id: str) -> Subscription:
        """Return a subscription, or 404."""
        return self._load(mid, sub_id)

    def list(self, mid: str, cursor: str | None, limit: int) -> Page[Subscription]:
        """List the tenant's subscriptions, oldest first."""
        with self._read() as uow:
            return uow.subscriptions.page(mid, cursor, limit)

    def update(
        self, mid: str, sub_id: str, changes: Mapping[str, Any], *, via: str = "the API"
    ) -> Subscription:
        """Change the given fields; enabling clears the disabled reason and the failure streak.

        `via`: where a disable came from, for its `disabled_reason` ("disabled via the API",
        "… via the console", "… via the command line")."""
        values = self._validated(changes)
        if "url" in values:
            # A new URL's name is looked up (not the URL kept: an edit of the description
            # is not refused because the name has since moved; its sends are), with no
            # transaction open: a lookup may take seconds.
            with self._read() as uow:
                moving = self._sub(uow, mid, sub_id).url != values["url"]
            if moving:
                self._reachable(values["url"])
        now = self._clock()
        with self._uow() as uow:
            sub = self._sub(uow, mid, sub_id)
            new = replace(sub, **values)
            if new == sub:
                return sub  # nothing changes: not even updated_at (an idempotent PATCH)
            new = replace(new, updated_at=now)
            if new.enabled and not sub.enabled:
                new = replace(new, disabled_reason=None, first_failure_at=None)
            elif sub.enabled and not new.enabled:
                new = replace(new, disabled_reason=f"disabled via {via}")
            moved = new.url != sub.url
            if moved:
                # Another URL is another endpoint: the old one's silence (its open circuit,
                # its failure streak towards auto-disable) says nothing about the new one.
                new = replace(new, first_failure_at=None, circuit=CLOSED)
            was = None
            if moved:  # the deliveries' rows before the subscription's, as a worker's record
                was = uow.subscriptions.close_circuit(mid, sub_id, now)  # takes them (no deadlock)
            uow.subscriptions.update(new)
            uow.commit()
        _said_closed(sub_id, was, now, "a new url")
        if (new.enabled and not sub.enabled) or moved:
            self._on_enqueued()  # its pending deliveries may flow again
        if sub.enabled and not new.enabled:
            self._on_stopped()
        return new

    def delete(self, mid: str, sub_id: str) -> None:
        """Delete a subscription; its unfinished deliveries end as dead."""
        with self._uow() as uow:
            self._sub(uow, mid, sub_id)
            uow.subscriptions.delete(mid, sub_id, self._clock())
            uow.commit()
        self._on_stopped()

    def rotate_secret(self, mid: str, sub_id: str) -> Subscription:
        """Issue a new secret; the current one keeps signing beside it for ROTATION_OVERLAP."""
        now = self._clock()
        with self._uow() as uow:
            sub = self._sub(uow, mid, sub_id)
            new = replace(
                sub,
                secret=self._ids.secret(),
                previous_secret=sub.secret,
                previous_secret_expires_at=now + ROTATION_OVERLAP,
                updated_at=now,
            )
            uow.subscriptions.update(new)
            uow.commit()
        return new

    async def send_test(self, mid: str, sub_id: str) -> TestResult:
        """Send a signed `webhook_test` event now, once, and answer how the endpoint responded.

        The test event is not logged, not retried and not listed among the deliveries; it is
        sent even to a disabled subscription, so an endpoint can be checked before re-enabling.
        """
        sub = await asyncio.to_thread(self._load, mid, sub_id)
        now = self._clock()
        event_id = self._ids.event_id(now)
        event = {
            "event_type": TEST_EVENT_TYPE,
            "event_id": event_id,
            "mid": mid,
            "subscription_id": sub.id,
            "create_time": int(now),
            "data": {"message": "A test event from leadhook: answer 2xx to acknowledge."},
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = webhook_headers(sub.signing_secrets(now), event_id, int(now), body, USER_AGENT)
        sender = self._make_sender()
        try:
            result = await sender.send(sub.url, body, headers)
        finally:
            await sender.aclose()
        ok = isinstance(result, Delivered)
        attempt = Attempt(now, result.status_code, result.latency_ms, result.error, result.body)
        if result.status_code is not None:
            # The endpoint answered: as a probe's answer would, that closes its circuit (even
            # one that opened while the test was on its way; not the circuit of a URL the
            # subscription moved to meanwhile), and what waited is sent now, not at retry_at.
            await asyncio.to_thread(self._close_circuit, mid, sub_id, sub.url)
            self._on_enqueued()
        return TestResult(ok, event, attempt)

    def _close_circuit(self, mid: str, sub_id: str, url: str) -> None:
        now = self._clock()
        with self._uow() as uow:
            was = uow.subscriptions.close_circuit(mid, sub_id, now, url)
            uow.commit()
        _said_closed(sub_id, was, now, "a test event")

    # ---- deliveries --------------------------------------------------------------------------

    def deliveries(
        self, mid: str, sub_id: str, status: str | None, cursor: str | None, limit: int
    ) -> Page[Delivery]:
        """List a subscription's deliveries, newest first, with their attempts."""
        wrong = status_problem(status)
        if wrong is not None:
            raise ValidationError.at(("query", "status"), wrong)
        with self._read() as uow:
            self._sub(uow, mid, sub_id)
            return uow.deliveries.page(mid, sub_id, status, cursor, limit)

    def delivery(self, mid: str, delivery_id: str) -> Delivery:
        """Return one delivery with its attempts, or 404."""
        return read_delivery(self._read, mid, delivery_id)

    def retry(self, mid: str, delivery_id: str) -> Delivery:
        """Send a failed, dead or delivered delivery again now, with a fresh retry schedule."""
        with self._uow() as uow:
            found = uow.deliveries.get(mid, delivery_id)
            if found is None:
                raise NotFoundError(f"delivery {delivery_id!r} not found")
            if uow.subscriptions.get(mid, found.subscription_id) is None:
                raise ConflictError("the subscription of this delivery was deleted")
            if found.status == DeliveryStatus.PENDING:
                raise ConflictError("this delivery is already pending (queued or being sent)")
            retried = uow.deliveries.retry(mid, delivery_id, self._clock())
            if retried is None:
                raise ConflictError("this delivery is being sent right now; retry it afterwards")
            uow.commit()
        self._on_enqueued()
        return retried

    def replay(self, mid: str, sub_id: str, since: Any, status: Any = None) -> int:
        """Queue again the subscription's finished deliveries created since `since` (with
        `status` "failed": send now those waiting for a retry); count them.

        `since` is unix seconds, or an RFC 3339 date-time with its time zone. Only the event
        types the subscription receives now are sent again: a subscriber that narrowed its
        `event_types` does not get back what it asked to stop receiving.
        """
        since = _instant("since", since)
        if status is not None and status not in REPLAY_STATUSES:
            raise _bad(
                "status",
                f"must be {', '.join(REPLAY_STATUSES)}, or omitted ({' and '.join(REPLAYABLE)})",
            )
        with self._read() as uow:
            types = _types_of(self._sub(uow, mid, sub_id))
        # In batches of REPLAY_BATCH, each its own transaction: a replay of hundreds of
        # thousands held SQLite's write lock for its whole update (17 s: every tenant's
        # behaviours waited), as retention's purge would without its batches.
        count = 0
        for one in (status,) if status else REPLAYABLE:
            after: int | None = None
            while True:
                with self._uow() as uow:
                    self._sub(uow, mid, sub_id)  # deleted meanwhile: 404, its rows dead
                    done, after = uow.deliveries.replay(
                        mid, sub_id, since, one, self._clock(), types,
                        after_seq=after, limit=REPLAY_BATCH,
                    )  # fmt: skip
                    uow.commit()
                count += done
                if done:
                    self._on_enqueued()  # the first batches go out while the rest are queued
                if after is None:
                    break
        return count

    def _resumed(self, window: tuple[Any, ...]) -> int | None:
        """Where an earlier call of `window` that said `more` stopped (forgotten once read:
        the call that reads it leaves its own)."""
        with self._resume_lock:
            return self._resume.pop(window, None)

    def replay_missing(
        self, mid: str, sub_id: str, since: Any, until: Any = None
    ) -> tuple[int, bool]:
        """Queue the tenant's logged events created since `since` (and before `until`) that
        the subscription has no delivery of: those of the disabled period, or from before
        it existed (a backfill). At most REPLAY_MISSING_LIMIT a call, oldest first; answer
        how many, and whether more are missing (the same call again queues the next ones).

        Only the event types the subscription receives now; they are sent with their own
        `webhook-id` (the event's id), in order per lead.
        """
        start = _instant("since", since)
        end = None if until is None else _instant("until", until)
        if end is not None and end <= start:
            raise _bad("until", "must be later than since")
        # Found in a read (a walk of the window, seconds on a log of millions, holds no
        # write lock: on SQLite every tenant's writes would wait behind it), then queued in
        # a write that finds them again.
        with self._read() as uow:
            sub = self._sub(uow, mid, sub_id)
            types = _types_of(sub)
            window = (mid, sub_id, start, end, types)
            seqs, more = uow.deliveries.missing_events(
                mid,
                sub_id,
                start,
                end,
                types,
                REPLAY_MISSING_LIMIT,
                sub.created_at,
                resume_after=self._resumed(window),
            )
        if not seqs:
            return 0, more
        with self._uow() as uow:
            count = uow.deliveries.queue_missing(mid, sub_id, seqs, self._clock())
            uow.commit()
        if more:  # the same call again starts about where this one stopped
            with self._resume_lock:
                while len(self._resume) >= RESUME_MEMOS:
                    del self._resume[next(iter(self._resume))]  # the oldest
                self._resume[window] = seqs[-1]
        if count:
            self._on_enqueued()
        return count, more
