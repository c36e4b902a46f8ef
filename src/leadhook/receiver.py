"""Receive leadhook deliveries: verify the signature, parse the event, spot repeats and gaps.

This is what a subscriber imports. It needs only leadhook's domain (Pydantic and the standard
library); the FastAPI helper imports FastAPI when it is called. A typical handler::

    from leadhook.receiver import SignatureError, InvalidPayload, verify_and_parse

    try:
        event = verify_and_parse(body, headers, "whsec_...")
    except SignatureError:
        ...  # answer 401: not from leadhook, tampered with, or too old
    except InvalidPayload:
        ...  # answer 400: authentic but not a lead event this version understands
    except WebhookTestReceived:
        ...  # answer 2xx: the subscription's test button (`POST /v1/subscriptions/{id}/test`)
    except UnknownEventReceived:
        ...  # answer 2xx: an event type newer than this version (see the class)

Delivery is at least once: use `Deduplicator` on `event_id`. Events of one lead arrive in
`entity_version` order; `GapDetector` tells when a version never arrived (e.g. a delivery that
went dead), so that it can be fetched with `GET /v1/events?entity_id=...`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from leadhook.domain.events import (
    EVENT_TYPES,
    TEST_EVENT_TYPE,
    LeadEvent,
    ObjectAddNotes,
    ObjectAddTeamMember,
    ObjectChangeLeadPool,
    ObjectChangeOwner,
    ObjectCreate,
    ObjectRelation,
    ObjectRemoveTeamMember,
    ObjectRestore,
    ObjectSourceInfo,
    ObjectUpdate,
    ObjectUpdateLifeCycle,
    ObjectUpdateStatus,
    ObjectVoids,
    parse_event_tolerant,
)
from leadhook.domain.signing import (
    DEFAULT_TOLERANCE,
    BadSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    SignatureError,
    StaleTimestampError,
    subscriber_key,
    verify,
)

__all__ = [
    "EVENT_TYPES",
    "TEST_EVENT_TYPE",
    "BadSignatureError",
    "Deduplicator",
    "Gap",
    "GapDetector",
    "InvalidPayload",
    "LeadEvent",
    "MalformedHeaderError",
    "MissingHeaderError",
    "ObjectAddNotes",
    "ObjectAddTeamMember",
    "ObjectChangeLeadPool",
    "ObjectChangeOwner",
    "ObjectCreate",
    "ObjectRelation",
    "ObjectRemoveTeamMember",
    "ObjectRestore",
    "ObjectSourceInfo",
    "ObjectUpdate",
    "ObjectUpdateLifeCycle",
    "ObjectUpdateStatus",
    "ObjectVoids",
    "SignatureError",
    "StaleTimestampError",
    "UnknownEventReceived",
    "WebhookTestReceived",
    "asgi_headers",
    "fastapi_dependency",
    "parse",
    "response_status",
    "verify_and_parse",
    "verify_asgi",
    "verify_signature",
    "verify_wsgi_environ",
    "wsgi_headers",
]

Secrets = str | Sequence[str]
# What a newer contract's event type looks like (`object_create`, `webhook_test`, ...).
_EVENT_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class InvalidPayload(ValueError):
    """The body is authentic but is not a lead event of the contract (answer 400)."""


class WebhookTestReceived(Exception):
    """The body is leadhook's authentic test event, not a lead event (answer 2xx).

    `event` holds the decoded test event (`event_type` `webhook_test`, `event_id`, `mid`,
    `subscription_id`, `create_time`, `data`).
    """

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(f"test event {event.get('event_id', '')} from leadhook")
        self.event = event


class UnknownEventReceived(Exception):
    """The body is an authentic event of a type this version does not know (answer 2xx).

    A newer leadhook may send event types this version of the module has no model for.
    Refusing one (400) would not make it readable: leadhook would retry it for days, and the
    lead's later events, delivered in order, would wait behind it. Acknowledge it instead, as
    Stripe and Svix advise for types a receiver does not handle; the lead's next event then
    shows its version as a gap (`GapDetector`), and `GET /v1/events/{event_id}` still has it
    for a receiver upgraded to read it. `event` holds the decoded JSON (`event_type`,
    `event_id`, `extra_data`, ...).
    """

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(
            f"event {event.get('event_id', '')} of type {event.get('event_type')!r}, which this"
            " version of leadhook.receiver does not know: acknowledged, not handled"
        )
        self.event = event


def _secret_list(secret: Secrets) -> tuple[str, ...]:
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    for s in secrets:
        subscriber_key(s)  # a secret that is not whsec_<base64> is a configuration error
    return secrets


def _raw(body: bytes | str) -> bytes:
    """The bytes a body was received as. A framework that hands over text decoded them as
    UTF-8 (leadhook's bodies are UTF-8 JSON), and encoding it again gives the same bytes."""
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be the raw bytes received (or their text), not {type(body)!r}")


def verify_signature(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: Secrets,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> None:
    """Check that `body` was signed by leadhook with `secret`, recently; raise otherwise.

    Pass several secrets during a rotation: any one matching is enough. Raises a
    `SignatureError` subclass (`MissingHeaderError`, `MalformedHeaderError`,
    `StaleTimestampError`, `BadSignatureError`); raises `ValueError` for a secret that is not
    a `whsec_` secret.
    """
    secrets = _secret_list(secret)
    body = _raw(body)
    at = int(time.time()) if now is None else now
    for s in secrets[:-1]:
        try:
            verify(s, body, headers, at, tolerance)
        except BadSignatureError:
            continue
        return
    verify(secrets[-1], body, headers, at, tolerance)


def parse(body: bytes | str) -> LeadEvent:
    """Parse a delivery body into the typed model of its event type, without verifying it.

    Raises `InvalidPayload`, `WebhookTestReceived` for leadhook's test event, or
    `UnknownEventReceived` for an event of a type newer than this version.
    """
    try:
        return parse_event_tolerant(body)
    except ValidationError as exc:
        data = _event_object(body)
        if data is not None and data.get("event_type") == TEST_EVENT_TYPE:
            raise WebhookTestReceived(data) from None
        first: dict[str, Any] = (
            dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": str(exc)}
        )
        where = ".".join(str(p) for p in first.get("loc", ()))
        # The event's type picks its schema: say so in the contract's words, not pydantic's
        # ("Unable to extract tag using discriminator 'event_type'").
        kind = first.get("type")
        if kind == "union_tag_not_found":
            why = "it has no event_type"
        elif kind == "union_tag_invalid":
            event_type = None if data is None else data.get("event_type")
            if (
                data is not None
                and isinstance(event_type, str)
                and _EVENT_TYPE_NAME.fullmatch(event_type)
            ):
                raise UnknownEventReceived(data) from None
            tag = (first.get("ctx") or {}).get("tag")
            if tag == TEST_EVENT_TYPE:  # with an event_id it was a test event (above)
                why = "a webhook_test event with no event_id (a non-empty string on every event)"
            else:
                why = f"event_type {tag!r} is not one of the contract's event types"
        else:
            why = f"{where + ': ' if where else ''}{first.get('msg', '')}"
        raise InvalidPayload(f"not a lead event: {why}") from exc
    except (ValueError, RecursionError) as exc:
        # The JSON reader's own refusals (an integer past `sys.set_int_max_str_digits`, where
        # an application lowered it) are no event either: 400, never 500.
        raise InvalidPayload(f"not a lead event: {exc}") from exc


def _event_object(body: bytes | str) -> dict[str, Any] | None:
    """The body decoded, when it is a JSON object with a non-empty `event_id`, as every event
    of leadhook's carries (its webhook-id), the test event included; else None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # a body nested 100,000 deep is no event either
        return None
    if isinstance(data, dict):
        event_id = data.get("event_id")
        if isinstance(event_id, str) and event_id:
            return data
    return None


def verify_and_parse(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: Secrets,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> LeadEvent:
    """Verify a delivery and return its event as the model of its type (e.g. `ObjectCreate`).

    `body` must be the raw bytes as received, before any JSON decoding (or their text, as a
    framework that decoded them as UTF-8 hands it over). Header names match
    case-insensitively. Raises `SignatureError` (answer 401), `InvalidPayload` (400) or, for
    leadhook's test event, `WebhookTestReceived` (2xx), and for an event of a type newer than
    this version, `UnknownEventReceived` (2xx); see `response_status`.
    """
    body = _raw(body)
    verify_signature(body, headers, secret, tolerance=tolerance, now=now)
    webhook_id = {k.lower(): v for k, v in headers.items()}.get("webhook-id", "").strip()
    try:
        event = parse(body)
    except (WebhookTestReceived, UnknownEventReceived) as received:
        # These are held to the same rule as every event: the webhook-id is the event's id.
        _same_id(webhook_id, str(received.event["event_id"]))
        raise
    _same_id(webhook_id, event.event_id)
    return event


def _same_id(webhook_id: str, event_id: str) -> None:
    if webhook_id != event_id:
        raise InvalidPayload(f"webhook-id {webhook_id!r} is not the event_id {event_id!r}")


def response_status(exc: Exception) -> int:
    """Return the HTTP status to answer when `verify_and_parse` raised `exc`.

    401 for a `SignatureError`, 400 for `InvalidPayload`, 204 for `WebhookTestReceived` and
    `UnknownEventReceived`, 500 for anything else.
    """
    if isinstance(exc, SignatureError):
        return 401
    if isinstance(exc, InvalidPayload):
        return 400
    if isinstance(exc, WebhookTestReceived | UnknownEventReceived):
        return 204
    return 500


# ---- frameworks ---------------------------------------------------------------------------


def wsgi_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Return the request headers of a WSGI environ, lower-case and dash-separated."""
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def verify_wsgi_environ(
    environ: Mapping[str, Any],
    body: bytes,
    secret: Secrets,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> LeadEvent:
    """Verify a delivery received by a WSGI app (Flask, Django, ...) and return its event.

    With Flask: `verify_wsgi_environ(request.environ, request.get_data(), secret)`.
    """
    return verify_and_parse(body, wsgi_headers(environ), secret, tolerance=tolerance, now=now)


def asgi_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Return the request headers of an ASGI HTTP scope as a lower-case dict."""
    raw: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def verify_asgi(
    scope: Mapping[str, Any],
    body: bytes,
    secret: Secrets,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> LeadEvent:
    """Verify a delivery received by an ASGI app (Starlette, Litestar, ...) and return its event.

    `body` is the whole request body, read from the `http.request` messages.
    """
    return verify_and_parse(body, asgi_headers(scope), secret, tolerance=tolerance, now=now)


def fastapi_dependency(
    secret: Secrets, *, tolerance: int = DEFAULT_TOLERANCE
) -> Callable[..., Awaitable[LeadEvent]]:
    """Return a FastAPI dependency that yields the verified event of the request.

    It reads the raw body and answers 401 (bad signature), 400 (not a lead event) or 204 (the
    test event, or an event of a type newer than this version) by raising `HTTPException`, so
    the endpoint only ever sees lead events it has a model for. Use it
    as `event: Annotated[LeadEvent, Depends(fastapi_dependency(secret))]`.
    """
    from fastapi import HTTPException, Request

    secrets = _secret_list(secret)

    async def verified_event(request: Request) -> LeadEvent:
        body = await request.body()
        try:
            return verify_and_parse(body, request.headers, secrets, tolerance=tolerance)
        except (SignatureError, InvalidPayload, WebhookTestReceived, UnknownEventReceived) as exc:
            raise HTTPException(response_status(exc), str(exc)) from exc

    # FastAPI reads the annotations; postponed ones could not name the lazily imported Request.
    verified_event.__annotations__ = {"request": Request, "return": LeadEvent}
    return verified_event


# ---- at-least-once helpers ----------------------------------------------------------------


class Deduplicator:
    """Remember the most recent `capacity` event ids to drop redeliveries (thread-safe).

    Mark an event only once it has been handled: a delivery that failed half-way must be
    processed again when leadhook retries it.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, event: LeadEvent | str) -> bool:
        """Tell whether this event (or event id) was marked before."""
        key = event if isinstance(event, str) else event.event_id
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            return False

    def mark(self, event: LeadEvent | str) -> None:
        """Record the event as handled, forgetting the least recent one beyond capacity."""
        with self._lock:
            self._remember(event if isinstance(event, str) else event.event_id)

    def is_duplicate(self, event: LeadEvent | str) -> bool:
        """Tell whether the event was seen before, and mark it as seen from now on."""
        key = event if isinstance(event, str) else event.event_id
        with self._lock:
            duplicate = key in self._seen
            self._remember(key)
            return duplicate

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def __contains__(self, event_id: object) -> bool:
        with self._lock:
            return event_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class Gap:
    """Versions `first`..`last` (inclusive) of a lead that have not arrived."""

    entity_id: str
    first: int
    last: int

    @property
    def versions(self) -> range:
        """Return the missing versions."""
        return range(self.first, self.last + 1)


@dataclass
class _Lead:
    highest: int
    missing: list[tuple[int, int]]  # sorted, disjoint, inclusive ranges


class GapDetector:
    """Track each lead's `entity_version` and report versions that never arrived (thread-safe).

    A version older than the highest seen fills its gap if it was missing and is otherwise a
    duplicate; both are fine. By default the first event seen of a lead starts its history;
    with `start_at_one` (subscribed before the leads existed) versions before it are missing
    too.

    It is in memory and bounded: at most `max_leads` leads are tracked. Beyond that the least
    recently seen lead with nothing missing is forgotten first (among the oldest
    `_EVICTION_SCAN`; if all of those have gaps outstanding, the oldest, gaps and all).
    `forgotten` counts them. A forgotten lead seen again starts anew: by default at the
    version then seen (a gap across the forgetting goes unreported), with `start_at_one` from
    version 1 (versions that did arrive are reported again: fetch and de-duplicate them). Size
    `max_leads` to the leads that change in a subscriber's window, or keep each lead's last
    version in the subscriber's own database.
    """

    _EVICTION_SCAN = 64

    def __init__(self, *, start_at_one: bool = False, max_leads: int = 100_000) -> None:
        if max_leads < 1:
            raise ValueError("max_leads must be at least 1")
        self.start_at_one = start_at_one
        self.max_leads = max_leads
        self.forgotten = 0
        self._leads: OrderedDict[str, _Lead] = OrderedDict()
        self._lock = threading.Lock()

    def _forget_one(self, keep: str) -> None:
        # The least recently seen lead with nothing outstanding, else the least recent; never
        # `keep`, the lead being recorded (the most recent).
        victim = next(iter(self._leads))
        for scanned, (entity_id, lead) in enumerate(self._leads.items()):
            if scanned >= self._EVICTION_SCAN or entity_id == keep:
                break
            if not lead.missing:
                victim = entity_id
                break
        del self._leads[victim]
        self.forgotten += 1

    def observe(self, event: LeadEvent) -> Gap | None:
        """Record the event; return the versions it shows to be missing, if any are new."""
        return self.observe_version(event.extra_data.entity_id, event.entity_version)

    def observe_version(self, entity_id: str, version: int) -> Gap | None:
        """Record that `version` of lead `entity_id` arrived; see `observe`."""
        if version < 1:
            raise ValueError(f"entity_version must be >= 1, got {version}")
        with self._lock:
            lead = self._leads.get(entity_id)
            if lead is None:
                lead = _Lead(highest=0 if self.start_at_one else version - 1, missing=[])
                self._leads[entity_id] = lead
                while len(self._leads) > self.max_leads:
                    self._forget_one(keep=entity_id)
            self._leads.move_to_end(entity_id)
            if version <= lead.highest:
                lead.missing = _fill(lead.missing, version)
                return None
            gap = None
            if version > lead.highest + 1:
                gap = Gap(entity_id, lead.highest + 1, version - 1)
                lead.missing.append((gap.first, gap.last))
            lead.highest = version
            return gap

    def missing(self, entity_id: str) -> list[int]:
        """Return the versions of a lead still missing, oldest first."""
        with self._lock:
            lead = self._leads.get(entity_id)
            ranges = list(lead.missing) if lead else []
        return [v for lo, hi in ranges for v in range(lo, hi + 1)]

    def gaps(self) -> list[Gap]:
        """Return every outstanding gap of every tracked lead."""
        with self._lock:
            return [
                Gap(entity_id, lo, hi)
                for entity_id, lead in self._leads.items()
                for lo, hi in lead.missing
            ]

    def last_version(self, entity_id: str) -> int | None:
        """Return the highest version seen of a lead, or None if it is not tracked."""
        with self._lock:
            lead = self._leads.get(entity_id)
            return lead.highest if lead else None


def _fill(ranges: list[tuple[int, int]], version: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if lo <= version <= hi:
            out.extend(r for r in ((lo, version - 1), (version + 1, hi)) if r[0] <= r[1])
        else:
            out.append((lo, hi))
    return out
