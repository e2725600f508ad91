"""POST /admin/grants: credits, tickets and subscriptions for a user (admin)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status

from command_api.deps import AdminUser, LedgerDep, ServicesDep, SessionDep
from command_api.points import service
from command_api.points.schemas import GrantIn, GrantOut

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/grants", status_code=status.HTTP_201_CREATED, summary="Grant points to a user (admin)")
def grant(
    body: GrantIn, admin: AdminUser, session: SessionDep, ledger: LedgerDep, services: ServicesDep
) -> GrantOut:
    user_id, position = service.grant(session, ledger, str(admin.id), body)
    services.wait_for(position)
    points = service.points(session, user_id, list(services.settings.ticket_kinds), datetime.now(UTC))
    return GrantOut(user_id=user_id, points=points)
