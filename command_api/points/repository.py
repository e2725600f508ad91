"""Reads of the point read models (point_balance, point_usage, vto_job)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from command_api.pagination import Key
from command_api.points.schemas import PointsOut, SubscriptionOut, UsageLine, used_today


def points(
    session: Session, user_id: uuid.UUID, ticket_types: list[str], now: datetime | None = None
) -> PointsOut:
    now = now or datetime.now(UTC)
    row = (
        session.execute(text("SELECT * FROM point_balance WHERE user_id = :u"), {"u": user_id})
        .mappings()
        .first()
    )
    tickets = dict.fromkeys(ticket_types, 0)
    if row is None:
        return PointsOut(credit=0, tickets=tickets, subscription=None, pending_reservations=0)
    tickets.update({k: int(v) for k, v in (row["tickets"] or {}).items()})
    subscription = None
    if row["subscription_plan"] and row["subscription_period_end"] and row["subscription_period_end"] > now:
        subscription = SubscriptionOut(
            plan=row["subscription_plan"],
            period_end=row["subscription_period_end"],
            daily_quota=row["daily_quota"],
            used_today=used_today(row["quota_day"], row["used_today"], now.astimezone(UTC).date()),
        )
    return PointsOut(
        credit=int(row["credits"]),
        tickets=tickets,
        subscription=subscription,
        pending_reservations=int(row["pending_reservations"]),
    )


def usage(session: Session, user_id: uuid.UUID, limit: int, before: Key | None) -> list[UsageLine]:
    """The user's point_usage lines, newest first: at most ``limit`` before the key
    ``before`` = (position,)."""
    params: dict[str, Any] = {"u": user_id, "limit": limit}
    where = "user_id = :u"
    if before is not None:
        where += " AND position < :before"
        (params["before"],) = before
    rows = session.execute(
        text(f"SELECT * FROM point_usage WHERE {where} ORDER BY position DESC LIMIT :limit"),  # noqa: S608
        params,
    ).mappings()
    return [UsageLine.model_validate(dict(r)) for r in rows]


def job_owner(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    owner = session.execute(text("SELECT user_id FROM vto_job WHERE job_id = :j"), {"j": job_id}).scalar()
    return owner if owner is None or isinstance(owner, uuid.UUID) else uuid.UUID(str(owner))
