"""The rules of /points and /admin/grants: what a balance shows, who a grant or refund is
for, and the ledger commands they become. The caller waits for the returned position
(read-your-writes) before it reads the read models again."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from command_api import own_reads
from command_api.auth import tokens
from command_api.pagination import Page, cut, decode
from command_api.points import repository
from command_api.points.schemas import GrantIn, LotOut, PointsOut, RefundOut, SubscriptionOut, UsageLine
from command_api.problems import NotFound
from command_api.users import repository as users
from command_api.users.models import User
from ledger.application import LedgerApplication
from ledger.lots import Category
from ledger.policy import CREDIT, ticket_source

EXPIRING_WITHIN = timedelta(days=7)  # GET /points's ``expiring_within_7_days``


def points(session: Session, user_id: uuid.UUID, ticket_types: list[str], now: datetime) -> PointsOut:
    """The user's balances as of ``now`` (see ``points_of``)."""
    return points_of(repository.balance_row(session, user_id, now), ticket_types, now)


def own_points(
    conn: Connection,
    claims: tokens.Claims,
    ticket_types: list[str],
    now: datetime,
    wait: Callable[[int], object],
) -> PointsOut:
    """The caller's balances, in one round trip with the token's check and once the read
    models include the caller's writes (``own_reads``)."""
    rows = own_reads.read(conn, claims, repository.OWN_BALANCE, {"now": now}, wait)
    return points_of(rows[0] if rows else None, ticket_types, now)


def points_of(row: Mapping[Any, Any] | None, ticket_types: list[str], now: datetime) -> PointsOut:
    """A ``point_balance`` row as of ``now`` (None: no account yet): every configured ticket
    type (0 when none), and the subscription only while its period lasts, with the jobs it
    paid today (UTC); each source's lots that can still be burnt (``point_lot``), and what of
    them expires within 7 days."""
    tickets = dict.fromkeys(ticket_types, 0)
    lots: dict[str, list[LotOut]] = {source: [] for source in (CREDIT, *map(ticket_source, ticket_types))}
    for lot in (row.get("lots") if row is not None else None) or []:
        lots.setdefault(lot["source"], []).append(LotOut.model_validate(lot))
    soon = now + EXPIRING_WITHIN
    expiring = {
        source: sum(lot.left for lot in held if lot.expires_at is not None and lot.expires_at <= soon)
        for source, held in lots.items()
    }
    if row is None:
        return PointsOut(
            credit=0,
            tickets=tickets,
            subscription=None,
            pending_reservations=0,
            lots=lots,
            expiring_within_7_days=expiring,
        )
    tickets.update({k: int(v) for k, v in (row["tickets"] or {}).items()})
    subscription = None
    end = row["subscription_period_end"]
    if row["subscription_plan"] and end is not None and end > now:
        today = now.astimezone(UTC).date()
        subscription = SubscriptionOut(
            plan=row["subscription_plan"],
            period_end=end,
            daily_quota=row["daily_quota"],
            used_today=row["used_today"] if row["quota_day"] == today else 0,
        )
    return PointsOut(
        credit=int(row["credits"]),
        tickets=tickets,
        subscription=subscription,
        pending_reservations=int(row["pending_reservations"]),
        lots=lots,
        expiring_within_7_days=expiring,
    )


def usage_page(session: Session, user_id: uuid.UUID, limit: int, cursor: str | None) -> Page[UsageLine]:
    rows = repository.usage(session, user_id, limit + 1, decode(cursor, int))
    items, next_cursor = cut(rows, limit, lambda row: (row["position"],))
    return Page[UsageLine](items=[UsageLine.model_validate(dict(r)) for r in items], next_cursor=next_cursor)


def grant(
    session: Session, ledger: LedgerApplication, by: str, body: GrantIn
) -> tuple[uuid.UUID, int | None]:
    """Grant what ``body`` says to its live user, in one save; the user and the position.
    The events record who granted (``by``: the acting admin's user id, or the command line)
    and the reason as given; the credits and tickets are a lot each, of ``body.category``
    (paid by default), expiring at ``body.expires_at`` (never when omitted)."""
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
        user.id,
        body.reason,
        body.credits,
        body.tickets,
        subscription,
        by=by,
        expires_at=body.expires_at,
        category=body.category or Category.PAID,
    )
    return user.id, result.position


def refund(
    session: Session, ledger: LedgerApplication, admin: User, job_id: uuid.UUID, reason: str
) -> tuple[RefundOut, int | None]:
    """Give a job's charge back once (``JobAlreadyRefunded`` the second time); the refund
    event records the acting admin's user id (``by``)."""
    owner = repository.job_owner(session, job_id)
    if owner is None:
        raise NotFound("job")
    result = ledger.admin_refund(owner, job_id, reason, by=str(admin.id))
    job = ledger.account(owner).job(job_id)
    assert job is not None  # it was just refunded
    return RefundOut(
        job_id=job_id, user_id=owner, source=job["source"], amount=job["amount"]
    ), result.position
