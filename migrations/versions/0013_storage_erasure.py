"""Erasure of stored objects: the objects of deleted catalog rows wait here until no job can
need them, and ``users.erased_at`` marks a deleted account whose objects are gone.

Revision ID: 0013_storage_erasure
Revises: 0012_share_invitations
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_storage_erasure"
down_revision = "0012_share_invitations"
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
    op.add_column("users", sa.Column("erased_at", sa.DateTime(timezone=True)))
    # The sweeper's candidates: deleted accounts whose objects are not yet erased.
    op.create_index(
        "users_to_erase_idx",
        "users",
        ["deleted_at"],
        postgresql_where=sa.text("deleted_at IS NOT NULL AND erased_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("users_to_erase_idx", table_name="users")
    op.drop_column("users", "erased_at")
    op.drop_table("storage_erasures")
