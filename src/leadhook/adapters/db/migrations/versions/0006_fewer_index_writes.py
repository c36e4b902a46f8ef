"""fewer index entries written by each behaviour, every query keeping its index

Every index a row has an entry in is one more B-tree page a create writes (on SQLite one more
WAL frame, copied again by the checkpoint). Six indexes held entries no query needs:

- `ix_leads_owner (mid, owner) WHERE owner IS NOT NULL` repeated the first two columns of
  `ix_leads_mid_owner_seq`: dropped, and `ix_leads_mid_owner_seq` now holds owned leads only
  (a listing filter names an owner; allocation and claim limits count a named member's).
- `ix_leads_mid_voided_seq (mid, voided, seq)` held every lead: replaced by
  `ix_leads_voided_seq (mid, voided, seq) WHERE voided`; `voided=false` walks
  `ix_leads_mid_seq`.
- `ix_deliveries_status_updated_at (status, updated_at)` held every delivery, and was
  rewritten at each change of status: replaced by `ix_deliveries_delivered_at (updated_at)
  WHERE status = 'delivered'`, the only rows retention reads through it.
- `ix_events_create_time (create_time)`: retention walks the log by `seq` now.
- `ix_events_mid_entity_id_seq (mid, entity_id, seq)` ordered a lead's events as
  `uq_events_entity_version (entity_id, entity_version)` already does (a lead's events are
  logged in the order of their versions): the `entity_id=` filters walk that one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OWNED = sa.text("owner IS NOT NULL")
_DELIVERED = sa.text("status = 'delivered'")


def upgrade() -> None:
    op.drop_index("ix_leads_owner", table_name="leads")
    op.drop_index("ix_leads_mid_owner_seq", table_name="leads")
    op.create_index(
        "ix_leads_mid_owner_seq",
        "leads",
        ["mid", "owner", "seq"],
        postgresql_where=_OWNED,
        sqlite_where=_OWNED,
    )
    op.drop_index("ix_leads_mid_voided_seq", table_name="leads")
    op.create_index(
        "ix_leads_voided_seq",
        "leads",
        ["mid", "voided", "seq"],
        postgresql_where=sa.text("voided"),
        sqlite_where=sa.text("voided = 1"),
    )
    op.drop_index("ix_deliveries_status_updated_at", table_name="deliveries")
    op.create_index(
        "ix_deliveries_delivered_at",
        "deliveries",
        ["updated_at"],
        postgresql_where=_DELIVERED,
        sqlite_where=_DELIVERED,
    )
    op.drop_index("ix_events_create_time", table_name="events")
    op.drop_index("ix_events_mid_entity_id_seq", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_mid_entity_id_seq", "events", ["mid", "entity_id", "seq"])
    op.create_index("ix_events_create_time", "events", ["create_time"])
    op.drop_index("ix_deliveries_delivered_at", table_name="deliveries")
    op.create_index("ix_deliveries_status_updated_at", "deliveries", ["status", "updated_at"])
    op.drop_index("ix_leads_voided_seq", table_name="leads")
    op.create_index("ix_leads_mid_voided_seq", "leads", ["mid", "voided", "seq"])
    op.drop_index("ix_leads_mid_owner_seq", table_name="leads")
    op.create_index("ix_leads_mid_owner_seq", "leads", ["mid", "owner", "seq"])
    op.create_index(
        "ix_leads_owner",
        "leads",
        ["mid", "owner"],
        postgresql_where=_OWNED,
        sqlite_where=_OWNED,
    )
