"""Stored roles (admin) and share roles (viewer, editor).

Revision ID: 0007_roles_and_share_roles
Revises: 0006_open_jobs_index
Create Date: 2026-11-26
"""

from __future__ import annotations

revision = "0007_roles_and_share_roles"
down_revision = "0006_open_jobs_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
