"""GET /points/statement (JSON or CSV), GET and PUT /points/alerts, GET /admin/usage (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from command_api.billing import service
from command_api.billing.schemas import AlertsIn, AlertsOut, Statement, UsageReport
from command_api.deps import AdminUser, CaughtUpCaller, CurrentUser, ServicesDep, SessionDep
from command_api.pagination import Cursor, Limit

router = APIRouter(prefix="/points", tags=["points"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])

From = Annotated[datetime, Query(alias="from", description="Start of the period (included); no offset: UTC")]
To = Annotated[datetime, Query(description="End of the period (excluded); no offset: UTC")]
CSV = "text/csv"


@router.get(
    "/statement",
    summary="The caller's statement of a period: balances at both ends and every line between",
    responses={200: {"content": {CSV: {"schema": {"type": "string"}}}}},
)
def get_statement(
    user: CaughtUpCaller,
    session: SessionDep,
    services: ServicesDep,
    start: From,
    to: To,
    limit: Limit = 200,
    cursor: Cursor = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Statement:
    start, end = service.period(start, to, services.settings.statement_max_days)
    ticket_types = list(services.settings.ticket_kinds)
    if accept is not None and CSV in accept and "application/json" not in accept:
        body = service.statement_csv(session, services.engine, user.id, ticket_types, start, end)
        name = f"statement-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(  # type: ignore[return-value]
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return service.statement(session, user.id, ticket_types, start, end, limit, cursor)


@router.get("/alerts", summary="The caller's balance alerts (thresholds per source)")
def get_alerts(user: CurrentUser, session: SessionDep) -> AlertsOut:
    return service.alerts(session, user.id)


@router.put(
    "/alerts",
    summary="Set the caller's balance alerts: a balance.low email and webhook when a balance goes below",
)
def put_alerts(body: AlertsIn, user: CurrentUser, session: SessionDep) -> AlertsOut:
    return service.set_alerts(session, user.id, body)


@admin_router.get("/usage", summary="Points charged, refunded, expired and granted, by day or user (admin)")
def get_usage(
    admin: AdminUser,
    session: SessionDep,
    services: ServicesDep,
    start: From,
    to: To,
    group_by: Annotated[Literal["day", "user"], Query()] = "day",
) -> UsageReport:
    start, end = service.period(start, to, services.settings.statement_max_days)
    return service.usage_report(session, start, end, group_by)
