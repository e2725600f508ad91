"""Queries of the job read models (vto_job, job_progress, gallery): rows, no shaping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, text
from sqlalchemy.orm import Session

from command_api.own_reads import own_read
from command_api.pagination import Key
from ledger.status import JobStatus

# A queued job with progress reported by a worker is running (job_progress is kept by the
# pipeline's progress recorder; the ledger's events decide every other status).
SHOWN_STATUS = (
    f"CASE WHEN j.status = '{JobStatus.QUEUED}' AND p.job_id IS NOT NULL THEN '{JobStatus.RUNNING}' "
    "ELSE j.status END"
)
JOB_COLUMNS = (
    f"j.*, {SHOWN_STATUS} AS shown_status, coalesce(j.started_at, p.started_at) AS shown_started_at, "
    "p.progress"
)
JOB_FROM = "vto_job j LEFT JOIN job_progress p ON p.job_id = j.job_id"


def _select(
    what: str, where: list[str], order: str, params: dict[str, Any], limit: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """``SELECT what WHERE ... ORDER BY ... LIMIT`` from fixed fragments (values are bound)."""
    sql = f"SELECT {what} WHERE {' AND '.join(where)} ORDER BY {order}"
    if limit is not None:
        sql, params = f"{sql} LIMIT :limit", {**params, "limit": limit}
    return text(sql), params


# The caller's reads with their token state (``own_reads``): a job by id; a project's gallery
# page, with ``found`` only when the caller may read the project (the owner or a shared user).
# A job by id carries its place in the queue (``QUEUE``'s counts for it alone) when it is shown
# queued, so that a poll of a queued job is one statement too; ``q_segment`` is null otherwise
# (the counts are not made: a ``SELECT`` whose ``WHERE`` is false evaluates nothing).
_QUEUE_OF_ONE = (
    "SELECT (SELECT count(*) FROM (SELECT FROM vto_job q WHERE q.status = 'queued' "
    "    AND (q.created_at, q.job_id) < (j.created_at, j.job_id) LIMIT :cap) s) AS q_segment, "
    "  (SELECT count(*) FROM job_progress o JOIN vto_job q ON q.job_id = o.job_id "
    "    WHERE o.open AND q.status = 'queued' "
    "    AND (q.created_at, q.job_id) < (j.created_at, j.job_id)) AS q_started_ahead, "
    "  (SELECT count(*) FROM job_progress r "
    "    WHERE r.started_at >= now() - make_interval(secs => :window)) AS q_started_recently "
    "WHERE j.status = 'queued' AND p.job_id IS NULL"
)
OWN_JOB = own_read(
    f"SELECT {JOB_COLUMNS}, qa.*, true AS found FROM {JOB_FROM} "  # noqa: S608
    f"LEFT JOIN LATERAL ({_QUEUE_OF_ONE}) qa ON true WHERE j.job_id = :job"
)
OWN_GALLERY = own_read(
    "SELECT g.*, true AS found FROM projects p "
    "LEFT JOIN LATERAL (SELECT * FROM gallery x WHERE x.project_id = CAST(p.id AS text) "
    "  AND (CAST(:after_position AS bigint) IS NULL OR x.position < :after_position "
    "       OR (x.position = :after_position AND x.output_index > :after_index)) "
    "  ORDER BY x.position DESC, x.output_index LIMIT :limit) g ON true "
    "WHERE p.id = :project AND (p.owner_id = :caller OR EXISTS "
    "  (SELECT 1 FROM project_shares s WHERE s.project_id = p.id AND s.user_id = :caller))"
)


def job_row(session: Session | Connection, job_id: uuid.UUID) -> RowMapping | None:
    query, params = _select(f"{JOB_COLUMNS} FROM {JOB_FROM}", ["j.job_id = :j"], "j.job_id", {"j": job_id})
    return session.execute(query, params).mappings().first()


def job_rows(
    session: Session,
    *,
    user_id: uuid.UUID,
    project_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    before: Key | None,
) -> list[RowMapping]:
    """The user's jobs, newest first: at most ``limit`` rows before the key ``before``."""
    where: list[str] = ["j.user_id = :u"]
    params: dict[str, Any] = {"u": user_id}
    if project_id is not None:
        where.append("j.project_id = :p")
        params["p"] = str(project_id)
    if status is not None:
        where.append(f"({SHOWN_STATUS}) = :s")
        params["s"] = status
    if before is not None:
        where.append("(j.created_at, j.job_id) < (:bc, :bj)")
        params["bc"], params["bj"] = before
    query, params = _select(
        f"{JOB_COLUMNS} FROM {JOB_FROM}", where, "j.created_at DESC, j.job_id DESC", params, limit
    )
    return list(session.execute(query, params).mappings())


# The queue (docs/job-api.md, "Queue position"). "Ahead" is acceptance order, ``(created_at,
# job_id)``, over every partition and worker: one consumer group serves every job. For the
# queued jobs ``:ids``/``:created`` (sorted by that key), in one statement (one snapshot):
# - ``segment``: the entries of ``vto_job_queue_idx`` from the previous job's key (included;
#   the queue's head for the first) to this job's (excluded), so that the cumulative sum is
#   the count of queued jobs ahead, and a page of jobs costs one scan of the queue up to its
#   newest job, not one per job;
# - ``started_ahead``: of those, the ones a worker started (a progress row: shown running),
#   found among the progress rows still ``open`` (migration 0023; the sweeper closes those of
#   finished jobs), a few rows, not the table;
# - ``started_recently``: the jobs started in the throughput window.
QUEUE = text(
    "SELECT k.job_id, "
    "  (SELECT count(*) FROM (SELECT FROM vto_job q WHERE q.status = 'queued' "
    "    AND (q.created_at, q.job_id) >= (k.prev_created, k.prev_id) "
    "    AND (q.created_at, q.job_id) < (k.created_at, k.job_id) LIMIT :cap) s) AS segment, "
    "  (SELECT count(*) FROM job_progress p JOIN vto_job q ON q.job_id = p.job_id "
    "    WHERE p.open AND q.status = 'queued' "
    "    AND (q.created_at, q.job_id) < (k.created_at, k.job_id)) AS started_ahead, "
    "  (SELECT count(*) FROM job_progress p "
    "    WHERE p.started_at >= now() - make_interval(secs => :window)) AS started_recently "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:created AS timestamptz[]), "
    "  CAST(:prev_ids AS uuid[]), CAST(:prev_created AS timestamptz[])) "
    "  AS k(job_id, created_at, prev_id, prev_created)"
)
_HEAD = (uuid.UUID(int=0), datetime(1, 1, 1, tzinfo=UTC))  # before every key


def queue_rows(
    conn: Session | Connection, jobs: list[tuple[uuid.UUID, datetime]], window_s: float, cap: int
) -> dict[uuid.UUID, tuple[int, int, bool]]:
    """For queued ``jobs`` (``(job_id, created_at)`` pairs): ``(ahead, started_recently,
    exact)`` by job id, ``ahead`` being how many queued jobs that have not started are before
    it. Each segment's count stops at ``cap``: once the jobs counted ahead reach ``cap`` the
    count is a lower bound (``exact`` false) and no segment was cut before that, so a poll
    reads at most ``cap`` index entries per job however long the queue is."""
    if not jobs:
        return {}
    keys = sorted(jobs, key=lambda job: (job[1], job[0]))
    prev = [_HEAD, *keys[:-1]]
    params = {
        "ids": [j for j, _ in keys],
        "created": [c for _, c in keys],
        "prev_ids": [j for j, _ in prev],
        "prev_created": [c for _, c in prev],
        "window": window_s,
        "cap": cap,
    }
    rows = {row["job_id"]: row for row in conn.execute(QUEUE, params).mappings()}
    found, queued = {}, 0
    for job_id, _ in keys:
        row = rows[job_id]
        queued += row["segment"]
        found[job_id] = queue_place(queued, row["started_ahead"], row["started_recently"], cap)
    return found


def queue_place(queued: int, started_ahead: int, started_recently: int, cap: int) -> tuple[int, int, bool]:
    """``(ahead, started_recently, exact)`` of a job with ``queued`` jobs before it in the
    queue index (counted up to ``cap``), ``started_ahead`` of which a worker started."""
    return max(queued - started_ahead, 0), started_recently, queued < cap


# The live event streams (``command_api/vto/live.py``): the jobs they watch, read in one
# statement for all of a process's streams (psycopg parameters: the hub's own connection).
WATCHED_JOBS = f"SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.job_id = ANY(%s)"  # noqa: S608

# The per-account limit on open streams, over every replica (table ``job_event_streams``): a
# stream's row counts while its process renews ``seen_at``. Taken under the account's
# advisory lock, in a transaction, so concurrent opens cannot both take the last slot.
STREAM_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('job_event_streams:' || %s::text, 0))"
STREAM_TAKE = (
    "INSERT INTO job_event_streams (id, user_id, job_id) SELECT %(id)s, %(user)s, %(job)s "
    "WHERE (SELECT count(*) FROM job_event_streams WHERE user_id = %(user)s "
    "       AND seen_at > now() - make_interval(secs => %(stale)s)) < %(limit)s "
    "RETURNING id"
)
STREAM_RENEW = "UPDATE job_event_streams SET seen_at = now() WHERE id = ANY(%s)"
STREAM_RELEASE = "DELETE FROM job_event_streams WHERE id = ANY(%s)"
# Rows of streams whose process died (not renewed for an hour): deleted by any hub.
STREAM_PRUNE = "DELETE FROM job_event_streams WHERE seen_at < now() - interval '1 hour'"


def take_stream_slot(
    conn: Connection, stream_id: uuid.UUID, user_id: uuid.UUID, job_id: uuid.UUID, limit: int, stale_s: float
) -> bool:
    """Record an open stream of ``user_id`` unless it holds ``limit`` live ones already."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.transaction():
        raw.execute(STREAM_LOCK, (user_id,))
        taken = raw.execute(
            STREAM_TAKE,
            {"id": stream_id, "user": user_id, "job": job_id, "stale": stale_s, "limit": limit},
        ).fetchone()
    return taken is not None
