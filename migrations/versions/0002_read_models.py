"""Read models built by the projections, and the projections' tracking positions.

Revision ID: 0002_read_models
Revises: 0001_event_store
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002_read_models"
down_revision = "0001_event_store"
branch_labels = None
depends_on = None

TABLES = (
    "projection_tracking",
    "point_balance",
    "point_usage",
    "point_reservation",
    "vto_job",
    "gallery",
    "project_stats",
)


def upgrade() -> None:
    # Where each projection is in the notification log; updated in the same transaction as
    # the read-model rows it wrote (exactly-once).
    op.execute(
        "CREATE TABLE projection_tracking ("
        "name text PRIMARY KEY, "
        "position bigint NOT NULL DEFAULT 0, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("INSERT INTO projection_tracking (name, position) VALUES ('points', 0), ('jobs', 0)")

    # --- projection "points"
    op.execute(
        "CREATE TABLE point_balance ("
        "user_id uuid PRIMARY KEY, "
        "credits bigint NOT NULL DEFAULT 0, "
        "tickets jsonb NOT NULL DEFAULT '{}'::jsonb, "
        "subscription_plan text, "
        "subscription_period_end timestamptz, "
        "daily_quota integer, "
        "quota_day date, "
        "used_today integer NOT NULL DEFAULT 0, "
        "pending_reservations integer NOT NULL DEFAULT 0, "
        "position bigint NOT NULL, "
        "updated_at timestamptz NOT NULL)"
    )
    op.execute(
        "CREATE TABLE point_usage ("
        "position bigint PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "job_id uuid, "
        "type text NOT NULL, "
        "source text NOT NULL, "
        "amount bigint NOT NULL, "
        "balance_after bigint, "
        "reason text, "
        "created_at timestamptz NOT NULL)"
    )
    op.execute("CREATE INDEX point_usage_user_idx ON point_usage (user_id, position)")
    op.execute("CREATE INDEX point_usage_job_idx ON point_usage (job_id)")
    op.execute(
        "CREATE TABLE point_reservation ("
        "job_id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "source text NOT NULL, "
        "amount bigint NOT NULL, "
        "quota_day date, "
        "open boolean NOT NULL)"
    )

    # --- projection "jobs"
    op.execute(
        "CREATE TABLE vto_job ("
        "job_id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "project_id text, "
        "kind text NOT NULL, "
        "status text NOT NULL, "
        "charge_source text, "
        "charge_amount bigint, "
        "charged boolean, "
        "refund_source text, "
        "refund_amount bigint, "
        "refund_cause text, "
        "request jsonb, "
        "outputs jsonb NOT NULL DEFAULT '[]'::jsonb, "
        "error jsonb, "
        "idempotency_key text, "
        "created_at timestamptz NOT NULL, "
        "started_at timestamptz, "
        "finished_at timestamptz, "
        "refunded_at timestamptz, "
        "updated_at timestamptz NOT NULL, "
        "position bigint NOT NULL)"
    )
    op.execute("CREATE INDEX vto_job_user_idx ON vto_job (user_id, created_at DESC)")
    op.execute("CREATE INDEX vto_job_project_idx ON vto_job (project_id, created_at DESC)")
    op.execute(
        "CREATE TABLE gallery ("
        "job_id uuid NOT NULL, "
        "output_index integer NOT NULL, "
        "project_id text, "
        "user_id uuid NOT NULL, "
        "storage_key text, "
        "media_type text, "
        "width integer, "
        "height integer, "
        "duration double precision, "
        "size bigint, "
        "created_at timestamptz NOT NULL, "
        "position bigint NOT NULL, "
        "PRIMARY KEY (job_id, output_index))"
    )
    op.execute("CREATE INDEX gallery_project_idx ON gallery (project_id, position DESC, output_index)")
    op.execute(
        "CREATE TABLE project_stats ("
        "project_id text PRIMARY KEY, "
        "image_count bigint NOT NULL DEFAULT 0, "
        "video_count bigint NOT NULL DEFAULT 0)"
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}")
