"""SQL side of the pool rules: allocation turns, loads, due leads, duplicates, automation runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, text, update

from leadhook.adapters.db import tables as t
from leadhook.domain.catalog_entries import catalog_from_json
from leadhook.domain.lead import Lead
from leadhook.domain.pools import duplicate_keys
from leadhook.services import cursor as cursors
from leadhook.services.ports import AutomationRun, DueLead, Page, PoolTurn, Tenant

# Longer normalised keys are cut here: a btree entry must stay small, and two different
# addresses sharing 255 leading characters are not a case worth a wider index.
KEY_LENGTH = 255


def lead_columns(lead: Lead) -> dict[str, Any]:
    """The leads columns that pool automation reads, derived from the lead: a create writes
    them all, an update those whose value changed (`sql.update_lead`)."""
    mobile, email = duplicate_keys(lead)
    return {
        "owner_since": lead.owner_since,
        "last_follow_up_at": lead.last_follow_up_at,
        "mobile_key": None if mobile is None else mobile[:KEY_LENGTH],
        "email_key": None if email is None else email[:KEY_LENGTH],
    }


# A pool's first turn, on both dialects (SQLite has ON CONFLICT since 3.24).
_INSERT_TURN = text("""INSERT INTO pool_turns (mid, lead_pool, turns, updated_at)
VALUES (:mid, :lead_pool, 0, 0.0) ON CONFLICT DO NOTHING""")


class SqlPools:
    """Pool rules' reads and writes, on the connection of the unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # The one dialect difference here: row locks (FOR UPDATE), which only PostgreSQL has;
        # SQLite serialises its write transactions whole instead.
        self._pg = conn.dialect.name == "postgresql"

    def lock_turn(self, mid: str, lead_pool: str) -> PoolTurn:
        """Read the pool's turn, locked until commit (SQLite serialises writers instead)."""
        c = t.pool_turns.c
        stmt = select(c.last_member, c.turns).where(c.mid == mid, c.lead_pool == lead_pool)
        if self._pg:
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).first()
        if row is None:
            self._insert_turn(mid, lead_pool)
            row = self.conn.execute(stmt).first()
        assert row is not None
        return PoolTurn(row.last_member, int(row.turns))

    def _insert_turn(self, mid: str, lead_pool: str) -> None:
        # Two first allocations at once (PostgreSQL): one inserts, the other waits for it, then
        # locks. SQLite has one writer: the conflict never happens there.
        self.conn.execute(_INSERT_TURN, {"mid": mid, "lead_pool": lead_pool})

    def save_turn(self, mid: str, lead_pool: str, turn: PoolTurn, at: float) -> None:
        c = t.pool_turns.c
        self.conn.execute(
            update(t.pool_turns)
            .where(c.mid == mid, c.lead_pool == lead_pool)
            .values(last_member=turn.last_member, turns=turn.turns, updated_at=at)
        )

    def open_leads(self, mid: str, members: Sequence[str]) -> dict[str, int]:
        c = t.leads.c
        rows = self.conn.execute(
            select(c.owner, func.count())
            .where(c.mid == mid, c.owner.in_(list(members)), c.voided.is_(False))
            .group_by(c.owner)
        ).all()
        return {str(owner): int(n) for owner, n in rows}

    def held_in_pool(self, mid: str, lead_pool: str, member: str) -> int:
        c = t.leads.c
        n = self.conn.execute(
            select(func.count()).where(
                c.mid == mid, c.owner == member, c.lead_pool == lead_pool, c.voided.is_(False)
            )
        ).scalar()
        return int(n or 0)

    def tenants_with_reclaim(self) -> list[Tenant]:
        c = t.tenants.c
        # A cheap prefilter on the stored JSON (compact, so a set rule reads `"reclaim":{`);
        # the parsed catalog decides.
        rows = self.conn.execute(
            select(c.mid, c.catalog, c.created_at)
            .where(c.catalog.like('%"reclaim":{%'))
            .order_by(c.mid)
        ).all()
        tenants = [
            Tenant(r.mid, catalog_from_json(json.loads(r.catalog)), r.created_at) for r in rows
        ]
        return [x for x in tenants if any(p.reclaims for p in x.catalog.lead_pools.values())]

    def due_for_reclaim(
        self, mid: str, lead_pool: str, cutoff: float, after: DueLead | None, limit: int
    ) -> list[DueLead]:
        c = t.leads.c
        conds = [
            c.mid == mid,
            c.lead_pool == lead_pool,
            c.owner.is_not(None),
            c.voided.is_(False),
            c.owner_since <= cutoff,
            or_(c.last_follow_up_at.is_(None), c.last_follow_up_at <= cutoff),
        ]
        if after is not None:
            conds.append(
                or_(
                    c.owner_since > after.owner_since,
                    and_(c.owner_since == after.owner_since, c.id > after.id),
                )
            )
        rows = self.conn.execute(
            select(c.id, c.owner_since)
            .where(and_(*conds))
            .order_by(c.owner_since, c.id)
            .limit(limit)
        ).all()
        return [DueLead(r.id, float(r.owner_since)) for r in rows]

    def lock_if_free(self, mid: str, lead_id: str) -> Lead | None:
        c = t.leads.c
        stmt = select(c.state).where(c.id == lead_id, c.mid == mid)
        if self._pg:
            # Another worker (or a request) holds it: it is theirs this time.
            stmt = stmt.with_for_update(skip_locked=True)
        state = self.conn.execute(stmt).scalar()
        return None if state is None else Lead.from_json(json.loads(state))

    def duplicates(self, lead: Lead, limit: int) -> list[Lead]:
        c = t.leads.c
        cols = lead_columns(lead)
        matches = [
            col == cols[key]
            for col, key in ((c.mobile_key, "mobile_key"), (c.email_key, "email_key"))
            if cols[key] is not None
        ]
        if not matches:
            return []
        # The index holds keys cut at KEY_LENGTH: two addresses alike that far are told
        # apart here, by their whole keys (they were listed as duplicates, `matched_on: []`,
        # and a merge led by the list voided another person's lead). Rows are read a page
        # at a time until `limit` true ones are found.
        mine = duplicate_keys(lead)
        found: list[Lead] = []
        after = 0
        while len(found) < limit:
            # One walk a key, each on its own partial index in seq order, merged here: asked
            # with both keys at once (OR), SQLite's planner walked the tenant's leads instead
            # (148 ms for a lead with one duplicate among 300,000: a scale review).
            walks = [
                self.conn.execute(
                    select(c.seq, c.state)
                    .where(
                        c.mid == lead.mid,
                        match,
                        c.id != lead.id,
                        c.voided.is_(False),
                        c.seq > after,
                    )
                    .order_by(c.seq)
                    .limit(limit)
                ).all()
                for match in matches
            ]
            merged = {int(row.seq): row.state for walk in walks for row in walk}
            rows = sorted(merged.items())[:limit]
            for seq, state in rows:
                after = seq
                other = Lead.from_json(json.loads(state))
                theirs = duplicate_keys(other)
                if any(a is not None and a == b for a, b in zip(mine, theirs, strict=True)):
                    found.append(other)
            if len(rows) < limit:
                break
        return found[:limit]

    def add_run(self, run: AutomationRun) -> None:
        self.conn.execute(
            insert(t.automation_runs).values(
                id=run.id,
                mid=run.mid,
                rule=run.rule,
                lead_pool=run.lead_pool,
                trigger=run.trigger,
                started_at=run.started_at,
                finished_at=run.finished_at,
                lead_ids=json.dumps(list(run.lead_ids)),
            )
        )

    def runs(self, mid: str, cursor: str | None, limit: int) -> Page[AutomationRun]:
        c = t.automation_runs.c
        conds = [c.mid == mid]
        before = cursors.decode(cursor)
        if before is not None:
            conds.append(c.seq < before)
        rows = self.conn.execute(
            select(t.automation_runs).where(and_(*conds)).order_by(c.seq.desc()).limit(limit + 1)
        ).all()
        data = [
            AutomationRun(
                r.id,
                r.mid,
                r.rule,
                r.lead_pool,
                r.trigger,
                r.started_at,
                r.finished_at,
                tuple(json.loads(r.lead_ids)),
            )
            for r in rows[:limit]
        ]
        nxt = cursors.encode(rows[limit - 1].seq) if len(rows) > limit else None
        return Page(data, nxt)
