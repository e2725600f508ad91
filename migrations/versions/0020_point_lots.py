"""Lots: the ``point_lot`` read model (each grant of credits or tickets, what it has left and
when it expires) and ``signup_credit_grants`` (the sign-up credits granted, once per account
and once per address).

Revision ID: 0020_point_lots
Revises: 0019_webhooks
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0020_point_lots"
down_revision = "0019_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- projection "points": one row per lot (``ledger.lots``), keyed by the user and the
    # lot's id (the stream version of the event that granted it).
    op.execute(
        "CREATE TABLE point_lot ("
        "user_id uuid NOT NULL, "
        "lot_id bigint NOT NULL, "
        "source text NOT NULL, "
        "category text NOT NULL, "
        "expires_at timestamptz, "
        "granted_at timestamptz NOT NULL, "
        "granted bigint NOT NULL, "
        "remaining bigint NOT NULL, "
        "PRIMARY KEY (user_id, lot_id))"
    )
    # The sweeper's question: whose lots with points left have come to their expiry.
    op.execute(
        "CREATE INDEX point_lot_due_idx ON point_lot (expires_at) "
        "WHERE remaining > 0 AND expires_at IS NOT NULL"
    )
    # Sign-up credits granted: one row per account and per address (the SHA-256 of its
    # canonical form), kept after the account is deleted so that the address never earns them
    # twice.
    op.execute(
        "CREATE TABLE signup_credit_grants ("
        "email_sha256 text PRIMARY KEY, "
        "user_id uuid NOT NULL UNIQUE, "
        "amount bigint NOT NULL, "
        "expires_at timestamptz, "
        "granted_at timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE signup_credit_grants")
    op.execute("DROP TABLE point_lot")
