"""Queries of the job read models (vto_job, job_progress, gallery): rows, no shaping."""

from __future__ import annotations

import uuid
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
OWN_JOB = own_read(f"SELECT {JOB_COLUMNS}, true AS found FROM {JOB_FROM} WHERE j.job_id = :job")  # noqa: S608
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
