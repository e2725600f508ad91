"""API keys for servers: the keys (their SHA-256 only) and the job-order rate limits of the
keys and their accounts (one GCRA row per key and per account, shared by every replica).

Revision ID: 0022_api_keys
Revises: 0021_usage_statements
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0022_api_keys"
down_revision = "0021_usage_statements"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A live key is a row; a revoked key's row is deleted (nothing of it is kept).
    op.execute(
        "CREATE TABLE api_keys ("
        "id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE, "
        "name text NOT NULL, "
        "prefix text NOT NULL, "
        "key_hash bytea NOT NULL UNIQUE, "
        "created_at timestamptz NOT NULL, "
        "last_used_at timestamptz)"
    )
    op.execute("CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at)")
    # GCRA: ``tat`` is the theoretical arrival time (epoch seconds) of the bucket's next order.
    op.execute("CREATE TABLE api_rate_limits (bucket text PRIMARY KEY, tat double precision NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE api_rate_limits")
    op.execute("DROP TABLE api_keys")
