"""Erasure of stored objects: the objects of deleted catalog rows wait here until no job can
need them, and ``erased_accounts`` lists the deleted accounts whose objects are gone.

Revision ID: 0014_storage_erasure
Revises: 0013_share_invitations
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_storage_erasure"
down_revision = "0013_share_invitations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_erasures",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("erase_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("storage_erasures_due_idx", "storage_erasures", ["erase_after"])
    # A table of its own rather than a column of ``users`` (the API's model of it stays as it is).
    op.create_table(
        "erased_accounts",
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("objects", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erased_accounts")
    op.drop_table("storage_erasures")
