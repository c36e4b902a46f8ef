"""Lead use cases: every behaviour in one transaction with its events and their deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from leadhook.domain import behaviours as b
from leadhook.domain.errors import (
    FieldProblem,
    NotFoundError,
    ValidationError,
    VersionMismatchError,
)
from leadhook.domain.events import LeadEvent, event_json
from leadhook.domain.jsontext import dumps as dumps  # re-exported: the API encodes with it
from leadhook.domain.lead import Lead
from leadhook.domain.operator import Operator
from leadhook.services import collector
from leadhook.services.allocation import Allocation
from leadhook.services.idempotency import Idempotent
from leadhook.services.ports import (
    Clock,
    IdFactory,
    InlineTransactor,
    LeadFilter,
    NewEvent,
    Transactor,
    UnitOfWork,
    UnitOfWorkFactory,
)

Answer = tuple[int, str]
"""A behaviour's HTTP status and its JSON body text."""

Behaviour = Callable[[b.Context, Lead, Mapping[str, Any]], b.Effect]

BEHAVIOURS: dict[str, Behaviour] = {
    "update": lambda ctx, lead, a: b.update_fields(ctx, lead, a["fields"]),
    "status": lambda ctx, lead, a: b.change_status(ctx, lead, a["leads_status"]),
    "owner": lambda ctx, lead, a: b.change_owner(
        ctx, lead, a["owner"], a["scene_type"], notes=a.get("notes"), lead_pool=a.get("lead_pool")
    ),
    "life_cycle": lambda ctx, lead, a: b.change_life_cycle(ctx, lead, a["life_status"]),
    "lead_pool": lambda ctx, lead, a: b.change_lead_pool(ctx, lead, a["lead_pool"]),
    "notes": lambda ctx, lead, a: b.add_note(ctx, lead, a["notes"], a.get("is_follow_up", False)),
    "add_team_members": lambda ctx, lead, a: b.add_team_members(ctx, lead, a["members"]),
    "remove_team_member": lambda ctx, lead, a: b.remove_team_member(ctx, lead, a["member_id"]),
    "void": lambda ctx, lead, a: b.void(ctx, lead, a.get("reason")),
    "restore": lambda ctx, lead, a: b.restore(ctx, lead),
    "relation": lambda ctx, lead, a: b.relate(
        ctx, lead, a["target_object_name"], a["target_entity_id"], a.get("target_object_id")
    ),
    "source": lambda ctx, lead, a: b.change_source(ctx, lead, a["fields"]),
}


def _waited(submit: Callable[[], Future[Answer]]) -> Answer:
    """What a behaviour's future holds, waited for: for a thread with no event loop of its own
    (the command line, scripts, a route's thread of the pool).

    The writer commits what an event loop submits when that loop comes round again (SQLite's
    writes on the loop itself, PostgreSQL's gathered there first), so a loop waiting here
    would wait for ever: refused before anything is submitted, with what to call instead (a
    review)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return submit().result()
    raise RuntimeError("a behaviour waited for on an event loop: await its submit_* future")


def new_events(events: Sequence[LeadEvent]) -> list[NewEvent]:
    """Serialise domain events once: this text is what the log keeps and subscribers get."""
    return [
        NewEvent(
            event_id=e.event_id,
            mid=e.mid,
            entity_id=e.extra_data.entity_id,
            entity_version=e.entity_version,
            event_type=e.event_type,
            create_time=e.create_time,
            is_follow_up=e.extra_data.is_follow_up,
            payload=event_json(e),
        )
        for e in events
    ]


def behaviour_body(lead: Lead, payloads: Sequence[str]) -> str:
    """Return `{"lead": ..., "events": [...]}` with each event's stored JSON embedded as is."""
    return '{"lead":' + lead.api_text() + ',"events":[' + ",".join(payloads) + "]}"


@dataclass(frozen=True)
class Changes:
    """What a behaviour over several leads did: each changed lead (before, after), all events
    in emission order, and the lead the answer shows (None: only the events)."""

    leads: Sequence[tuple[Lead, Lead]]
    events: Sequence[LeadEvent]
    answer: Lead | None


@dataclass
class _Tally:
    """What one unit of work enqueued (read after its commit)."""

    deliveries: int = 0


@dataclass(frozen=True)
class BehaviourRequest:
    """What the API hands over for one behaviour call."""

    mid: str
    operator: Operator
    # The versions `If-Match` lists (RFC 9110: any one of them matches); None checks none.
    if_match: int | frozenset[int] | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""

    def check_version(self, lead_id: str, version: int) -> None:
        """Refuse (412) a lead at a version `If-Match` does not list."""
        check_listed_version(self.if_match, lead_id, version)


def check_listed_version(wanted: int | frozenset[int] | None, lead_id: str, version: int) -> None:
    """Refuse (412) lead `lead_id` at `version` if `wanted` (what `If-Match` lists; None: no
    check) does not list it: a behaviour's check, and a read's (`GET /v1/leads/{id}`)."""
    if wanted is None:
        return
    listed = frozenset((wanted,)) if isinstance(wanted, int) else wanted
    if version not in listed:
        named = ", ".join(str(v) for v in sorted(listed))
        either = named if len(listed) == 1 else f"any of {named}"
        raise VersionMismatchError(f"lead {lead_id} is at version {version}, not {either}")


class LeadService:
    """Perform behaviours on leads; write lead, events and deliveries in one transaction."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdFactory,
        on_enqueued: Callable[[], None] = lambda: None,
        readonly_uow: UnitOfWorkFactory | None = None,
        transactor: Transactor | None = None,
    ) -> None:
        self._tx = transactor or InlineTransactor(uow)
        self._read = readonly_uow or uow
        self._clock = clock
        self._ids = ids
        self._on_enqueued = on_enqueued
        self._idem = Idempotent(clock)

    # Each behaviour comes in two forms: `submit_*` answers a future at once (the API awaits
    # it without tying up a thread), the plain one waits for it (the CLI, scripts, tests).

    def create(self, req: BehaviourRequest, args: Mapping[str, Any]) -> Answer:
        """Create a lead (201) and emit object_create."""
        return _waited(lambda: self.submit_create(req, args))

    def create_many(self, req: BehaviourRequest, items: Sequence[Mapping[str, Any]]) -> Answer:
        """Create many leads in one transaction; each emits its own object_create (201)."""
        return _waited(lambda: self.submit_create_many(req, items))

    def perform(
        self, req: BehaviourRequest, behaviour: str, lead_id: str, args: Mapping[str, Any]
    ) -> Answer:
        """Perform `behaviour` on a lead (200), emitting what it caused."""
        return _waited(lambda: self.submit_perform(req, behaviour, lead_id, args))

    def submit_create(self, req: BehaviourRequest, args: Mapping[str, Any]) -> Future[Answer]:
        """Create a lead (201) and emit object_create."""
        return self._run(req, None, lambda ctx, _lead: self._create(ctx, args), 201)

    def submit_create_many(
        self, req: BehaviourRequest, items: Sequence[Mapping[str, Any]]
    ) -> Future[Answer]:
        """Create many leads in one transaction; each emits its own object_create (201)."""

        def work(uow: UnitOfWork, tally: _Tally) -> Answer:
            # Up to 1,000 leads with their events stay alive until the answer is built:
            # collections in between walk them all again and find nothing (collector.py).
            with collector.paused():
                return build(uow, tally)

        def build(uow: UnitOfWork, tally: _Tally) -> Answer:
            ctx = self._context(uow, req)
            allocate = Allocation(uow, ctx)  # pool automation: scene 1 for unowned leads
            outcomes: list[b.Effect] = []
            for i, item in enumerate(items):
                try:
                    outcomes.append(allocate(None, self._create(ctx, item)))
                except ValidationError as exc:
                    # Locate each problem in the batch: ("body", "fields", …) of the lead
                    # becomes ("body", "leads", i, "fields", …).
                    problems = [
                        FieldProblem(("body", "leads", i, *p.loc[1:]), p.msg) for p in exc.errors
                    ] or [FieldProblem(("body", "leads", i), exc.detail)]
                    first = problems[0]
                    raise ValidationError(
                        f"{'.'.join(str(x) for x in first.loc)}: {first.msg}", problems
                    ) from exc
            uow.leads.add_many([o.lead for o in outcomes])
            events = [e for o in outcomes for e in o.events]
            payloads = iter(self._record(uow, events, tally))
            # A lead allocated on arrival has two events (object_create, object_change_owner).
            body = (
                '{"data":['
                + ",".join(
                    behaviour_body(o.lead, [next(payloads) for _ in o.events]) for o in outcomes
                )
                + "]}"
            )
            return 201, body

        return self._commit(req, work)

    def submit_perform(
        self, req: BehaviourRequest, behaviour: str, lead_id: str, args: Mapping[str, Any]
    ) -> Future[Answer]:
        """Perform `behaviour` on a lead (200), emitting what it caused."""
        fn = BEHAVIOURS[behaviour]
        return self._run(req, lead_id, lambda ctx, lead: fn(ctx, lead, args), 200)

    def _create(self, ctx: b.Context, args: Mapping[str, Any]) -> b.Effect:
        return b.create_lead(
            ctx,
            self._ids.short(),
            args.get("fields") or {},
            business_type=args.get("business_type"),
            owner=args.get("owner"),
            lead_pool=args.get("lead_pool"),
            lead_omni_user_uuid=args.get("lead_omni_user_uuid"),
        )

    def _context(self, uow: UnitOfWork, req: BehaviourRequest) -> b.Context:
        tenant = uow.tenants.get(req.mid)
        if tenant is None:
            raise NotFoundError(f"tenant {req.mid!r} does not exist")
        now = self._clock()
        return b.Context(
            catalog=tenant.catalog,
            now=int(now),
            next_event_id=lambda: self._ids.event_id(now),
            operator=req.operator,
        )

    def _run(
        self,
        req: BehaviourRequest,
        lead_id: str | None,
        act: Callable[[b.Context, Lead], b.Effect],
        status: int,
    ) -> Future[Answer]:
        def work(uow: UnitOfWork, tally: _Tally) -> Answer:
            before: Lead | None = None
            if lead_id is not None:
                before = uow.leads.get(req.mid, lead_id, for_update=True)
                if before is None:
                    raise NotFoundError(f"lead {lead_id!r} not found")
                req.check_version(lead_id, before.version)
            # Read the clock only once the lead is locked: a writer that waited for the lock
            # must not stamp its event earlier than the one it waited for.
            ctx = self._context(uow, req)
            outcome = act(ctx, before)  # type: ignore[arg-type]
            outcome = Allocation(uow, ctx)(before, outcome)  # pool automation: scene 1
            if before is None:
                uow.leads.add(outcome.lead)
            elif outcome.events:
                uow.leads.update(outcome.lead, before)
            payloads = self._record(uow, outcome.events, tally)
            return status, behaviour_body(outcome.lead, payloads)

        return self._commit(req, work, lead_id)

    def _commit(
        self,
        req: BehaviourRequest,
        work: Callable[[UnitOfWork, _Tally], Answer],
        lock_key: str | None = None,
    ) -> Future[Answer]:
        """Run `work` once per Idempotency-Key; wake the dispatcher only if it enqueued.

        `lock_key`: the lead `work` locks first, if any (`Transactor.submit`)."""
        tally = _Tally()

        def run(uow: UnitOfWork) -> Answer:
            tally.deliveries = 0  # the writer may run a unit of work again: count its last run
            return work(uow, tally)

        def wake() -> None:
            # A behaviour without subscribers must not cost the dispatcher a claim query.
            if tally.deliveries:
                self._on_enqueued()

        return self._idem.submit(
            self._tx, req.mid, req.idempotency_key, req.fingerprint, run, wake, lock_key
        )

    def _record(self, uow: UnitOfWork, events: Sequence[LeadEvent], tally: _Tally) -> list[str]:
        """Append events to the log and enqueue one delivery per matching subscription."""
        if not events:
            return []
        rows = new_events(events)
        seqs = uow.events.append(rows)
        subs = uow.subscriptions.enabled_for(rows[0].mid)
        fanout = [
            (sub, seq, ev)
            for ev, seq in zip(rows, seqs, strict=True)
            for sub in subs
            if sub.wants(ev.event_type)
        ]
        if fanout:
            tally.deliveries += uow.deliveries.enqueue(fanout, self._clock())
        return [r.payload for r in rows]

    # ---- behaviours over several leads that read the store (services/automation.py) ------

    def transact(
        self,
        req: BehaviourRequest,
        act: Callable[[UnitOfWork, Callable[[], b.Context]], Changes],
        lock_key: str | None = None,
    ) -> tuple[int, str]:
        """Run `act` in one transaction (honouring `Idempotency-Key`): it locks the leads it
        needs, builds the context once they are locked, and returns what changed; each changed
        lead is written with its version check and every event recorded, in `act`'s order.
        `lock_key` is the first lead `act` locks (`Transactor.submit`)."""

        def work(uow: UnitOfWork, tally: _Tally) -> tuple[int, str]:
            changes = act(uow, lambda: self._context(uow, req))
            for before, after in changes.leads:
                uow.leads.update(after, before)
            payloads = self._record(uow, changes.events, tally)
            if changes.answer is None:
                return 200, '{"events":[' + ",".join(payloads) + "]}"
            return 200, behaviour_body(changes.answer, payloads)

        return _waited(lambda: self._commit(req, work, lock_key))

    # ---- reads ----------------------------------------------------------------------------

    def get(self, mid: str, lead_id: str) -> Lead:
        """Return a lead of the tenant, or 404."""
        with self._read() as uow:
            lead = uow.leads.get(mid, lead_id)
        if lead is None:
            raise NotFoundError(f"lead {lead_id!r} not found")
        return lead

    def list(
        self, mid: str, filters: LeadFilter, cursor: str | None, limit: int
    ) -> tuple[list[Lead], str | None]:
        """List the tenant's leads, oldest first."""
        with self._read() as uow:
            page = uow.leads.page(mid, filters, cursor, limit)
        return page.data, page.next_cursor

    def timeline(
        self, mid: str, lead_id: str, is_follow_up: int | None, cursor: str | None, limit: int
    ) -> str:
        """Return the lead's events, newest first, as `{"data": [...], "next_cursor"}` JSON."""
        with self._read() as uow:
            if uow.leads.get(mid, lead_id) is None:
                raise NotFoundError(f"lead {lead_id!r} not found")
            page = uow.events.timeline(
                mid, lead_id, is_follow_up=is_follow_up, cursor=cursor, limit=limit
            )
        return page_body([e.payload for e in page.data], page.next_cursor)


def page_body(payloads: Sequence[str], next_cursor: str | None) -> str:
    """Return `{"data": [...], "next_cursor": ...}` with stored JSON embedded byte for byte."""
    return '{"data":[' + ",".join(payloads) + '],"next_cursor":' + dumps(next_cursor) + "}"
