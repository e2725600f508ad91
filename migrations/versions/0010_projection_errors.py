"""A projection's failing event, kept beside its position so every process sees it.

Revision ID: 0010_projection_errors
Revises: 0009_login_throttle
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0010_projection_errors"
down_revision = "0009_login_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written by a runner (in its own transaction) when a batch fails, cleared by its next
    # commit: ``failures`` in a row, the notification it failed on (once isolated), the cause.
    op.execute(
        "ALTER TABLE projection_tracking "
        "ADD COLUMN failures integer NOT NULL DEFAULT 0, "
        "ADD COLUMN failing_position bigint, "
        "ADD COLUMN error text, "
        "ADD COLUMN failing_since timestamptz"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE projection_tracking "
        "DROP COLUMN failures, DROP COLUMN failing_position, DROP COLUMN error, DROP COLUMN failing_since"
    )
