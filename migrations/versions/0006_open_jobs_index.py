"""The sweeper's index: open jobs by creation time, on the jobs read model.

Revision ID: 0006_open_jobs_index
Revises: 0005_job_progress
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006_open_jobs_index"
down_revision = "0005_job_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX vto_job_open_idx ON vto_job (created_at) WHERE status = 'queued'")


def downgrade() -> None:
    op.execute("DROP INDEX vto_job_open_idx")
