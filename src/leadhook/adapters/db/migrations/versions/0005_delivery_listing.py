"""indexes of the delivery listing across a tenant's subscriptions

`GET /v1/deliveries` lists a tenant's deliveries newest first, filtered by status, lead,
event type, subscription and creation time. These indexes keep each filter a range scan
as history grows (the subscription filter has `ix_deliveries_subscription_seq` already;
the event type filter walks `ix_deliveries_mid_seq`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_deliveries_mid_seq": ["mid", "seq"],
    "ix_deliveries_mid_status_seq": ["mid", "status", "seq"],
    "ix_deliveries_mid_entity_id_seq": ["mid", "entity_id", "seq"],
    "ix_deliveries_mid_created_at": ["mid", "created_at"],
}


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        for name in reversed(INDEXES):
            batch_op.drop_index(name)
