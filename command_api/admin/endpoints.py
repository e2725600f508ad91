"""POST /admin/grants: credits, tickets and subscriptions for a user (admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, status
from sqlalchemy import func, select

from command_api.deps import AdminUser, LedgerDep, ServicesDep, SessionDep
from command_api.points import repository
from command_api.points.schemas import GrantIn, GrantOut
from command_api.problems import not_found
from command_api.users.models import User

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/grants", status_code=status.HTTP_201_CREATED, summary="Grant points to a user (admin)")
def grant(
    body: GrantIn, admin: AdminUser, session: SessionDep, ledger: LedgerDep, services: ServicesDep
) -> GrantOut:
    query = select(User).where(User.deleted_at.is_(None))
    if body.email is not None:
        query = query.where(func.lower(User.email) == body.email.lower())
    else:
        query = query.where(User.id == body.user_id)
    user = session.scalars(query).first()
    if user is None:
        raise not_found("user")
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
