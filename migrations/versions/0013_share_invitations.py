"""Share invitations: a project is shared with an address, and reaches the account holding it
only when that account accepts.

Revision ID: 0013_share_invitations
Revises: 0012_append_function
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_share_invitations"
down_revision = "0012_append_function"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_invitations",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("invited_by", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True)),
        sa.Column("accepted_by", sa.Uuid(), sa.ForeignKey("users.id")),
        sa.CheckConstraint("role IN ('viewer', 'editor')", name="project_invitations_role"),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'declined', 'revoked')", name="project_invitations_status"
        ),
    )
    # One open invitation per project and address (inviting again renews it).
    op.create_index(
        "project_invitations_open_key",
        "project_invitations",
        ["project_id", "email"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )
    # The invitee's list: open invitations to an address.
    op.create_index(
        "project_invitations_email_idx",
        "project_invitations",
        ["email", "created_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    # The rate limit: invitations an account sent in the window.
    op.create_index("project_invitations_sender_idx", "project_invitations", ["invited_by", "created_at"])


def downgrade() -> None:
    op.drop_table("project_invitations")
