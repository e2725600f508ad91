"""Stored roles (admin) and share roles (viewer, editor).

Revision ID: 0007_roles_and_share_roles
Revises: 0006_open_jobs_index
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_roles_and_share_roles"
down_revision = "0006_open_jobs_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Granted by the operator (``vto admin add EMAIL``); an email address alone grants nothing.
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.Text(), primary_key=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("granted_by", sa.Text()),
        sa.CheckConstraint("role IN ('admin')", name="user_roles_role"),
    )
    # Existing shares were read-only: they become viewers.
    op.add_column(
        "project_shares",
        sa.Column("role", sa.String(16), nullable=False, server_default="viewer"),
    )
    op.create_check_constraint("project_shares_role", "project_shares", "role IN ('viewer', 'editor')")


def downgrade() -> None:
    op.drop_constraint("project_shares_role", "project_shares", type_="check")
    op.drop_column("project_shares", "role")
    op.drop_table("user_roles")
