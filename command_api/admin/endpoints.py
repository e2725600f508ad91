"""POST /admin/grants: credits, tickets and subscriptions for a user (admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, status

from command_api.deps import AdminUser, LedgerDep, ServicesDep, SessionDep
from command_api.points import repository
from command_api.points.schemas import GrantIn, GrantOut
from command_api.problems import NotFound
from command_api.users import repository as users

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/grants", status_code=status.HTTP_201_CREATED, summary="Grant points to a user (admin)")
def grant(
    body: GrantIn, admin: AdminUser, session: SessionDep, ledger: LedgerDep, services: ServicesDep
) -> GrantOut:
    if body.email is not None:
        user = users.live_user_by_email(session, body.email)
    else:
        assert body.user_id is not None  # GrantIn takes exactly one of the two
        user = users.live_user(session, body.user_id)
    if user is None:
        raise NotFound("user")
    subscription = None
    if body.subscription is not None:
        end = datetime.now(UTC) + timedelta(days=body.subscription.days)
        subscription = (body.subscription.plan, end, body.subscription.daily_quota)
    result = ledger.grant(
        user.id, f"{body.reason} (by {admin.email})", body.credits, body.tickets, subscription
    )
    services.wait_for(result.position)
    return GrantOut(
        user_id=user.id, points=repository.points(session, user.id, list(services.settings.ticket_kinds))
    )
