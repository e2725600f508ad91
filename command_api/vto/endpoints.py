"""/vto: create, read, list and cancel try-on jobs; a project's gallery."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, status

from command_api.deps import CurrentUser, LedgerDep, ServicesDep, SessionDep, StorageDep
from command_api.pagination import Cursor, Limit
from command_api.problems import ProblemError, not_found
from command_api.vto import repository, service
from command_api.vto.schemas import GalleryPage, JobIn, JobOut, JobPage

router = APIRouter(prefix="/vto", tags=["vto"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        description="Repeat a request with the same key to get the same job, charged once.",
    ),
]
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Order a try-on image or video (reserves its charge)",
    responses={
        402: {"description": "insufficient_entitlement: no subscription, ticket or credits pay for it"},
        404: {"description": "project, product or asset not found"},
        409: {"description": "idempotency_key_reused: the key was used for another request"},
    },
)
def create_job(
    body: JobIn,
    user: CurrentUser,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    storage: StorageDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    request = service.job_request(session, user.id, body)
    result = ledger.request_job(user.id, uuid.uuid4(), body.kind, request, idempotency_key)
    services.wait_for(result.position)
    job = repository.job(session, result.value.job_id, storage, services.settings.signed_url_ttl_s)
    if job is None:  # the read model did not catch up within the deadline: answer from the ledger
        return service.job_from_reservation(result.value, body)
    return job


@router.get("/jobs", summary="The caller's jobs, newest first, by project and status")
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    services: ServicesDep,
    storage: StorageDep,
    project_id: Annotated[uuid.UUID | None, Query()] = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobPage:
    before = service.job_cursor(cursor)
    items = repository.jobs(
        session,
        storage,
        services.settings.signed_url_ttl_s,
        user_id=user.id,
        project_id=project_id,
        status=status_,
        limit=limit,
        before=before,
    )
    next_cursor = (
        service.encode_job_cursor(items[-1].created_at, items[-1].id) if len(items) == limit else None
    )
    return JobPage(items=items, next_cursor=next_cursor)


@router.get("/jobs/{job_id}", summary="A job: status, charge, refund, outputs")
def get_job(
    job_id: uuid.UUID, user: CurrentUser, session: SessionDep, services: ServicesDep, storage: StorageDep
) -> JobOut:
    row = repository.job_row(session, job_id)
    if row is None or not service.may_read_job(session, user.id, row):
        raise not_found("job")
    job = repository.job(session, job_id, storage, services.settings.signed_url_ttl_s)
    assert job is not None
    return job


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job that has not finished; its charge is refunded",
    responses={409: {"description": "job_finished: the job already finished"}},
)
def cancel_job(
    job_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    storage: StorageDep,
) -> JobOut:
    row = repository.job_row(session, job_id)
    if row is None or row["user_id"] != user.id:
        raise not_found("job")
    result = ledger.cancel_job(user.id, job_id, "canceled by the user")
    services.wait_for(result.position)
    session.expire_all()
    job = repository.job(session, job_id, storage, services.settings.signed_url_ttl_s)
    assert job is not None
    if not result.value and job.status != "canceled":
        raise ProblemError(409, "job_finished", f"the job already finished ({job.status})")
    return job


@router.get("/projects/{project_id}/results", summary="A project's gallery, newest first")
def project_results(
    project_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    services: ServicesDep,
    storage: StorageDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> GalleryPage:
    service.check_project_readable(session, user.id, project_id)
    before = service.gallery_cursor(cursor)
    items = repository.gallery(
        session, project_id, storage, services.settings.signed_url_ttl_s, limit, before
    )
    next_cursor = f"{items[-1].position}.{items[-1].index}" if len(items) == limit else None
    return GalleryPage(items=items, next_cursor=next_cursor)
