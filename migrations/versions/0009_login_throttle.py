"""Failed-login throttling shared by every API replica.

Revision ID: 0009_login_throttle
Revises: 0008_email_verification
Create Date: 2026-11-26
"""

from __future__ import annotations

revision = "0009_login_throttle"
down_revision = "0008_email_verification"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
