"""GET /points, GET /points/usage, POST /points/refund (admin)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from command_api.deps import AdminUser, CurrentUser, LedgerDep, ServicesDep, SessionDep
from command_api.pagination import Cursor, Limit, Page
from command_api.points import service
from command_api.points.schemas import PointsOut, RefundIn, RefundOut, UsageLine

router = APIRouter(prefix="/points", tags=["points"])


@router.get("", summary="The caller's credits, tickets and subscription")
def get_points(user: CurrentUser, session: SessionDep, services: ServicesDep) -> PointsOut:
    return service.points(session, user.id, list(services.settings.ticket_kinds), datetime.now(UTC))


@router.get("/usage", summary="The caller's point_usage lines, newest first")
def get_usage(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
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
    refunded, position = service.refund(session, ledger, admin, body.job_id, body.reason)
    services.wait_for(position)
    return refunded
