"""OAuth states used up by a sign-in (single use, across API replicas).

Revision ID: 0016_oauth_states
Revises: 0015_canonical_emails
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_oauth_states"
down_revision = "0015_canonical_emails"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("oauth_states_used_at_idx", "oauth_states", ["used_at"])


def downgrade() -> None:
    op.drop_index("oauth_states_used_at_idx", table_name="oauth_states")
    op.drop_table("oauth_states")
