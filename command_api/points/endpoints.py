"""GET /points, GET /points/usage, POST /points/refund (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from command_api.deps import AdminUser, CurrentUser, LedgerDep, ServicesDep, SessionDep
from command_api.pagination import Cursor, Limit, Page, cut, decode
from command_api.points import repository
from command_api.points.schemas import PointsOut, RefundIn, RefundOut, UsageLine
from command_api.problems import NotFound

router = APIRouter(prefix="/points", tags=["points"])


@router.get("", summary="The caller's credits, tickets and subscription")
def get_points(user: CurrentUser, session: SessionDep, services: ServicesDep) -> PointsOut:
    return repository.points(session, user.id, list(services.settings.ticket_kinds))


@router.get("/usage", summary="The caller's point_usage lines, newest first")
def get_usage(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[UsageLine]:
    rows = repository.usage(session, user.id, limit + 1, decode(cursor, int))
    items, next_cursor = cut(rows, limit, lambda line: (line.position,))
    return Page[UsageLine](items=items, next_cursor=next_cursor)


@router.post(
    "/refund",
    summary="Refund a charged job once (admin)",
    responses={409: {"description": "already refunded"}},
)
def refund(
    body: RefundIn, admin: AdminUser, session: SessionDep, ledger: LedgerDep, services: ServicesDep
) -> RefundOut:
    owner = repository.job_owner(session, body.job_id)
    if owner is None:
        raise NotFound("job")
    result = ledger.admin_refund(owner, body.job_id, body.reason, by=admin.email)
    services.wait_for(result.position)
    job = ledger.account(owner).job(body.job_id)
    assert job is not None
    return RefundOut(job_id=body.job_id, user_id=owner, source=job["source"], amount=job["amount"])
