"""The worker's attempts at each job, counted durably, and the outcome it reached.

Revision ID: 0011_job_attempts
Revises: 0010_projection_errors
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0011_job_attempts"
down_revision = "0010_projection_errors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Upserted by a worker before each attempt (``attempts`` + 1), so the count survives a
    # crash; ``result`` (and ``dead_letter``) is written before they are published, so a
    # redelivered request republishes them instead of generating again.
    op.execute(
        "CREATE TABLE job_attempts ("
        "job_id uuid PRIMARY KEY, "
        "attempts integer NOT NULL DEFAULT 0, "
        "last_error jsonb, "
        "result jsonb, "
        "dead_letter jsonb, "
        "created_at timestamptz NOT NULL DEFAULT now(), "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE job_attempts")
