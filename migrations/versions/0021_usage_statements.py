"""Statements of usage: each ``point_usage`` line that grants a lot records the lot's category
(``paid``, ``promotional``), and indexes for a user's lines by time (``GET /points/statement``),
per source (its balance at an instant) and everyone's by time (``GET /admin/usage``); the
tables of balance alerts (``PUT /points/alerts``, ``pipeline.balance_alerts``).

The lines written before this migration get their category from what the ledger granted
then: every lot was ``paid`` (a grant of credits or tickets, a positive adjustment).
``vto ledger rebuild points`` recomputes every line from the events, and ``vto ledger audit``
compares them.

Revision ID: 0021_usage_statements
Revises: 0020_point_lots
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0021_usage_statements"
down_revision = "0020_point_lots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE point_usage ADD COLUMN category text")
    op.execute(
        "UPDATE point_usage SET category = 'paid' "
        "WHERE (type = 'grant' AND source <> 'subscription') OR (type = 'adjustment' AND amount > 0)"
    )
    op.execute("CREATE INDEX point_usage_user_time_idx ON point_usage (user_id, created_at, position)")
    op.execute(
        "CREATE INDEX point_usage_user_source_time_idx ON point_usage (user_id, source, created_at, position)"
    )
    op.execute("CREATE INDEX point_usage_time_idx ON point_usage (created_at)")
    # Balance alerts (``pipeline.balance_alerts``): each account's thresholds per source, and
    # one row per crossing (its id derived from the line that crossed: made once whatever the
    # restarts), with its mail's delivery. The follower's position: projection_tracking row
    # ``balance_alerts``, made when it first runs.
    op.execute(
        "CREATE TABLE balance_alert_thresholds ("
        "user_id uuid NOT NULL, "
        "source text NOT NULL, "
        "below bigint NOT NULL CHECK (below > 0), "
        "updated_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (user_id, source))"
    )
    op.execute(
        "CREATE TABLE balance_alerts ("
        "id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "source text NOT NULL, "
        "below bigint NOT NULL, "
        "balance bigint NOT NULL, "
        "position bigint NOT NULL, "
        "event_at timestamptz NOT NULL, "
        "webhook_message_id uuid, "
        "mailed_at timestamptz, "
        "mail_attempts integer NOT NULL DEFAULT 0, "
        "created_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX balance_alerts_user_idx ON balance_alerts (user_id, position)")
    op.execute(
        "CREATE INDEX balance_alerts_unmailed_idx ON balance_alerts (position) WHERE mailed_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DELETE FROM projection_tracking WHERE name = 'balance_alerts'")
    op.execute("DROP TABLE balance_alerts")
    op.execute("DROP TABLE balance_alert_thresholds")
    op.execute("DROP INDEX point_usage_time_idx")
    op.execute("DROP INDEX point_usage_user_source_time_idx")
    op.execute("DROP INDEX point_usage_user_time_idx")
    op.execute("ALTER TABLE point_usage DROP COLUMN category")
