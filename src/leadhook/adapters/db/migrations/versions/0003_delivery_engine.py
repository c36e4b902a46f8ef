"""delivery engine: circuit breaker columns, retention indexes and counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LEASED = sa.text("locked_by IS NOT NULL")
_LEAD_INDEXES = {
    "ix_leads_mid_owner_seq": ["mid", "owner", "seq"],
    "ix_leads_mid_lead_pool_seq": ["mid", "lead_pool", "seq"],
    "ix_leads_mid_life_status_seq": ["mid", "life_status", "seq"],
    "ix_leads_mid_voided_seq": ["mid", "voided", "seq"],
}
_EVENT_INDEXES = {
    "ix_events_mid_entity_id_seq": ["mid", "entity_id", "seq"],
    "ix_events_mid_event_type_seq": ["mid", "event_type", "seq"],
}
_CIRCUIT = ("circuit_opened_at", "circuit_retry_at", "circuit_cooldown", "circuit_probe_until")


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("circuit_failures", sa.Integer(), server_default="0", nullable=False)
        )
        for name in _CIRCUIT:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_subscription_status_seq",
            ["subscription_id", "status", "seq"],
            unique=False,
        )
        batch_op.create_index(
            "ix_deliveries_status_updated_at", ["status", "updated_at"], unique=False
        )
        batch_op.create_index("ix_deliveries_event_seq", ["event_seq"], unique=False)
        batch_op.create_index(
            "ix_deliveries_locked_by",
            ["locked_by"],
            unique=False,
            postgresql_where=_LEASED,
            sqlite_where=_LEASED,
        )

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_create_time", ["create_time"], unique=False)
        for name, columns in _EVENT_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)

    with op.batch_alter_table("leads", schema=None) as batch_op:
        for name, columns in _LEAD_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "purge_counts",
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("last_purge_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name=op.f("pk_purge_counts")),
    )


def downgrade() -> None:
    op.drop_table("purge_counts")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))
    with op.batch_alter_table("leads", schema=None) as batch_op:
        for name in reversed(list(_LEAD_INDEXES)):
            batch_op.drop_index(name)
    with op.batch_alter_table("events", schema=None) as batch_op:
        for name in reversed(list(_EVENT_INDEXES)):
            batch_op.drop_index(name)
        batch_op.drop_index("ix_events_create_time")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_deliveries_locked_by", postgresql_where=_LEASED, sqlite_where=_LEASED
        )
        batch_op.drop_index("ix_deliveries_event_seq")
        batch_op.drop_index("ix_deliveries_status_updated_at")
        batch_op.drop_index("ix_deliveries_subscription_status_seq")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for name in reversed(_CIRCUIT):
            batch_op.drop_column(name)
        batch_op.drop_column("circuit_failures")
