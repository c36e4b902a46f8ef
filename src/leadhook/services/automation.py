"""Lead pools that run themselves: claim, return, duplicate merge, and the reclaim worker.

Claim (scene 3), return (scene 4) and merge (scene 6) are requests, each one transaction
through `LeadService.transact`. Reclaim (scene 5) is the worker's: `AutomationService.run_due`
finds the leads a pool's rule is due for (an indexed query), then takes each back in its own
transaction, re-checking the rule on the locked lead, so a second run (or a second worker)
changes nothing. Allocation (scene 1) lives in `services/allocation.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from leadhook.domain import behaviours as b
from leadhook.domain import pools
from leadhook.domain.errors import (
    LeadhookError,
    NotFoundError,
    ValidationError,
)
from leadhook.domain.lead import Lead
from leadhook.domain.operator import SYSTEM, Operator
from leadhook.services.allocation import Allocation
from leadhook.services.leads import BehaviourRequest, Changes, LeadService, dumps
from leadhook.services.ports import (
    AutomationRun,
    Clock,
    DueLead,
    IdFactory,
    Page,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH = 100
DEFAULT_INTERVAL = 60.0


def _lock(uow: UnitOfWork, req: BehaviourRequest, lead_id: str) -> Lead:
    lead = uow.leads.get(req.mid, lead_id, for_update=True)
    if lead is None:
        raise NotFoundError(f"lead {lead_id!r} not found")
    return lead


def _check_version(req: BehaviourRequest, lead: Lead) -> None:
    req.check_version(lead.id, lead.version)


def _one(before: Lead, outcome: b.Effect) -> Changes:
    changed = ((before, outcome.lead),) if outcome.events else ()
    return Changes(changed, outcome.events, outcome.lead)


class PoolService:
    """The pool behaviours a caller asks for: claim, return, duplicate check and merge."""

    def __init__(self, leads: LeadService, readonly_uow: UnitOfWorkFactory) -> None:
        self._leads = leads
        self._read = readonly_uow

    def claim(self, req: BehaviourRequest, lead_id: str, member: Any) -> tuple[int, str]:
        """A member claims an unowned lead from its pool (scene 3), acting as herself."""

        def act(uow: UnitOfWork, context: Callable[[], b.Context]) -> Changes:
            lead = _lock(uow, req, lead_id)
            _check_version(req, lead)
            ctx = context()
            operator = _member_operator(ctx, req.operator, member)
            # Held leads are counted under the pool's turn lock: two claims of one member
            # cannot both pass the limit.
            uow.pools.lock_turn(req.mid, lead.lead_pool)
            held = (
                uow.pools.held_in_pool(req.mid, lead.lead_pool, member)
                if isinstance(member, str)
                else 0
            )
            return _one(lead, pools.claim(replace(ctx, operator=operator), lead, member, held))

        return self._leads.transact(req, act, lead_id)

    def return_(
        self, req: BehaviourRequest, lead_id: str, lead_pool: Any, notes: Any
    ) -> tuple[int, str]:
        """Return a lead to a pool without owner (scene 4); the pool's assignment may then
        give it to another member (scene 1)."""

        def act(uow: UnitOfWork, context: Callable[[], b.Context]) -> Changes:
            lead = _lock(uow, req, lead_id)
            _check_version(req, lead)
            ctx = context()
            outcome = pools.return_to_pool(ctx, lead, lead_pool, notes)
            return _one(lead, Allocation(uow, ctx)(lead, outcome))

        return self._leads.transact(req, act, lead_id)

    def duplicates(self, mid: str, lead_id: str, limit: int) -> str:
        """List live leads sharing the lead's mobile or email (normalised), oldest first."""
        with self._read() as uow:
            lead = uow.leads.get(mid, lead_id)
            if lead is None:
                raise NotFoundError(f"lead {lead_id!r} not found")
            found = uow.pools.duplicates(lead, limit)
        data = [{"lead": d.to_api_json(), "matched_on": pools.matched_on(lead, d)} for d in found]
        return dumps({"data": data})

    def merge(self, req: BehaviourRequest, lead_id: str, duplicates: Any) -> tuple[int, str]:
        """Merge duplicates into the lead, all in one transaction (scene 6)."""
        ids = _merge_ids(lead_id, duplicates)
        order = sorted({lead_id, *ids})

        def act(uow: UnitOfWork, context: Callable[[], b.Context]) -> Changes:
            # One lock order for every merge: two merges over the same leads cannot deadlock.
            locked = {i: _lock(uow, req, i) for i in order}
            survivor = locked[lead_id]
            _check_version(req, survivor)
            ctx = context()
            dups = [pools.Duplicate(locked[i], _notes(uow, req.mid, i)) for i in ids]
            out = pools.merge(ctx, survivor, dups)
            changed = [(survivor, out.survivor)] if out.survivor.version != survivor.version else []
            changed += [(d.lead, v) for d, v in zip(dups, out.voided, strict=True)]
            return Changes(changed, out.events, out.survivor)

        return self._leads.transact(req, act, order[0])


def _member_operator(ctx: b.Context, given: Operator, member: Any) -> Operator:
    """The operator of a claim: the member (operator_type 2), by default with the back-office
    account the catalog binds her to (`operator_id`) and her omni_user_uuid."""
    if given.operator_type not in (0, 2) or (given.operator_type == 0 and given != SYSTEM):
        raise ValidationError.at(
            ("body", "operator", "operator_type"), "a claim is made by the member: must be 2"
        )
    found = ctx.catalog.members.get(member) if isinstance(member, str) else None
    uuid = given.omni_user_uuid or (found.omni_user_uuid if found else "")
    bound = found.operator_id if found is not None and found.operator_id is not None else 0
    return replace(
        given, operator_type=2, operator_id=given.operator_id or bound, omni_user_uuid=uuid
    )


def _merge_ids(lead_id: str, duplicates: Any) -> list[str]:
    loc = ("body", "duplicates")
    if not isinstance(duplicates, list) or not duplicates:
        raise ValidationError.at(loc, "must be a non-empty list of lead ids")
    if len(duplicates) > pools.MAX_MERGE:
        raise ValidationError.at(loc, f"at most {pools.MAX_MERGE} leads per merge")
    for i, dup in enumerate(duplicates):
        if not isinstance(dup, str):
            raise ValidationError.at((*loc, i), "must be a lead id")
        if dup == lead_id:
            raise ValidationError.at((*loc, i), "a lead cannot be merged into itself")
        if dup in duplicates[:i]:
            raise ValidationError.at((*loc, i), f"lead {dup!r} is listed twice")
    return list(duplicates)


def _notes(uow: UnitOfWork, mid: str, lead_id: str) -> tuple[str, ...]:
    """The texts of a lead's notes, oldest first, from its event log."""
    texts = []
    for event in uow.events.for_entity(mid, lead_id):
        if event.event_type == "object_add_notes":
            text = json.loads(event.payload)["extra_data"]["notes"]
            if text:
                texts.append(text)
    return tuple(texts)


class AutomationService:
    """Run the automatic rules that are due (reclaim, scene 5) and list past runs."""

    def __init__(
        self,
        leads: LeadService,
        uow: UnitOfWorkFactory,
        clock: Clock,
        ids: IdFactory,
        *,
        readonly_uow: UnitOfWorkFactory | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self._leads = leads
        self._uow = uow
        self._read = readonly_uow or uow
        self._clock = clock
        self._ids = ids
        self._batch = batch

    def run_due(
        self,
        mid: str | None = None,
        trigger: str = "schedule",
        stopping: Callable[[], bool] = lambda: False,
    ) -> list[AutomationRun]:
        """Run every due rule (of one tenant, or all); return the runs that moved leads.

        `stopping` is asked between leads: a worker shutting down stops at the next lead, and
        what it did not reach is still due at the next run."""
        with self._read() as uow:
            tenants = [x for x in uow.pools.tenants_with_reclaim() if mid is None or x.mid == mid]
        runs: list[AutomationRun] = []
        for tenant in tenants:
            for pool in tenant.catalog.lead_pools.values():
                if pool.reclaim is not None and pool.reclaim.enabled:
                    cutoff = self._clock() - pool.reclaim.after_seconds
                    runs += self._reclaim_pool(tenant.mid, pool.id, cutoff, trigger, stopping)
        return runs

    def _reclaim_pool(
        self,
        mid: str,
        lead_pool: str,
        cutoff: float,
        trigger: str,
        stopping: Callable[[], bool],
    ) -> list[AutomationRun]:
        runs: list[AutomationRun] = []
        after: DueLead | None = None
        while True:
            # Each batch is bounded; `after` walks forward, so a lead left alone (locked by
            # another worker, or no longer due) is not looked at twice in one run.
            with self._read() as uow:
                due = uow.pools.due_for_reclaim(mid, lead_pool, cutoff, after, self._batch)
            if not due:
                return runs
            started = self._clock()
            moved = tuple(d.id for d in due if not stopping() and self._reclaim_one(mid, d.id))
            if moved:
                runs.append(self._record(mid, lead_pool, trigger, started, moved))
            if len(due) < self._batch or stopping():
                return runs
            after = due[-1]

    def _reclaim_one(self, mid: str, lead_id: str) -> bool:
        moved = False

        def act(uow: UnitOfWork, context: Callable[[], b.Context]) -> Changes:
            nonlocal moved
            moved = False  # a unit of work may run again (a deadlock, a deferred group redone)
            lead = uow.pools.lock_if_free(mid, lead_id)
            if lead is None or lead.owner is None or lead.voided:
                return Changes((), (), lead)  # held elsewhere, or reclaimed meanwhile
            outcome = pools.reclaim(context(), lead)
            moved = bool(outcome.events)
            return _one(lead, outcome)

        try:
            self._leads.transact(BehaviourRequest(mid, SYSTEM), act, lead_id)
        except LeadhookError as exc:  # changed under us (version check): the next run sees it
            log.warning("reclaim of lead %s skipped: %s", lead_id, exc)
            return False
        return moved

    def _record(
        self, mid: str, lead_pool: str, trigger: str, started: float, moved: tuple[str, ...]
    ) -> AutomationRun:
        run = AutomationRun(
            id=self._ids.short(),
            mid=mid,
            rule=pools.RULE_RECLAIM,
            lead_pool=lead_pool,
            trigger=trigger,
            started_at=started,
            finished_at=self._clock(),
            lead_ids=moved,
        )
        with self._uow() as uow:
            uow.pools.add_run(run)
            uow.commit()
        return run

    def run_now(self, mid: str) -> list[AutomationRun]:
        """Run the tenant's due rules now; answer the runs that moved leads."""
        return self.run_due(mid, trigger="manual")

    def runs(self, mid: str, cursor: str | None, limit: int) -> Page[AutomationRun]:
        """List the tenant's past runs, newest first."""
        with self._read() as uow:
            return uow.pools.runs(mid, cursor, limit)


class AutomationScheduler:
    """Run the due rules every `interval` seconds until stopped (in the worker process)."""

    def __init__(self, service: AutomationService, interval: float = DEFAULT_INTERVAL) -> None:
        self._service = service
        self._interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        """Run a pass now and then every interval; a failed pass is logged, never fatal."""
        halt = threading.Event()  # what the pass, in its thread, can see of `stop`

        async def mirror() -> None:
            await stop.wait()
            halt.set()

        mirroring = asyncio.create_task(mirror())
        try:
            await self._loop(stop, halt)
        finally:
            mirroring.cancel()

    async def _loop(self, stop: asyncio.Event, halt: threading.Event) -> None:
        while not stop.is_set():
            try:
                runs = await asyncio.to_thread(self._service.run_due, stopping=halt.is_set)
                for run in runs:
                    log.info(
                        "automation: %s of lead pool %s (tenant %s) moved %d leads",
                        run.rule,
                        run.lead_pool,
                        run.mid,
                        len(run.lead_ids),
                    )
            except Exception:  # the next pass tries again; delivery must not stop for this
                log.exception("automation pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
