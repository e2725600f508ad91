"""/vto: create, read, list and cancel try-on jobs; a project's gallery."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from command_api.deps import CurrentUser, LedgerDep, ServicesDep, SessionDep, SignerDep
from command_api.pagination import Cursor, Limit, Page
from command_api.vto import service
from command_api.vto.schemas import GalleryItem, JobIn, JobOut
from ledger.status import JobStatus

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


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Order a try-on image or video (reserves its charge)",
    responses={
        402: {"description": "insufficient_entitlement: no subscription, ticket or credits pay for it"},
        403: {
            "description": "the project is shared with the caller as a viewer (owners and editors order jobs)"
        },
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
    sign: SignerDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    request = service.job_request(session, user.id, body)
    result = ledger.request_job(user.id, uuid.uuid4(), body.kind.value, request, idempotency_key)
    services.wait_for(result.position)
    job = service.job(session, result.value.job_id, sign)
    if job is None:  # the read model did not catch up within the deadline: answer from the ledger
        return service.job_from_reservation(result.value, body)
    return job


@router.get("/jobs", summary="The caller's jobs, newest first, by project and status")
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
    project_id: Annotated[uuid.UUID | None, Query()] = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[JobOut]:
    return service.jobs_page(session, user.id, project_id, status_, limit, cursor, sign)


@router.get("/jobs/{job_id}", summary="A job: status, charge, refund, outputs")
def get_job(job_id: uuid.UUID, user: CurrentUser, session: SessionDep, sign: SignerDep) -> JobOut:
    return service.readable_job(session, user.id, job_id, sign)


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
    sign: SignerDep,
) -> JobOut:
    service.check_cancellable(session, user.id, job_id)
    result = ledger.cancel_job(user.id, job_id, "canceled by the user")
    services.wait_for(result.position)
    session.expire_all()
    job = service.job(session, job_id, sign)
    assert job is not None
    service.check_canceled(job, bool(result.value))
    return job


@router.get("/projects/{project_id}/results", summary="A project's gallery, newest first")
def project_results(
    project_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[GalleryItem]:
    return service.gallery_page(session, user.id, project_id, limit, cursor, sign)
