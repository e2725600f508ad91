"""Verified emails, single-use mail tokens (verification, password reset, email change).

Revision ID: 0008_email_verification
Revises: 0007_roles_and_share_roles
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_email_verification"
down_revision = "0007_roles_and_share_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True)))
    # Accounts made by a provider sign-in (no password) were made from the provider's verified
    # email. Password accounts stay unverified: nobody proved their address.
    op.execute(
        "UPDATE users SET email_verified_at = created_at WHERE password_hash IS NULL "
        "AND EXISTS (SELECT 1 FROM oauth_identities o WHERE o.user_id = users.id AND o.email = users.email)"
    )
    # A password change carries the caller's sign-in over to the new token_version.
    op.add_column("refresh_tokens", sa.Column("token_version", sa.Integer()))
    op.create_table(
        "mail_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'reset_password', 'change_email')", name="mail_tokens_purpose"
        ),
    )
    op.create_index("mail_tokens_user_purpose_idx", "mail_tokens", ["user_id", "purpose", "created_at"])


def downgrade() -> None:
    op.drop_index("mail_tokens_user_purpose_idx", table_name="mail_tokens")
    op.drop_table("mail_tokens")
    op.drop_column("refresh_tokens", "token_version")
    op.drop_column("users", "email_verified_at")
