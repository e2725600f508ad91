"""Job creation rules: what a job request records, who may read a job, cursors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from command_api.catalog.access import readable_project
from command_api.catalog.job_inputs import load_job_inputs
from command_api.problems import ProblemError
from command_api.vto.schemas import Charge, JobIn, JobOut
from ledger.account import Reservation


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
        "pose": body.pose,
        "options": body.options.model_dump(),
        "inputs": inputs,
    }


def job_from_reservation(reservation: Reservation, body: JobIn) -> JobOut:
    return JobOut(
        id=reservation.job_id,
        status="queued",
        kind=reservation.kind,
        project_id=str(body.project_id),
        charge=Charge(source=reservation.source, amount=reservation.amount),
        created_at=datetime.now(UTC),
    )


def check_project_readable(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """404 unless the caller owns the project or it is shared with them."""
    readable_project(session, user_id, project_id)


def may_read_job(session: Session, user_id: uuid.UUID, row: Any) -> bool:
    """The requester, or a reader of the job's project."""
    if row["user_id"] == user_id:
        return True
    try:
        readable_project(session, user_id, uuid.UUID(str(row["project_id"])))
    except (ValueError, ProblemError):
        return False
    return True


def _invalid_cursor() -> ProblemError:
    return ProblemError(400, "invalid_cursor", "the cursor is not one this API returned")


def encode_job_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    return f"{created_at.timestamp():.6f}_{job_id}"


def job_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        stamp, job_id = cursor.split("_", 1)
        return datetime.fromtimestamp(float(stamp), UTC), uuid.UUID(job_id)
    except ValueError:
        raise _invalid_cursor() from None


def gallery_cursor(cursor: str | None) -> tuple[int, int] | None:
    if cursor is None:
        return None
    position, _, index = cursor.partition(".")
    if not (position.isdigit() and index.isdigit()) or len(position) > 19 or len(index) > 6:
        raise _invalid_cursor()
    return int(position), int(index)
