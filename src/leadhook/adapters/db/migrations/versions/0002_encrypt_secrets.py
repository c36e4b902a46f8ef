"""encrypt webhook secrets at rest

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:30:00

Widens the secret columns for ciphertexts, adds the key check table and encrypts every
plaintext secret with the key `leadhook.adapters.db.migrate.upgrade` passes in
(`config.attributes["secret_box"]`). Run without a key (the bare `alembic` command), it
refuses when there are secrets to encrypt: start leadhook instead, which knows its key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from leadhook.adapters.db.keycheck import CHECK_PLAINTEXT

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PREFIX = "fernet:"


def _box(purpose: str) -> Any:
    box = context.config.attributes.get("secret_box")
    if box is None:
        raise RuntimeError(
            f"migration 0002 needs the secret key to {purpose} the stored webhook secrets:"
            " run it by starting leadhook (serve or worker), not with the alembic command"
        )
    return box


def _rewrite(convert: Any, needs: Any, purpose: str) -> Any:
    subs = sa.table(
        "subscriptions",
        sa.column("id", sa.String),
        sa.column("secret", sa.String),
        sa.column("previous_secret", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(subs.c.id, subs.c.secret, subs.c.previous_secret)).all()
    todo = [r for r in rows if needs(r.secret) or (r.previous_secret and needs(r.previous_secret))]
    if not todo:
        return None
    box = _box(purpose)
    for row in todo:
        conn.execute(
            subs.update()
            .where(subs.c.id == row.id)
            .values(
                secret=convert(box, row.secret),
                previous_secret=None
                if row.previous_secret is None
                else convert(box, row.previous_secret),
            )
        )
    return box


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=128),
            type_=sa.String(length=512),
            existing_nullable=False,
        )
        batch_op.alter_column(
            "previous_secret",
            existing_type=sa.String(length=128),
            type_=sa.String(length=512),
            existing_nullable=True,
        )
    op.create_table(
        "key_check",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_check")),
    )
    box = _rewrite(
        lambda box, value: value if value.startswith(_PREFIX) else box.encrypt(value),
        lambda value: not value.startswith(_PREFIX),
        "encrypt",
    )
    if box is not None:
        # The key's check value in the same transaction as the secrets it encrypted: written
        # later (at start), a second process upgrading at once with another key could write
        # its own in between and leave the secrets under one key, the check under the other.
        check = sa.table("key_check", sa.column("id", sa.Integer), sa.column("token", sa.Text))
        op.get_bind().execute(check.insert().values(id=1, token=box.encrypt(CHECK_PLAINTEXT)))


def downgrade() -> None:
    _rewrite(
        lambda box, value: box.decrypt(value), lambda value: value.startswith(_PREFIX), "decrypt"
    )
    op.drop_table("key_check")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.alter_column(
            "previous_secret",
            existing_type=sa.String(length=512),
            type_=sa.String(length=128),
            existing_nullable=True,
        )
        batch_op.alter_column(
            "secret",
            existing_type=sa.String(length=512),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
