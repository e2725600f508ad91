"""Webhooks: the account's signing secret (``/webhooks/default/secret``, and its rotation),
a job's webhook deliveries and redelivery. Deliveries themselves are made by the webhook
dispatcher (``pipeline.webhooks``; ``vto webhooks``, or inside ``vto serve``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from command_api.deps import CaughtUpCaller, CurrentUser, SessionDep, SettingsDep, SignedInUser
from command_api.pagination import Cursor, Limit, Page
from command_api.webhooks import service
from command_api.webhooks.schemas import DeliveryOut, SecretOut

router = APIRouter(tags=["webhooks"])


@router.get(
    "/webhooks/default/secret",
    summary="The signing secret of the caller's webhooks (Standard Webhooks, whsec_...)",
)
def get_secret(user: CurrentUser, session: SessionDep, response: Response) -> SecretOut:
    response.headers["Cache-Control"] = "no-store"  # a secret: never kept by a cache
    return service.secret(session, user.id)


@router.post(
    "/webhooks/default/secret/rotate",
    summary="Replace the signing secret; the old one keeps signing beside it for 24 hours",
)
def rotate_secret(
    user: SignedInUser, session: SessionDep, settings: SettingsDep, response: Response
) -> SecretOut:
    response.headers["Cache-Control"] = "no-store"
    return service.rotate_secret(session, user.id, settings.webhook_secret_overlap_s)


@router.get(
    "/vto/jobs/{job_id}/webhook-deliveries",
    summary="A job's webhook deliveries, oldest first, with every attempt",
    responses={404: {"description": "no such job of the caller's"}},
)
def list_deliveries(
    job_id: uuid.UUID, user: CaughtUpCaller, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[DeliveryOut]:
    return service.deliveries_page(session, user.id, job_id, limit, cursor)


@router.post(
    "/vto/jobs/{job_id}/webhook-deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery once more (same webhook-id and body), outside its retry schedule",
    responses={404: {"description": "no such job of the caller's, or no such delivery of the job"}},
)
def redeliver(
    job_id: uuid.UUID, delivery_id: uuid.UUID, user: CaughtUpCaller, session: SessionDep
) -> DeliveryOut:
    return service.redeliver(session, user.id, job_id, delivery_id)
