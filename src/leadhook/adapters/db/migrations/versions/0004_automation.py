"""pool automation: reclaim clocks and duplicate keys on leads, pool turns, automation runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OWNED = sa.text("owner IS NOT NULL")
_BATCH = 1000
_SPACES = re.compile(r"[\s\-]+")


def upgrade() -> None:
    op.add_column("leads", sa.Column("owner_since", sa.Float(), nullable=True))
    op.add_column("leads", sa.Column("last_follow_up_at", sa.Float(), nullable=True))
    op.add_column("leads", sa.Column("mobile_key", sa.String(length=255), nullable=True))
    op.add_column("leads", sa.Column("email_key", sa.String(length=255), nullable=True))
    _backfill()
    op.create_index(
        "ix_leads_reclaim",
        "leads",
        ["mid", "lead_pool", "owner_since"],
        postgresql_where=_OWNED,
        sqlite_where=_OWNED,
    )
    op.create_index(
        "ix_leads_owner", "leads", ["mid", "owner"], postgresql_where=_OWNED, sqlite_where=_OWNED
    )
    for key in ("mobile_key", "email_key"):
        where = sa.text(f"{key} IS NOT NULL")
        op.create_index(
            f"ix_leads_{key}", "leads", ["mid", key], postgresql_where=where, sqlite_where=where
        )
    op.create_table(
        "pool_turns",
        sa.Column("mid", sa.String(length=64), nullable=False),
        sa.Column("lead_pool", sa.String(length=64), nullable=False),
        sa.Column("last_member", sa.String(length=64), nullable=True),
        sa.Column("turns", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("mid", "lead_pool", name=op.f("pk_pool_turns")),
    )
    op.create_table(
        "automation_runs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("mid", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("lead_pool", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("lead_ids", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_automation_runs")),
        sa.UniqueConstraint("id", name=op.f("uq_automation_runs_id")),
    )
    op.create_index("ix_automation_runs_mid_seq", "automation_runs", ["mid", "seq"])


def downgrade() -> None:
    op.drop_index("ix_automation_runs_mid_seq", table_name="automation_runs")
    op.drop_table("automation_runs")
    op.drop_table("pool_turns")
    for name in ("ix_leads_email_key", "ix_leads_mobile_key", "ix_leads_owner", "ix_leads_reclaim"):
        op.drop_index(name, table_name="leads")
    with op.batch_alter_table("leads") as batch:
        for column in ("email_key", "mobile_key", "last_follow_up_at", "owner_since"):
            batch.drop_column(column)


# ---- backfill: the same rules as the code of this revision, frozen here ---------------------


def _mobile_key(value: Any) -> str | None:
    if value is None:
        return None
    key = _SPACES.sub("", str(value)).lower()
    return (key[3:] if key.startswith("+86") else key)[:255] or None


def _email_key(value: Any) -> str | None:
    if value is None:
        return None
    return re.sub(r"\s+", "", str(value)).lower()[:255] or None


def _backfill() -> None:
    """Give existing leads their clocks and keys, in the columns and in the stored state.

    An owned lead counts as owned since its last change; its last follow-up is its latest
    follow-up note or status change in the event log.
    """
    conn = op.get_bind()
    leads = sa.table(
        "leads",
        sa.column("seq"),
        sa.column("id"),
        sa.column("state"),
        sa.column("owner_since"),
        sa.column("last_follow_up_at"),
        sa.column("mobile_key"),
        sa.column("email_key"),
    )
    events = sa.table(
        "events",
        sa.column("entity_id"),
        sa.column("create_time"),
        sa.column("is_follow_up"),
        sa.column("event_type"),
    )
    after = 0
    while True:
        rows = conn.execute(
            sa.select(leads.c.seq, leads.c.id, leads.c.state)
            .where(leads.c.seq > after)
            .order_by(leads.c.seq)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].seq
        ids = [r.id for r in rows]
        follow_ups = dict(
            conn.execute(
                sa.select(events.c.entity_id, sa.func.max(events.c.create_time))
                .where(
                    events.c.entity_id.in_(ids),
                    sa.or_(
                        events.c.is_follow_up == 1,
                        events.c.event_type == "object_update_status",
                    ),
                )
                .group_by(events.c.entity_id)
            ).all()
        )
        for row in rows:
            state = json.loads(row.state)
            state.setdefault(
                "owner_since", state["updated_at"] if state.get("owner") is not None else None
            )
            last = follow_ups.get(row.id)
            state.setdefault("last_follow_up_at", None if last is None else int(last))
            fields = state.get("fields", {})
            conn.execute(
                sa.update(leads)
                .where(leads.c.seq == row.seq)
                .values(
                    state=json.dumps(state, ensure_ascii=False, separators=(",", ":")),
                    owner_since=state["owner_since"],
                    last_follow_up_at=state["last_follow_up_at"],
                    mobile_key=_mobile_key(fields.get("mobile")),
                    email_key=_email_key(fields.get("email")),
                )
            )
