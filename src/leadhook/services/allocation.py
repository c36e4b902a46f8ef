"""Automatic allocation (scene 1): give a lead arriving unowned in a pool an owner by its rule."""

from __future__ import annotations

from leadhook.domain import behaviours as b
from leadhook.domain import pools
from leadhook.domain.lead import Lead
from leadhook.services.ports import PoolTurn, UnitOfWork


class Allocation:
    """The allocation step of one unit of work, run after each behaviour it performs.

    The pool's turn is read under a row lock and written back in the same transaction, so
    round robin continues where it stopped across restarts and processes, and two concurrent
    creates never get the same turn. Leads given an owner earlier in this unit of work (a
    batch), handed out here or created with one named, count towards least-loaded before
    they are stored.
    """

    def __init__(self, uow: UnitOfWork, ctx: b.Context) -> None:
        self._uow = uow
        self._ctx = ctx
        self._given: dict[str, int] = {}

    def __call__(self, before: Lead | None, outcome: b.Effect) -> b.Effect:
        """Return `outcome`, followed by an allocation when the lead arrived unowned."""
        if not pools.arrives_unowned(before, outcome):
            owner = outcome.lead.owner
            if before is None and owner is not None:  # created with an owner named
                self._given[owner] = self._given.get(owner, 0) + 1
            return outcome
        lead, ctx = outcome.lead, self._ctx
        pool = ctx.catalog.lead_pools.get(lead.lead_pool)
        if pool is None or pool.assignment is None or not pool.assignment.enabled:
            return outcome
        rule = pool.assignment
        turn = self._uow.pools.lock_turn(lead.mid, pool.id)
        loads = None
        if rule.mode == "least_loaded":
            stored = self._uow.pools.open_leads(lead.mid, rule.members)
            loads = {m: stored.get(m, 0) + self._given.get(m, 0) for m in rule.members}
        member = pools.choose_member(
            rule,
            last=turn.last_member,
            loads=loads,
            exclude=None if before is None else before.owner,
        )
        self._uow.pools.save_turn(lead.mid, pool.id, PoolTurn(member, turn.turns + 1), ctx.now)
        self._given[member] = self._given.get(member, 0) + 1
        return pools.then(outcome, pools.allocate(ctx, lead, pool, member))
