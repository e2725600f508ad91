"""Verified emails, single-use mail tokens (verification, password reset, email change).

Revision ID: 0008_email_verification
Revises: 0007_roles_and_share_roles
Create Date: 2026-11-26
"""

from __future__ import annotations

revision = "0008_email_verification"
down_revision = "0007_roles_and_share_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
