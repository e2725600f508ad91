"""Job rules: what a job request records, who may read or cancel a job; job and gallery bodies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from command_api.catalog.access import readable_project
from command_api.catalog.job_inputs import load_job_inputs
from command_api.catalog.media import UrlSigner
from command_api.pagination import Page, cut, decode
from command_api.problems import DomainError, NotFound
from command_api.vto import repository
from command_api.vto.schemas import Charge, GalleryItem, JobIn, JobOut
from ledger.account import Reservation
from ledger.status import JobStatus


class JobFinished(DomainError):
    status, code = 409, "job_finished"


def job_request(session: Session, user_id: uuid.UUID, body: JobIn) -> dict[str, Any]:
    """The job as the ledger records it (and the relay publishes it): the client's choices
    and the storage keys of its inputs, after checking the caller may use each of them.
    Deterministic for a given body, so an idempotent retry fingerprints the same."""
    found = load_job_inputs(
        session, user_id, body.project_id, body.product_ids, body.model_asset_id, body.background_asset_id
    )
    inputs = {
        "model": found["model"]["storage_key"],
        "background": found["background"]["storage_key"] if found["background"] else None,
        "garments": [
            {"key": p["storage_key"], "category": p["category"], "side": p["side"]} for p in found["products"]
        ],
    }
    return {
        "project_id": str(body.project_id),
        "product_ids": [str(p) for p in body.product_ids],
        "model_asset_id": str(body.model_asset_id),
        "background_asset_id": str(body.background_asset_id) if body.background_asset_id else None,
        "pose": body.pose.value,
        "options": body.options.model_dump(),
        "inputs": inputs,
    }


def job_from_reservation(reservation: Reservation, body: JobIn) -> JobOut:
    return JobOut(
        id=reservation.job_id,
        status=JobStatus.QUEUED,
        kind=reservation.kind,
        project_id=str(body.project_id),
        charge=Charge(source=reservation.source, amount=reservation.amount),
        created_at=datetime.now(UTC),
    )


def may_read_job(session: Session, user_id: uuid.UUID, row: Any) -> bool:
    """The requester, or a reader of the job's project."""
    if row["user_id"] == user_id:
        return True
    try:
        readable_project(session, user_id, uuid.UUID(str(row["project_id"])))
    except (ValueError, NotFound):
        return False
    return True


def job(session: Session, job_id: uuid.UUID, sign: UrlSigner) -> JobOut | None:
    """The job as the read model has it (None: not there yet)."""
    row = repository.job_row(session, job_id)
    return None if row is None else JobOut.of(row, sign)


def readable_job(session: Session, user_id: uuid.UUID, job_id: uuid.UUID, sign: UrlSigner) -> JobOut:
    """The job, for its requester or a reader of its project; ``NotFound`` for anyone else."""
    row = repository.job_row(session, job_id)
    if row is None or not may_read_job(session, user_id, row):
        raise NotFound("job")
    return JobOut.of(row, sign)


def check_cancellable(session: Session, user_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Only the requester cancels a job; ``NotFound`` for anyone else."""
    row = repository.job_row(session, job_id)
    if row is None or row["user_id"] != user_id:
        raise NotFound("job")


def check_canceled(job: JobOut, canceled_now: bool) -> None:
    """``JobFinished`` (409) unless the cancel took effect (now or by an earlier request)."""
    if not canceled_now and job.status != JobStatus.CANCELED:
        raise JobFinished(f"the job already finished ({job.status})")


def jobs_page(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    sign: UrlSigner,
) -> Page[JobOut]:
    """The caller's jobs, newest first, by ``(created_at, id)``."""
    rows = repository.job_rows(
        session,
        user_id=user_id,
        project_id=project_id,
        status=status,
        limit=limit + 1,
        before=decode(cursor, datetime, uuid.UUID),
    )
    items, next_cursor = cut(rows, limit, lambda row: (row["created_at"], row["job_id"]))
    return Page[JobOut](items=[JobOut.of(row, sign) for row in items], next_cursor=next_cursor)


def gallery_page(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    sign: UrlSigner,
) -> Page[GalleryItem]:
    """A project's results (owner or shared reader), newest job first, by ``(position, index)``."""
    readable_project(session, user_id, project_id)
    rows = repository.gallery_rows(session, project_id, limit + 1, decode(cursor, int, int))
    items, next_cursor = cut(rows, limit, lambda row: (row["position"], row["output_index"]))
    return Page[GalleryItem](items=[GalleryItem.of(row, sign) for row in items], next_cursor=next_cursor)
