"""Mail limits per recipient and per client address; registrations counted per address.

Revision ID: 0018_mail_and_signup_limits
Revises: 0017_sign_in_sessions
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_mail_and_signup_limits"
down_revision = "0017_sign_in_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Who asked for each mailed link: mails are counted per recipient and per client address.
    op.add_column("mail_tokens", sa.Column("client_address", sa.String(64)))
    op.create_index("mail_tokens_email_idx", "mail_tokens", ["email", "created_at"])
    op.create_index("mail_tokens_client_address_idx", "mail_tokens", ["client_address", "created_at"])
    # Registrations are counted per client address beside the password attempts.
    op.drop_constraint("login_throttle_kind_check", "login_throttle", type_="check")
    op.create_check_constraint(
        "login_throttle_kind_check", "login_throttle", "kind IN ('account', 'address', 'register')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM login_throttle WHERE kind = 'register'")
    op.drop_constraint("login_throttle_kind_check", "login_throttle", type_="check")
    op.create_check_constraint(
        "login_throttle_kind_check", "login_throttle", "kind IN ('account', 'address')"
    )
    op.drop_index("mail_tokens_client_address_idx", table_name="mail_tokens")
    op.drop_index("mail_tokens_email_idx", table_name="mail_tokens")
    op.drop_column("mail_tokens", "client_address")
