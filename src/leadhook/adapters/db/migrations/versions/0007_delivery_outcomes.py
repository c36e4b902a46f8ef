"""delivery outcome counters for /metrics

What the delivery loops did (attempts delivered, failed or turned away by an open circuit,
deliveries gone dead, circuits opened) was known only to the process that delivered, which
serves no HTTP: `/metrics` had no counter of it. Each record now adds its counts here in its
own transaction, and the API's `/metrics` sums them at each scrape.

A row per outcome and slot (a hash of the worker's id into 16), updated as the last statement
of a record: workers sharing a slot on PostgreSQL wait at most for each other's COMMIT, and the
table holds a few dozen rows at most.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_outcomes",
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", "slot", name=op.f("pk_delivery_outcomes")),
    )


def downgrade() -> None:
    op.drop_table("delivery_outcomes")
