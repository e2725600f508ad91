"""The job queue as the API shows it: queue positions and ETAs cheap enough for every poll,
progress changes NOTIFYed for the live event streams, and the open streams per account.

Revision ID: 0023_job_queue
Revises: 0022_api_keys
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0023_job_queue"
down_revision = "0022_api_keys"
branch_labels = None
depends_on = None

# NOTIFYed (payload: the job id) on every write of job_progress: the API's live event streams
# (command_api/vto/live.py) listen to it beside ``projection_tracking``.
PROGRESS_CHANNEL = "job_progress"


def upgrade() -> None:
    # Queued jobs in acceptance order: a job's queue position counts the entries before its
    # own (``command_api/vto/repository.py`` QUEUE). A rebuild's twin tables copy it.
    op.execute("CREATE INDEX vto_job_queue_idx ON vto_job (created_at, job_id) WHERE status = 'queued'")
    # It replaces 0006's ``(created_at) WHERE status = 'queued'`` (the sweeper's, served as well
    # by this one's leading column), which the planner would otherwise pick for the count and
    # read the table's rows. Found by its definition: a rebuild's twin tables renamed it.
    op.execute(
        "DO $$ DECLARE name text; BEGIN "
        "FOR name IN SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'vto_job' AND indexdef LIKE '%(created_at) WHERE (status = ''queued''::text)' "
        "LOOP EXECUTE format('DROP INDEX %I', name); END LOOP; END $$"
    )
    # The queued jobs that started already: progress rows stay ``open`` until the sweeper
    # sees their job finished (a few rows: the running jobs), and the throughput window (the
    # jobs started recently).
    op.execute("ALTER TABLE job_progress ADD COLUMN open boolean NOT NULL DEFAULT true")
    op.execute(
        "UPDATE job_progress p SET open = false FROM vto_job j "
        "WHERE j.job_id = p.job_id AND j.status <> 'queued'"
    )
    op.execute("CREATE INDEX job_progress_open_idx ON job_progress (job_id) WHERE open")
    op.execute("CREATE INDEX job_progress_started_idx ON job_progress (started_at)")
    op.execute(
        "CREATE FUNCTION job_progress_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{PROGRESS_CHANNEL}', NEW.job_id::text); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER job_progress_notify AFTER INSERT OR UPDATE ON job_progress "
        "FOR EACH ROW EXECUTE FUNCTION job_progress_notify()"
    )
    # The open event streams, for the per-account limit across every API replica: a row per
    # stream, its ``seen_at`` renewed by the process that serves it; a row not renewed for a
    # while (its process died) no longer counts.
    op.execute(
        "CREATE TABLE job_event_streams ("
        "id uuid PRIMARY KEY, "
        "user_id uuid NOT NULL, "
        "job_id uuid NOT NULL, "
        "opened_at timestamptz NOT NULL DEFAULT now(), "
        "seen_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX job_event_streams_user_idx ON job_event_streams (user_id, seen_at)")


def downgrade() -> None:
    op.execute("DROP TABLE job_event_streams")
    op.execute("DROP TRIGGER job_progress_notify ON job_progress")
    op.execute("DROP FUNCTION job_progress_notify()")
    op.execute("DROP INDEX job_progress_started_idx")
    op.execute("DROP INDEX job_progress_open_idx")
    op.execute("ALTER TABLE job_progress DROP COLUMN open")
    op.execute("CREATE INDEX vto_job_open_idx ON vto_job (created_at) WHERE status = 'queued'")
    op.execute("DROP INDEX vto_job_queue_idx")
