"""What the web console reads: searches, summaries and views the JSON API does not offer.

Every read is for one tenant and goes through the read-only unit of work or the `ConsoleQueries`
port (read-only queries of the console's own). Changes made from the console go through the
other services (subscriptions: create, edit, rotate, test, retry, replay), never through here.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from leadhook.domain.attempts import TURNED_AWAY
from leadhook.domain.catalog import EMPTY_TEXT, Catalog, NamedMatches
from leadhook.domain.errors import NotFoundError, UnauthorizedError, ValidationError
from leadhook.domain.lead import ATTRIBUTE_FIELDS, Lead
from leadhook.services.deliveries import event_type_problem, status_problem
from leadhook.services.ports import (
    USER_AGENT,
    Attempt,
    Clock,
    Delivery,
    Page,
    StoredEvent,
    Subscription,
    UnitOfWorkFactory,
)
from leadhook.services.tenants import AUTH_CACHE_SECONDS, hash_key

TIMELINE_LIMIT = 200  # a lead page shows its newest events; the log has the rest
HEALTH_WINDOW = 3600.0
"""Seconds of attempts that a subscription's health and chart summarise."""
HEALTH_SAMPLE_LIMIT = 20_000
"""At most this many of the newest attempts of the window are read (per tenant)."""
CHART_BUCKET = 60.0
"""Seconds per point of the deliveries/s and failure-rate chart."""
LIVE_BATCH = 100


# ---- the port ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryQuery:
    """Filters of the console's delivery listing (every one optional)."""

    subscription_id: str | None = None
    status: str | None = None
    event_type: str | None = None
    entity_id: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class AttemptSample:
    """One attempt, reduced to what health and charts need."""

    subscription_id: str
    attempted_at: float
    status_code: int | None
    latency_ms: float
    error: str | None

    @property
    def ok(self) -> bool:
        """Tell whether the endpoint acknowledged (2xx)."""
        return self.status_code is not None and 200 <= self.status_code <= 299


class ConsoleQueries(Protocol):
    """Read-only queries of the console; adapters/db/console.py implements them."""

    def search_leads(
        self, mid: str, text: str, named: NamedMatches, offset: int, limit: int
    ) -> list[Lead]: ...
    def events(
        self,
        mid: str,
        *,
        event_type: str | None,
        entity_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[StoredEvent]: ...
    def latest_event_id(self, mid: str) -> str | None: ...
    def deliveries(
        self, mid: str, query: DeliveryQuery, before_seq: int | None, limit: int
    ) -> list[tuple[int, Delivery]]: ...
    def attempts_since(self, mid: str, since: float, limit: int) -> list[AttemptSample]: ...
    def deleted_subscriptions(self, mid: str, ids: Collection[str]) -> dict[str, str]:
        """The deleted subscriptions among `ids`, each with what names it (its description,
        else its URL)."""
        ...


# ---- what the pages show --------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is signed in: the tenant and the key it signed in with."""

    mid: str
    key_id: str


@dataclass(frozen=True)
class LeadRow:
    """One line of the lead list, in display text."""

    id: str
    name: str
    mobile: str
    owner: str
    status: str
    stage: str
    pool: str
    version: int
    voided: bool


@dataclass(frozen=True)
class Change:
    """One field an event changed: its label and display text before and after."""

    code: str
    label: str
    before: str
    after: str


@dataclass(frozen=True)
class TimelineEntry:
    """One event of a lead's timeline, in display text."""

    event_id: str
    event_type: str
    action_keyword: str
    version: int
    time: str
    operator_type: int
    operator_id: int
    operator_name: str
    origin: str
    follow_up: bool
    notes: str
    changes: tuple[Change, ...]
    extra: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Health:
    """A subscription's last hour of attempts."""

    attempts: int = 0
    successes: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    window: float = HEALTH_WINDOW

    @property
    def success_rate(self) -> float | None:
        """Share of attempts answered 2xx (None without attempts)."""
        return None if not self.attempts else self.successes / self.attempts

    @property
    def per_second(self) -> float:
        """Delivery attempts per second over the window."""
        return self.attempts / self.window


@dataclass(frozen=True)
class ChartSeries:
    """Points of one subscription's chart: bucket starts, attempts/s, failure rate (%)."""

    subscription_id: str
    label: str
    times: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    failure_pct: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class AttemptView:
    """One attempt as the delivery page shows it: what was sent and what came back."""

    number: int
    attempt: Attempt
    request_headers: tuple[tuple[str, str], ...]


# ---- pure helpers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-quantile (0..1) of `values` by the nearest-rank method, None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def health_of(samples: Iterable[AttemptSample], window: float = HEALTH_WINDOW) -> Health:
    """Summarise one subscription's attempts (any order)."""
    items = list(samples)
    if not items:
        return Health(window=window)
    failed = [s for s in items if not s.ok]
    # The last error the endpoint gave: an attempt the open circuit turned away says only
    # that the circuit is open, and hid the cause (a refused connection) behind it.
    told = [s for s in failed if s.error != TURNED_AWAY] or failed
    last = max(told, key=lambda s: s.attempted_at) if told else None
    # The time to an answer or to a failure: an attempt the open circuit turned away never
    # went out, and its 0 ms would pull the endpoint's figures down to nothing.
    latencies = [s.latency_ms for s in items if s.error != TURNED_AWAY]
    return Health(
        attempts=len(items),
        successes=len(items) - len(failed),
        last_error=None if last is None else attempt_error(last.status_code, last.error),
        last_error_at=None if last is None else last.attempted_at,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        window=window,
    )


def attempt_error(status_code: int | None, error: str | None) -> str:
    """Describe a failed attempt: its transport error, else its HTTP status."""
    if error:
        return error
    return f"HTTP {status_code}" if status_code is not None else "no answer"


def chart_series(
    sub: Subscription,
    samples: Iterable[AttemptSample],
    now: float,
    window: float = HEALTH_WINDOW,
    bucket: float = CHART_BUCKET,
) -> ChartSeries:
    """Bucket one subscription's attempts: attempts/s and failure rate per `bucket` seconds."""
    count = int(window // bucket)
    end = math.floor(now / bucket) * bucket + bucket
    start = end - count * bucket
    totals = [0] * count
    failures = [0] * count
    for s in samples:
        i = int((s.attempted_at - start) // bucket)
        if 0 <= i < count:
            totals[i] += 1
            failures[i] += 0 if s.ok else 1
    return ChartSeries(
        subscription_id=sub.id,
        label=sub.description or sub.url,
        times=[start + i * bucket for i in range(count)],
        rate=[round(n / bucket, 3) for n in totals],
        failure_pct=[
            round(100 * f / n, 1) if n else None for f, n in zip(failures, totals, strict=True)
        ],
    )


def request_headers(d: Delivery, a: Attempt, body: bytes) -> tuple[tuple[str, str], ...]:
    """Rebuild the headers an attempt was sent with; all but the signature are deterministic.

    The dispatcher signs each attempt with the secrets active at that instant and keeps no
    copy of the signature, so the console shows where it was and says that it is not stored.
    Empty for an attempt the open circuit turned away: no request went out.
    """
    if a.error == TURNED_AWAY:
        return ()
    return (
        ("webhook-id", d.event_id),
        ("webhook-timestamp", str(int(a.attempted_at))),
        ("webhook-signature", "(not stored)"),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("user-agent", USER_AGENT),
    )


def local_time(catalog: Catalog, at: float) -> str:
    """Format unix seconds in the tenant's timezone, as the events do."""
    try:
        zone = ZoneInfo(catalog.timezone)
    except Exception:  # an unknown zone never reaches the catalog; stay readable regardless
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(at, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _text(value: Any) -> str:
    return EMPTY_TEXT if value is None or value == "" else str(value)


def lead_row(catalog: Catalog, lead: Lead) -> LeadRow:
    """Describe a lead for the list, its references named by the catalog."""
    stage = catalog.life_stages.get(lead.life_status)
    return LeadRow(
        id=lead.id,
        name=_text(lead.value("name")),
        mobile=_text(lead.value("mobile")),
        owner=_text(catalog.member_name(lead.owner)),
        status=catalog.display("leads_status", lead.leads_status),
        stage=stage.name if stage is not None else _text(lead.life_status),
        pool=catalog.display("lead_pool", lead.lead_pool),
        version=lead.version,
        voided=lead.voided,
    )


def lead_fields(catalog: Catalog, lead: Lead) -> list[tuple[str, str, str]]:
    """Return (code, label, display text) of every field the lead has a value for."""
    codes = {*ATTRIBUTE_FIELDS, *lead.fields, *lead.source}
    out = []
    for code in sorted(codes, key=catalog.field_order):
        value = lead.value(code)
        if value is None or value == "":
            continue
        fdef = catalog.field_def(code)
        label = fdef.label if fdef is not None else code
        out.append((code, label, catalog.display(code, value)))
    return out


def _label(catalog: Catalog, code: str) -> str:
    fdef = catalog.field_def(code)
    return fdef.label if fdef is not None else code


def timeline_entry(catalog: Catalog, payload: str) -> TimelineEntry:
    """Describe one stored event for a person: what changed, by whom, from where."""
    event: dict[str, Any] = json.loads(payload)
    extra: dict[str, Any] = event["extra_data"]
    texts = extra.get("mapping_data_text") or {}
    changes: list[Change] = []
    for code in sorted(texts, key=catalog.field_order):
        pair = texts[code]
        if isinstance(pair, list) and len(pair) == 2:
            before, after = str(pair[0]), str(pair[1])
        else:  # object_create: the initial value's text alone
            before, after = EMPTY_TEXT, str(pair)
        changes.append(Change(code, _label(catalog, code), before, after))
    timeline = extra.get("timeline_data") or {}
    origin = " · ".join(
        str(v)
        for v in (
            timeline.get("login_platform"),
            timeline.get("login_environment"),
            timeline.get("login_source_name") or timeline.get("login_source_type"),
        )
        if v
    )
    details: list[tuple[str, str]] = []
    if "members" in extra:
        names = ", ".join(catalog.member_name(m) for m in extra["members"])
        details.append(("members", names))
    if "target_entity_id" in extra:
        kind = catalog.object_label(extra["target_object_name"])
        details.append(("relation", f"{kind} {extra['target_entity_id']}"))
    if "scene_type" in extra:
        details.append(("scene_type", str(extra["scene_type"])))
    return TimelineEntry(
        event_id=event["event_id"],
        event_type=event["event_type"],
        action_keyword=event["action_keyword"],
        version=event["entity_version"],
        time=local_time(catalog, event["create_time"]),
        operator_type=extra["operator_type"],
        operator_id=extra["operator_id"],
        operator_name=_operator_name(catalog, extra),
        origin=origin,
        follow_up=extra.get("is_follow_up") == 1,
        notes=extra.get("notes") or "",
        changes=tuple(changes),
        extra=tuple(details),
    )


def _operator_name(catalog: Catalog, extra: Mapping[str, Any]) -> str:
    """Name the operator when the catalog knows the person (by their omni user uuid)."""
    uuid = extra.get("omni_user_uuid")
    if uuid:
        for member in catalog.members.values():
            if member.omni_user_uuid == uuid:
                return member.name
    return ""


def pretty_json(payload: str) -> str:
    """Indent a stored event's JSON for reading, its text kept unescaped."""
    return json.dumps(json.loads(payload), ensure_ascii=False, indent=2)


def _seq_cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:  # "²" is a digit too
        raise ValidationError.at(("query", "before"), "must be a position from a previous page")
    return int(value)


# ---- the service ----------------------------------------------------------------------------


class ConsoleService:
    """Reads for the web console, every one scoped to the signed-in tenant."""

    def __init__(
        self,
        readonly_uow: UnitOfWorkFactory,
        queries: ConsoleQueries,
        clock: Clock,
    ) -> None:
        self._read = readonly_uow
        self._q = queries
        self._clock = clock
        # (mid, key id) → valid until: a revoked key ends its sessions within AUTH_CACHE_SECONDS.
        self._keys: dict[tuple[str, str], float] = {}

    # ---- sessions ----

    def sign_in(self, api_key: str) -> Principal:
        """Check a tenant API key; return who it is, or raise 401."""
        if not api_key:
            raise UnauthorizedError("enter an API key")
        with self._read() as uow:
            key = uow.tenants.key_by_hash(hash_key(api_key.strip()))
        if key is None or key.revoked_at is not None:
            raise UnauthorizedError("unknown or revoked API key")
        return Principal(key.mid, key.id)

    def still_valid(self, principal: Principal) -> bool:
        """Tell whether the key a session signed in with is still unrevoked."""
        now = self._clock()
        ident = (principal.mid, principal.key_id)
        until = self._keys.get(ident)
        if until is not None and until > now:
            return True
        with self._read() as uow:
            key = uow.tenants.get_key(principal.mid, principal.key_id)
        if key is None or key.revoked_at is not None:
            self._keys.pop(ident, None)
            return False
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[ident] = now + AUTH_CACHE_SECONDS
        return True

    def catalog(self, mid: str) -> Catalog:
        """Return the tenant's catalog (its display labels)."""
        with self._read() as uow:
            tenant = uow.tenants.get(mid)
        if tenant is None:
            raise NotFoundError(f"tenant {mid!r} not found")
        return tenant.catalog

    # ---- leads ----

    def leads(
        self, mid: str, text: str, page: int, per_page: int
    ) -> tuple[Catalog, list[LeadRow], bool]:
        """Search the tenant's leads (id, any text of the lead, or the name the list shows of
        its owner, pool, stage, status or an option); return a page, newest first."""
        page = max(page, 1)
        catalog = self.catalog(mid)
        text = text.strip()
        found = self._q.search_leads(
            mid, text, catalog.named(text), (page - 1) * per_page, per_page + 1
        )
        return catalog, [lead_row(catalog, x) for x in found[:per_page]], len(found) > per_page

    def lead(self, mid: str, lead_id: str) -> tuple[Catalog, Lead, list[TimelineEntry], bool]:
        """Return a lead and the newest TIMELINE_LIMIT entries of its timeline, newest first,
        and whether it has older ones (the event log pages through them); or 404. (The whole
        timeline of a lead with 4,000 events was a 2 MB page.)"""
        with self._read() as uow:
            tenant = uow.tenants.get(mid)
            lead = uow.leads.get(mid, lead_id)
            if tenant is None or lead is None:
                raise NotFoundError(f"lead {lead_id!r} not found")
            page = uow.events.timeline(
                mid, lead_id, is_follow_up=None, cursor=None, limit=TIMELINE_LIMIT
            )
        entries = [timeline_entry(tenant.catalog, e.payload) for e in page.data]
        return tenant.catalog, lead, entries, page.next_cursor is not None

    # ---- events ----

    def events(
        self,
        mid: str,
        event_type: str | None,
        entity_id: str | None,
        before: str | None,
        limit: int,
    ) -> tuple[list[StoredEvent], str | None]:
        """Page through the log newest first, filtered by type and lead."""
        wrong = event_type_problem(event_type or None)
        if wrong is not None:
            raise ValidationError.at(("query", "event_type"), wrong)
        found = self._q.events(
            mid,
            event_type=event_type or None,
            entity_id=entity_id or None,
            before_seq=_seq_cursor(before),
            limit=limit + 1,
        )
        nxt = str(found[limit - 1].seq) if len(found) > limit else None
        return found[:limit], nxt

    def latest_event_id(self, mid: str) -> str | None:
        """Return the id of the newest committed event, where a live view starts after."""
        return self._q.latest_event_id(mid)

    def events_after(self, mid: str, after: str | None) -> list[StoredEvent]:
        """Return events committed after `after` (an event id), oldest first, a batch at most."""
        with self._read() as uow:
            page = uow.events.page(
                mid, after=after, event_type=None, entity_id=None, limit=LIVE_BATCH
            )
        return page.data

    # ---- subscriptions ----

    def _samples(self, mid: str) -> tuple[float, dict[str, list[AttemptSample]]]:
        now = self._clock()
        by_sub: dict[str, list[AttemptSample]] = defaultdict(list)
        for s in self._q.attempts_since(mid, now - HEALTH_WINDOW, HEALTH_SAMPLE_LIMIT):
            by_sub[s.subscription_id].append(s)
        return now, by_sub

    def subscription_exists(self, mid: str, sub_id: str) -> bool:
        """Tell whether the tenant's subscription is still there (not deleted)."""
        return self.subscription_state(mid, sub_id) != "deleted"

    def subscription_state(self, mid: str, sub_id: str) -> str:
        """`enabled`, `disabled` (its deliveries wait for it) or `deleted`."""
        with self._read() as uow:
            sub = uow.subscriptions.get(mid, sub_id)
        if sub is None:
            return "deleted"
        return "enabled" if sub.enabled else "disabled"

    def deleted_names(self, mid: str, ids: Collection[str]) -> dict[str, str]:
        """What names each deleted subscription among `ids` (its description, else URL)."""
        return self._q.deleted_subscriptions(mid, ids) if ids else {}

    def subscription_list(self, mid: str) -> list[Subscription]:
        """Return every subscription of the tenant, oldest first."""
        subs: list[Subscription] = []
        cursor: str | None = None
        with self._read() as uow:
            while True:
                page: Page[Subscription] = uow.subscriptions.page(mid, cursor, 200)
                subs.extend(page.data)
                cursor = page.next_cursor
                if cursor is None:
                    return subs

    def subscriptions(
        self, mid: str
    ) -> tuple[list[tuple[Subscription, Health]], list[ChartSeries]]:
        """Return every subscription with its last hour's health, and the chart of each."""
        subs = self.subscription_list(mid)
        now, by_sub = self._samples(mid)
        healths = [(s, health_of(by_sub.get(s.id, ()))) for s in subs]
        return healths, [chart_series(s, by_sub.get(s.id, ()), now) for s in subs]

    def subscription(self, mid: str, sub_id: str) -> tuple[Subscription, Health, ChartSeries]:
        """Return one subscription, its health and its chart, or 404."""
        with self._read() as uow:
            sub = uow.subscriptions.get(mid, sub_id)
        if sub is None:
            raise NotFoundError(f"subscription {sub_id!r} not found")
        now, by_sub = self._samples(mid)
        samples = by_sub.get(sub.id, [])
        return sub, health_of(samples), chart_series(sub, samples, now)

    # ---- deliveries ----

    def deliveries(
        self, mid: str, query: DeliveryQuery, before: str | None, limit: int
    ) -> tuple[list[Delivery], str | None]:
        """List deliveries across subscriptions, newest first, filtered."""
        wrong = status_problem(query.status or None)
        if wrong is not None:
            raise ValidationError.at(("query", "status"), wrong)
        # The value named, as on the events page (the Chinese page read it half in English).
        wrong = event_type_problem(query.event_type or None)
        if wrong is not None:
            raise ValidationError.at(("query", "event_type"), wrong)
        rows = self._q.deliveries(mid, query, _seq_cursor(before), limit + 1)
        nxt = str(rows[limit - 1][0]) if len(rows) > limit else None
        return [d for _, d in rows[:limit]], nxt

    def delivery(self, mid: str, delivery_id: str) -> tuple[Delivery, str, list[AttemptView]]:
        """Return a delivery, the body it sends and each attempt with its headers, or 404."""
        with self._read() as uow:
            d = uow.deliveries.get(mid, delivery_id)
            event = None if d is None else uow.events.get(mid, d.event_id)
        if d is None or event is None:
            raise NotFoundError(f"delivery {delivery_id!r} not found")
        body = event.payload.encode()
        views = [
            AttemptView(i + 1, a, request_headers(d, a, body)) for i, a in enumerate(d.attempts)
        ]
        return d, event.payload, list(reversed(views))
