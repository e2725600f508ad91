"""Failed-login throttling shared by every API replica.

Revision ID: 0009_login_throttle
Revises: 0008_email_verification
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_login_throttle"
down_revision = "0008_email_verification"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key"),
        sa.CheckConstraint("kind IN ('account', 'address')", name="login_throttle_kind_check"),
        sa.CheckConstraint("failures >= 0", name="login_throttle_failures_check"),
    )
    op.create_index("login_throttle_window_start_idx", "login_throttle", ["window_start"])


def downgrade() -> None:
    op.drop_index("login_throttle_window_start_idx", table_name="login_throttle")
    op.drop_table("login_throttle")
