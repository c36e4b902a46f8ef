"""the retention horizon kept in the database

Which events retention had purged was read from each process's own
`LEADHOOK_EVENT_RETENTION`: a consumer resuming `GET /v1/events?after=` from a purged event
got a 400 from an API process started without the setting, though the worker that purged had
it (an operator's review). Each purge now keeps, beside its counts, the newest time it purged
rows before (`horizon`), and the API resumes from it whatever its own settings. Rows of
purges made before it start at their last purge's time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("purge_counts") as batch:
        batch.add_column(sa.Column("horizon", sa.Float(), nullable=True))
    # Purges made before this migration kept no horizon; the last of them is the nearest
    # bound known, later than the real one (a purge deletes rows older than its horizon): the
    # API then resumes a purged `after` at once, and replay-missing sends nothing its
    # retention may have purged the delivered rows of (an upgrade's review found both).
    op.execute("UPDATE purge_counts SET horizon = last_purge_at WHERE horizon IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("purge_counts") as batch:
        batch.drop_column("horizon")
