"""The ledger's batch append: one statement that appends the events of many commands, each
written only if its stream is still at the version the command decided on.

Revision ID: 0012_append_function
Revises: 0011_job_attempts
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0012_append_function"
down_revision = "0011_job_attempts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Arguments: one element per event, in the order they are to be appended; ``heads`` is,
    # for each event, the version its stream must be at (in the table, before this call) for
    # the event to be written: the version the first command of that stream in the batch
    # decided on. Every event of a stream whose head moved is left out (and every event of
    # that stream after it: a stream passes or fails as a whole), the others are appended in
    # order. The table lock (the same EXCLUSIVE lock eventsourcing's recorder takes) makes the
    # check and the insert atomic against every other writer, and commits notification ids in
    # the order they are issued. Returns the events written with their notification ids.
    op.execute(
        """
        CREATE FUNCTION vto_append_events(
            ids uuid[], versions bigint[], topics text[], states bytea[], heads bigint[]
        ) RETURNS TABLE (originator_id uuid, originator_version bigint, notification_id bigint)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            LOCK TABLE ledger_events IN EXCLUSIVE MODE;
            RETURN QUERY
            INSERT INTO ledger_events AS t (originator_id, originator_version, topic, state)
            SELECT b.id, b.version, b.topic, b.state
            FROM unnest(ids, versions, topics, states, heads)
                WITH ORDINALITY AS b(id, version, topic, state, head, n)
            WHERE b.head = coalesce(
                (SELECT max(e.originator_version) FROM ledger_events e WHERE e.originator_id = b.id), 0)
            ORDER BY b.n
            RETURNING t.originator_id, t.originator_version, t.notification_id;
            IF FOUND THEN
                PERFORM pg_notify('ledger_events', '');
            END IF;
        END;
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION vto_append_events(uuid[], bigint[], text[], bytea[], bigint[])")
