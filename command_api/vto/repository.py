"""Reads of the job read models (vto_job, gallery)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from command_api.vto.schemas import Charge, GalleryItem, JobOut, OutputOut, Refund
from infra.storage import Storage


def _job(row: Any, storage: Storage, ttl: int) -> JobOut:
    outputs = [
        OutputOut(
            url=storage.signed_url(o["storage_key"], ttl) if o.get("storage_key") else "",
            media_type=o.get("media_type"),
            width=o.get("width"),
            height=o.get("height"),
            duration=o.get("duration"),
        )
        for o in row["outputs"] or []
    ]
    charge = (
        Charge(source=row["charge_source"], amount=row["charge_amount"]) if row["charge_source"] else None
    )
    refund = (
        Refund(source=row["refund_source"], amount=row["refund_amount"], cause=row["refund_cause"])
        if row["refund_source"]
        else None
    )
    return JobOut(
        id=row["job_id"],
        status=row["shown_status"],
        kind=row["kind"],
        project_id=row["project_id"],
        charge=charge,
        refund=refund,
        outputs=outputs,
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["shown_started_at"],
        finished_at=row["finished_at"],
    )


# A queued job with progress reported by a worker is running (job_progress is kept by the
# pipeline's progress recorder; the ledger's events decide every other status).
JOB_COLUMNS = (
    "j.*, CASE WHEN j.status = 'queued' AND p.job_id IS NOT NULL THEN 'running' ELSE j.status END "
    "AS shown_status, coalesce(j.started_at, p.started_at) AS shown_started_at, p.progress"
)
JOB_FROM = "vto_job j LEFT JOIN job_progress p ON p.job_id = j.job_id"


def job_row(session: Session, job_id: uuid.UUID) -> Any:
    return (
        session.execute(
            text(f"SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE j.job_id = :j"),  # noqa: S608 - constants
            {"j": job_id},
        )
        .mappings()
        .first()
    )


def job(session: Session, job_id: uuid.UUID, storage: Storage, ttl: int) -> JobOut | None:
    row = job_row(session, job_id)
    return None if row is None else _job(row, storage, ttl)


def jobs(
    session: Session,
    storage: Storage,
    ttl: int,
    *,
    user_id: uuid.UUID,
    project_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[JobOut]:
    where, params = ["j.user_id = :u"], {"u": user_id, "limit": limit}
    if project_id is not None:
        where.append("j.project_id = :p")
        params["p"] = str(project_id)
    if status is not None:
        where.append(
            "(CASE WHEN j.status = 'queued' AND p.job_id IS NOT NULL THEN 'running' ELSE j.status END) = :s"
        )
        params["s"] = status
    if before is not None:
        where.append("(j.created_at, j.job_id) < (:bc, :bj)")
        params["bc"], params["bj"] = before
    rows = session.execute(
        text(
            f"SELECT {JOB_COLUMNS} FROM {JOB_FROM} WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments
            "ORDER BY j.created_at DESC, j.job_id DESC LIMIT :limit"
        ),
        params,
    ).mappings()
    return [_job(r, storage, ttl) for r in rows]


def gallery(
    session: Session,
    project_id: uuid.UUID,
    storage: Storage,
    ttl: int,
    limit: int,
    after: tuple[int, int] | None,
) -> list[GalleryItem]:
    """Outputs newest job first, a job's outputs in order; ``after`` = (position, index) of
    the last item of the previous page."""
    params: dict[str, Any] = {"p": str(project_id), "limit": limit}
    where = "project_id = :p"
    if after is not None:
        where += " AND (position < :pos OR (position = :pos AND output_index > :idx))"
        params["pos"], params["idx"] = after
    rows = session.execute(
        text(
            f"SELECT * FROM gallery WHERE {where} "  # noqa: S608 - fixed fragments
            "ORDER BY position DESC, output_index LIMIT :limit"
        ),
        params,
    ).mappings()
    return [
        GalleryItem(
            job_id=r["job_id"],
            index=r["output_index"],
            url=storage.signed_url(r["storage_key"], ttl) if r["storage_key"] else "",
            media_type=r["media_type"],
            width=r["width"],
            height=r["height"],
            duration=r["duration"],
            created_at=r["created_at"],
            position=r["position"],
        )
        for r in rows
    ]
