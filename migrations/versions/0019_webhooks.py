"""Signed job webhooks (Standard Webhooks): signing secrets, the jobs that asked for webhooks,
one message per job event with its attempts, and the endpoints that answered 410 Gone.

Revision ID: 0019_webhooks
Revises: 0018_mail_and_signup_limits
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0019_webhooks"
down_revision = "0018_mail_and_signup_limits"
branch_labels = None
depends_on = None

# The webhook dispatcher's follower of the ledger (``pipeline.webhooks.follower``): its row of
# projection_tracking is made when it first runs, as the outbox relay's is.
FOLLOWER = "webhooks"


def upgrade() -> None:
    # One signing secret per account; a rotated one keeps signing until ``expires_at``.
    op.execute(
        "CREATE TABLE webhook_secrets ("
        "id bigserial PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "secret bytea NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now(), "
        "expires_at timestamptz)"
    )
    op.execute(
        "CREATE UNIQUE INDEX webhook_secrets_current_key ON webhook_secrets (user_id) "
        "WHERE expires_at IS NULL"
    )
    op.execute("CREATE INDEX webhook_secrets_user_idx ON webhook_secrets (user_id, expires_at)")
    # The jobs whose request named a webhook (from their JobRequested event), and what of
    # their progress has been turned into messages already.
    op.execute(
        "CREATE TABLE webhook_jobs ("
        "job_id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "url text NOT NULL, "
        "events text[] NOT NULL, "
        "requested_at timestamptz NOT NULL, "
        "position bigint NOT NULL, "
        "open boolean NOT NULL DEFAULT true, "
        "watch boolean NOT NULL, "
        "started boolean NOT NULL DEFAULT false, "
        "progress_sent double precision NOT NULL DEFAULT 0, "
        "progress_sent_at timestamptz, "
        "progress_events integer NOT NULL DEFAULT 0)"
    )
    op.execute("CREATE INDEX webhook_jobs_watched_idx ON webhook_jobs (job_id) WHERE open AND watch")
    # One message per job event; ``id`` is derived from (job, type, key), so the webhook-id
    # (``msg_<id hex>``) is the same on every attempt and after any restart.
    op.execute(
        "CREATE TABLE webhook_messages ("
        "id uuid PRIMARY KEY, "
        "job_id uuid NOT NULL, "
        "user_id uuid NOT NULL, "
        "event_type text NOT NULL, "
        "event_key text NOT NULL, "
        "url text NOT NULL, "
        "event_at timestamptz NOT NULL, "
        "requested_at timestamptz NOT NULL, "
        "position bigint NOT NULL DEFAULT 0, "
        "body text, "
        "state text NOT NULL DEFAULT 'pending' "
        "  CHECK (state IN ('pending', 'delivered', 'failed', 'stopped')), "
        "attempts integer NOT NULL DEFAULT 0, "
        "next_attempt_at timestamptz NOT NULL, "
        "leased_until timestamptz, "
        "redeliver_requested_at timestamptz, "
        "created_at timestamptz NOT NULL DEFAULT now(), "
        "finished_at timestamptz, "
        "UNIQUE (job_id, event_type, event_key))"
    )
    op.execute(
        "CREATE INDEX webhook_messages_pending_idx ON webhook_messages (user_id, next_attempt_at) "
        "WHERE state = 'pending'"
    )
    op.execute(
        "CREATE INDEX webhook_messages_due_idx ON webhook_messages (next_attempt_at) WHERE state = 'pending'"
    )
    op.execute(
        "CREATE INDEX webhook_messages_redeliver_idx ON webhook_messages (redeliver_requested_at) "
        "WHERE redeliver_requested_at IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX webhook_messages_finished_idx ON webhook_messages (finished_at) "
        "WHERE state <> 'pending'"
    )
    op.execute(
        "CREATE TABLE webhook_attempts ("
        "id bigserial PRIMARY KEY, "
        "message_id uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE, "
        "attempted_at timestamptz NOT NULL, "
        "status_code integer, "
        "duration_ms integer NOT NULL, "
        "error text, "
        "response_body text, "
        "manual boolean NOT NULL DEFAULT false)"
    )
    op.execute("CREATE INDEX webhook_attempts_message_idx ON webhook_attempts (message_id, attempted_at)")
    op.execute(
        "CREATE TABLE webhook_endpoints_gone ("
        "user_id uuid NOT NULL, "
        "url text NOT NULL, "
        "gone_at timestamptz NOT NULL, "
        "PRIMARY KEY (user_id, url))"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM projection_tracking WHERE name = '{FOLLOWER}'")  # the follower's row, if made
    op.execute("DROP TABLE webhook_endpoints_gone")
    op.execute("DROP TABLE webhook_attempts")
    op.execute("DROP TABLE webhook_messages")
    op.execute("DROP TABLE webhook_jobs")
    op.execute("DROP TABLE webhook_secrets")
