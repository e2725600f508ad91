"""The event store of the ledger (eventsourcing's PostgreSQL schema).

Revision ID: 0001_event_store
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0001_event_store"
down_revision = None
branch_labels = None
depends_on = None

AUTOVACUUM = (
    "WITH (autovacuum_enabled = true, autovacuum_vacuum_threshold = 100000000, "
    "autovacuum_vacuum_scale_factor = 0.5, autovacuum_analyze_threshold = 1000, "
    "autovacuum_analyze_scale_factor = 0.01)"
)


def upgrade() -> None:
    # The composite type eventsourcing's recorder inserts through (unnest of an array).
    op.execute(
        "CREATE TYPE stored_event_uuid AS "
        "(originator_id uuid, originator_version bigint, topic text, state bytea)"
    )
    # Every event of every account; (originator_id, originator_version) is the optimistic
    # concurrency guard, notification_id the total order followed by projections.
    op.execute(
        "CREATE TABLE ledger_events ("
        "originator_id uuid NOT NULL, "
        "originator_version bigint NOT NULL, "
        "topic text, "
        "state bytea, "
        "notification_id bigserial, "
        f"PRIMARY KEY (originator_id, originator_version)) {AUTOVACUUM}"
    )
    op.execute("CREATE UNIQUE INDEX ledger_events_notification_id_idx ON ledger_events (notification_id ASC)")
    # Snapshots of accounts, so that loading one is O(1) in the length of its history.
    op.execute(
        "CREATE TABLE ledger_snapshots ("
        "originator_id uuid NOT NULL, "
        "originator_version bigint NOT NULL, "
        "topic text, "
        "state bytea, "
        f"PRIMARY KEY (originator_id, originator_version)) {AUTOVACUUM}"
    )


def downgrade() -> None:
    op.execute("DROP TABLE ledger_snapshots")
    op.execute("DROP TABLE ledger_events")
    op.execute("DROP TYPE stored_event_uuid")
