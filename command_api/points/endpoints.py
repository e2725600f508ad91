"""GET /points, GET /points/usage, POST /points/refund (admin)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from command_api.deps import (
    AccessClaims,
    AdminUser,
    CaughtUpCaller,
    LedgerDep,
    ServicesDep,
    SessionDep,
    run_on_connection,
)
from command_api.pagination import Cursor, Limit, Page
from command_api.points import service
from command_api.points.schemas import PointsOut, RefundIn, RefundOut, UsageLine

router = APIRouter(prefix="/points", tags=["points"])


@router.get("", summary="The caller's credits, tickets and subscription")
async def get_points(request: Request, claims: AccessClaims, services: ServicesDep) -> PointsOut:
    ticket_types = list(services.settings.ticket_kinds)
    return await run_on_connection(
        request,
        services,
        lambda conn: service.own_points(conn, claims, ticket_types, datetime.now(UTC), services.wait_for),
    )


@router.get("/usage", summary="The caller's point_usage lines, newest first")
def get_usage(
    user: CaughtUpCaller, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[UsageLine]:
    return service.usage_page(session, user.id, limit, cursor)


@router.post(
    "/refund",
    summary="Refund a charged job once (admin)",
    responses={409: {"description": "already refunded"}},
)
def refund(
    body: RefundIn, admin: AdminUser, session: SessionDep, ledger: LedgerDep, services: ServicesDep
) -> RefundOut:
    services.wait_for(ledger.position())  # the job's owner is read from the jobs read model
    refunded, position = service.refund(session, ledger, admin, body.job_id, body.reason)
    services.wait_for(position)
    return refunded
