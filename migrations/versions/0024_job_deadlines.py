"""Job deadlines: ``vto_job.deadline_at`` (the order's ``deadline_s`` after its creation) and
the sweeper's index of open jobs that have one.

Revision ID: 0024_job_deadlines
Revises: 0023_job_queue
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0024_job_deadlines"
down_revision = "0023_job_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE vto_job ADD COLUMN deadline_at timestamptz")
    op.execute(
        "CREATE INDEX vto_job_deadline_idx ON vto_job (deadline_at) "
        "WHERE status = 'queued' AND deadline_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX vto_job_deadline_idx")
    op.execute("ALTER TABLE vto_job DROP COLUMN deadline_at")
