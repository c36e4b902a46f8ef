"""In-memory pool rules' store, behaving as the SQL one does (adapters/db/pools.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from leadhook.adapters.memory.state import LeadRow, MemoryState
from leadhook.domain.catalog_entries import catalog_from_json
from leadhook.domain.lead import Lead
from leadhook.domain.pools import duplicate_keys
from leadhook.services import cursor as cursors
from leadhook.services.ports import AutomationRun, DueLead, Page, PoolTurn, Tenant


class MemoryPools:
    """Turns, loads, due leads, duplicates and runs over the in-memory tables."""

    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def _leads(self, mid: str) -> Iterator[tuple[LeadRow, Lead]]:
        for row in sorted(self._s.leads.values(), key=lambda r: r.seq):
            if row.mid == mid:
                yield row, Lead.from_json(json.loads(row.state))

    def lock_turn(self, mid: str, lead_pool: str) -> PoolTurn:
        # The store runs one unit of work at a time: holding it is the lock.
        return self._s.pool_turns.get((mid, lead_pool), PoolTurn())

    def save_turn(self, mid: str, lead_pool: str, turn: PoolTurn, at: float) -> None:
        self._s.pool_turns[(mid, lead_pool)] = turn

    def open_leads(self, mid: str, members: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, lead in self._leads(mid):
            owner = lead.owner
            if owner is not None and owner in members and not lead.voided:
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    def held_in_pool(self, mid: str, lead_pool: str, member: str) -> int:
        return sum(
            1
            for _, lead in self._leads(mid)
            if lead.owner == member and lead.lead_pool == lead_pool and not lead.voided
        )

    def tenants_with_reclaim(self) -> list[Tenant]:
        tenants = [
            Tenant(r.mid, catalog_from_json(json.loads(r.catalog)), r.created_at)
            for r in sorted(self._s.tenants.values(), key=lambda r: r.mid)
        ]
        return [x for x in tenants if any(p.reclaims for p in x.catalog.lead_pools.values())]

    def due_for_reclaim(
        self, mid: str, lead_pool: str, cutoff: float, after: DueLead | None, limit: int
    ) -> list[DueLead]:
        due = sorted(
            (float(lead.owner_since), lead.id)
            for _, lead in self._leads(mid)
            if lead.lead_pool == lead_pool
            and lead.owner is not None
            and not lead.voided
            and lead.owner_since is not None
            and lead.owner_since <= cutoff
            and (lead.last_follow_up_at is None or lead.last_follow_up_at <= cutoff)
        )
        if after is not None:
            due = [d for d in due if d > (after.owner_since, after.id)]
        return [DueLead(lead_id, since) for since, lead_id in due[:limit]]

    def lock_if_free(self, mid: str, lead_id: str) -> Lead | None:
        row = self._s.leads.get(lead_id)
        return None if row is None or row.mid != mid else Lead.from_json(json.loads(row.state))

    def duplicates(self, lead: Lead, limit: int) -> list[Lead]:
        mine = duplicate_keys(lead)
        if mine == (None, None):
            return []
        found = [
            other
            for _, other in self._leads(lead.mid)
            if other.id != lead.id
            and not other.voided
            and any(
                a is not None and a == c for a, c in zip(mine, duplicate_keys(other), strict=True)
            )
        ]
        return found[:limit]

    def add_run(self, run: AutomationRun) -> None:
        self._s.automation_runs.append(run)

    def runs(self, mid: str, cursor: str | None, limit: int) -> Page[AutomationRun]:
        before = cursors.decode(cursor)
        positioned = [
            (seq, run)
            for seq, run in enumerate(self._s.automation_runs, start=1)
            if run.mid == mid and (before is None or seq < before)
        ]
        positioned.reverse()
        chunk = positioned[:limit]
        nxt = cursors.encode(chunk[-1][0]) if len(positioned) > limit else None
        return Page([run for _, run in chunk], nxt)
