"""Sign-in sessions: one row per refresh-token family, listed and ended by their user.

Revision ID: 0017_sign_in_sessions
Revises: 0016_oauth_states
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_sign_in_sessions"
down_revision = "0016_oauth_states"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("method", sa.String(16)),
        sa.Column("user_agent", sa.String(256)),
        sa.Column("client_address", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("method IN ('password', 'google', 'kakao')", name="sign_in_sessions_method"),
    )
    op.create_index("sign_in_sessions_user_idx", "sign_in_sessions", ["user_id", "created_at", "id"])
    # The sign-ins made before: one session per family, ended unless a token of it still works.
    op.execute(
        "INSERT INTO sign_in_sessions (id, user_id, created_at, last_used_at, expires_at, ended_at) "
        "SELECT family, min(user_id::text)::uuid, min(created_at), max(created_at), max(expires_at), "
        "CASE WHEN bool_or(used_at IS NULL AND revoked_at IS NULL AND expires_at > now()) "
        "THEN NULL ELSE now() END "
        "FROM refresh_tokens GROUP BY family"
    )


def downgrade() -> None:
    op.drop_index("sign_in_sessions_user_idx", table_name="sign_in_sessions")
    op.drop_table("sign_in_sessions")
