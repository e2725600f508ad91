"""/vto: create, read, list and cancel try-on jobs; a project's gallery."""

from __future__ import annotations

import uuid
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from command_api.api_keys import service as api_keys
from command_api.catalog.uploads import in_transaction
from command_api.deps import (
    AccessClaims,
    CaughtUpCaller,
    JobEventHubDep,
    LedgerDep,
    ServicesDep,
    SessionDep,
    SignerDep,
    WebhookTargetsDep,
    run_on_connection,
    run_then,
)
from command_api.pagination import Cursor, Limit, Page
from command_api.vto import live, service
from command_api.vto.schemas import GalleryItem, JobIn, JobOut
from command_api.webhooks.service import check_webhook_url
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
CancelAfter = Annotated[
    str | None,
    Header(
        alias="Cancel-After",
        max_length=64,
        description="A deadline from the order: 90s, 10m, 1h, 1h30m, or whole seconds. A job not "
        "finished by then is canceled and refunded (refund cause deadline). With deadline_s in the "
        "body too, the earlier wins (422 invalid_cancel_after when malformed).",
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
        429: {
            "description": "job_rate_limited: too many orders from this API key, or from all of the "
            "account's keys together (access tokens are not limited by it)"
        },
        422: {
            "description": "webhook_url_not_allowed: the webhook is not http(s), or goes to a private "
            "address; invalid_cancel_after, invalid_deadline: the deadline is malformed or out of bounds"
        },
    },
)
async def create_job(
    request: Request,
    body: JobIn,
    claims: AccessClaims,
    services: ServicesDep,
    sign: SignerDep,
    targets: WebhookTargetsDep,
    idempotency_key: IdempotencyKey = None,
    cancel_after: CancelAfter = None,
) -> JobOut:
    body = service.job_deadline(body, cancel_after, services.settings.job_max_deadline_s)
    if claims.api_key_id is not None:  # an API key's orders are rate-limited, a token's are not
        await in_transaction(
            request,
            services,
            lambda session: api_keys.take_order(session, claims, services.settings, services.clock),
        )
    if body.webhook is not None:  # resolving its host blocks: off the event loop
        await anyio.to_thread.run_sync(check_webhook_url, targets, body.webhook)
    # One worker-thread hop and two round trips: the token, catalog and ledger-stream read on
    # a catalog connection, given back before the ledger append.
    ledger = services.ledger
    trace = getattr(request.state, "trace", None)  # the access-log middleware's
    order = await run_then(
        request,
        services,
        lambda conn: service.read_order(conn, ledger, claims, body),
        lambda order: service.place_order(
            ledger, claims, body, order, idempotency_key, trace.to_dict() if trace else None
        ),
    )
    if order.created:
        return service.job_from_reservation(order, body)
    # An idempotent repeat: the job as the read models have it, once they include everything
    # written so far (waited for before a catalog connection is taken).
    await anyio.to_thread.run_sync(lambda: services.wait_for(ledger.position()))
    return await run_on_connection(
        request,
        services,
        lambda conn: service.repeated_order(
            conn, order, body, sign, service.QueueTerms.of(services.settings)
        ),
    )


@router.get("/jobs", summary="The caller's jobs, newest first, by project and status")
def list_jobs(
    user: CaughtUpCaller,
    session: SessionDep,
    services: ServicesDep,
    sign: SignerDep,
    project_id: Annotated[uuid.UUID | None, Query()] = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[JobOut]:
    return service.jobs_page(
        session, user.id, project_id, status_, limit, cursor, sign, service.QueueTerms.of(services.settings)
    )


@router.get("/jobs/{job_id}", summary="A job: status, charge, refund, outputs")
async def get_job(
    request: Request, job_id: uuid.UUID, claims: AccessClaims, services: ServicesDep, sign: SignerDep
) -> JobOut:
    return await run_on_connection(
        request,
        services,
        lambda conn: service.own_job(
            conn,
            claims,
            job_id,
            sign,
            services.wait_for,
            services.ledger,
            service.QueueTerms.of(services.settings),
        ),
    )


@router.get(
    "/jobs/{job_id}/events",
    summary="A job's live events (server-sent events): its state, then each change, to the end",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {live.MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "`event: status|progress`, `id: N`, `data: {the job}`; keep-alive "
            "comments; the stream ends after a terminal status (docs/job-api.md)",
        },
        429: {"description": "too_many_streams: the account holds its limit of open streams"},
    },
)
async def job_events(
    request: Request,
    job_id: uuid.UUID,
    claims: AccessClaims,
    services: ServicesDep,
    sign: SignerDep,
    hub: JobEventHubDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    stream_id = uuid.uuid4()
    # Subscribed before the first read, so no change falls between them.
    sub = hub.subscribe(job_id)
    try:
        first = await run_on_connection(
            request,
            services,
            lambda conn: service.open_stream(
                conn, claims, job_id, sign, services.wait_for, services.ledger, services.settings, stream_id
            ),
        )
    except BaseException:
        hub.unsubscribe(sub)
        raise
    slot = None if first.status.finished else stream_id
    if slot is not None:
        hub.track(slot)
    body = live.job_events(
        hub,
        sub,
        first,
        live.parse_last_event_id(last_event_id),
        sign,
        services.settings.sse_keepalive_s,
        slot,
    )
    return StreamingResponse(
        body,
        media_type=live.MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job that has not finished; its charge is refunded",
    responses={409: {"description": "job_finished: the job already finished"}},
)
def cancel_job(
    job_id: uuid.UUID,
    user: CaughtUpCaller,
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
async def project_results(
    request: Request,
    project_id: uuid.UUID,
    claims: AccessClaims,
    services: ServicesDep,
    sign: SignerDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[GalleryItem]:
    return await run_on_connection(
        request,
        services,
        lambda conn: service.own_gallery_page(
            conn, claims, project_id, limit, cursor, sign, services.wait_for
        ),
    )
