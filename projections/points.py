"""Projection ``points``: ``point_balance`` (one row per user) and ``point_usage`` (the
accounting ledger: one line per reservation, settlement, refund, grant and adjustment), with
``point_reservation`` (each job's charge, to refund to its source and count open jobs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from ledger.account import Account
from ledger.policy import CREDIT, SUBSCRIPTION, ticket_source, ticket_type_of
from projections.events import Notified

# point_usage.type
RESERVATION = "reservation"
SETTLEMENT = "settlement"
REFUND = "refund"
GRANT = "grant"
ADJUSTMENT = "adjustment"

BALANCE_COLUMNS = (
    "user_id, credits, tickets, subscription_plan, subscription_period_end, daily_quota, "
    "quota_day, used_today, pending_reservations, position, updated_at"
)


@dataclass
class Balance:
    user_id: UUID
    credits: int = 0
    tickets: dict[str, int] = field(default_factory=dict)
    plan: str | None = None
    period_end: datetime | None = None
    daily_quota: int | None = None
    quota_day: date | None = None
    used_today: int = 0
    pending: int = 0
    position: int = 0
    updated_at: datetime | None = None

    def give(self, source: str, amount: int) -> None:
        if source == SUBSCRIPTION:
            return
        if source == CREDIT:
            self.credits += amount
            return
        ticket_type = ticket_type_of(source)
        if ticket_type is None:
            raise ValueError(f"unknown source {source!r}")
        self.tickets[ticket_type] = self.tickets.get(ticket_type, 0) + amount

    def of(self, source: str) -> int | None:
        """The balance of a source after a line (None for the subscription: it has none)."""
        if source == SUBSCRIPTION:
            return None
        if source == CREDIT:
            return self.credits
        return self.tickets.get(ticket_type_of(source) or "", 0)

    def row(self) -> tuple[Any, ...]:
        return (
            self.user_id,
            self.credits,
            Jsonb(self.tickets),
            self.plan,
            self.period_end,
            self.daily_quota,
            self.quota_day,
            self.used_today,
            self.pending,
            self.position,
            self.updated_at,
        )


@dataclass
class Reserved:
    job_id: UUID
    user_id: UUID
    source: str
    amount: int
    quota_day: date | None
    open: bool


@dataclass(frozen=True)
class UsageLine:
    position: int
    user_id: UUID
    job_id: UUID | None
    type: str
    source: str
    amount: int
    balance_after: int | None
    reason: str | None
    created_at: datetime


def usage_line(n: Notified, balance: Balance, reservation: Reserved | None) -> UsageLine | None:
    """The accounting line of an event (None for events that move no points), computed after
    the event was applied to ``balance``."""
    e = n.event
    user = e.originator_id

    def line(job: UUID | None, kind: str, source: str, amount: int, reason: str | None) -> UsageLine:
        return UsageLine(n.position, user, job, kind, source, amount, balance.of(source), reason, e.timestamp)

    if isinstance(e, Account.CreditsGranted):
        return line(None, GRANT, CREDIT, e.amount, e.reason)
    if isinstance(e, Account.TicketsGranted):
        return line(None, GRANT, ticket_source(e.ticket_type), e.count, e.reason)
    if isinstance(e, Account.SubscriptionActivated):
        return line(None, GRANT, SUBSCRIPTION, 0, e.reason)
    if isinstance(e, Account.EntitlementReserved):
        return line(e.job_id, RESERVATION, e.source, -e.amount, f"{e.kind} job")
    if isinstance(e, Account.JobCompleted) and e.charged and reservation is not None:
        return line(e.job_id, SETTLEMENT, reservation.source, 0, "job succeeded")
    if isinstance(e, Account.Refunded):
        return line(e.job_id, REFUND, e.source, e.amount, f"{e.cause}: {e.reason}")
    if isinstance(e, Account.Adjusted):
        return line(None, ADJUSTMENT, e.source, e.delta, e.reason)
    return None


_JOB_EVENTS = (Account.JobCompleted, Account.JobFailed, Account.JobCanceled, Account.Refunded)


class PointsProjection:
    name = "points"
    tables = ("point_balance", "point_usage", "point_reservation")

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        balances = self._load_balances(cur, tables["point_balance"], {n.event.originator_id for n in batch})
        reserved_here = {n.event.job_id for n in batch if isinstance(n.event, Account.EntitlementReserved)}
        wanted = {n.event.job_id for n in batch if isinstance(n.event, _JOB_EVENTS)} - reserved_here
        reservations = self._load_reservations(cur, tables["point_reservation"], wanted)
        touched_reservations: set[UUID] = set()
        lines: list[UsageLine] = []
        for n in batch:
            e = n.event
            user = e.originator_id
            b = balances.get(user)
            if b is None:
                b = balances[user] = Balance(user)
            r = self._evolve(b, reservations, e)
            if r is not None:
                touched_reservations.add(r.job_id)
            b.position, b.updated_at = n.position, e.timestamp
            usage = usage_line(n, b, r)
            if usage is not None:
                lines.append(usage)
        cur.executemany(
            f"INSERT INTO {tables['point_balance']} ({BALANCE_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET "
            "credits = EXCLUDED.credits, tickets = EXCLUDED.tickets, "
            "subscription_plan = EXCLUDED.subscription_plan, "
            "subscription_period_end = EXCLUDED.subscription_period_end, "
            "daily_quota = EXCLUDED.daily_quota, quota_day = EXCLUDED.quota_day, "
            "used_today = EXCLUDED.used_today, pending_reservations = EXCLUDED.pending_reservations, "
            "position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
            [b.row() for b in balances.values() if b.updated_at is not None],
        )
        if touched_reservations:
            cur.executemany(
                f"INSERT INTO {tables['point_reservation']} "
                "(job_id, user_id, source, amount, quota_day, open) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (job_id) DO UPDATE SET open = EXCLUDED.open",
                [
                    (r.job_id, r.user_id, r.source, r.amount, r.quota_day, r.open)
                    for j in touched_reservations
                    if (r := reservations[j])
                ],
            )
        if lines:
            with cur.copy(
                f"COPY {tables['point_usage']} (position, user_id, job_id, type, source, amount, "
                "balance_after, reason, created_at) FROM STDIN"
            ) as copy:
                for u in lines:
                    copy.write_row(
                        (
                            u.position,
                            u.user_id,
                            u.job_id,
                            u.type,
                            u.source,
                            u.amount,
                            u.balance_after,
                            u.reason,
                            u.created_at,
                        )
                    )

    @staticmethod
    def _evolve(b: Balance, reservations: dict[UUID, Reserved], e: Any) -> Reserved | None:
        """Mirror of the Account's own evolution, on the read model's row. Returns the
        reservation the event concerns (when it concerns one)."""
        if isinstance(e, Account.CreditsGranted):
            b.credits += e.amount
        elif isinstance(e, Account.TicketsGranted):
            b.tickets[e.ticket_type] = b.tickets.get(e.ticket_type, 0) + e.count
        elif isinstance(e, Account.SubscriptionActivated):
            b.plan, b.period_end, b.daily_quota = e.plan, e.period_end, e.daily_quota
        elif isinstance(e, Account.SubscriptionCancelled | Account.SubscriptionExpired):
            b.plan, b.period_end, b.daily_quota = None, None, None
        elif isinstance(e, Account.EntitlementReserved):
            b.give(e.source, -e.amount)
            day = date.fromisoformat(e.quota_day) if e.quota_day is not None else None
            if day is not None:
                if b.quota_day != day:
                    b.quota_day, b.used_today = day, 0
                b.used_today += 1
            b.pending += 1
            r = reservations[e.job_id] = Reserved(e.job_id, b.user_id, e.source, e.amount, day, True)
            return r
        elif isinstance(e, Account.JobCompleted | Account.JobFailed | Account.JobCanceled):
            closing = reservations.get(e.job_id)
            if closing is not None and closing.open:
                closing.open = False
                b.pending -= 1
            return closing
        elif isinstance(e, Account.Refunded):
            b.give(e.source, e.amount)
            refunded = reservations.get(e.job_id)
            if refunded is not None and refunded.quota_day is not None and refunded.quota_day == b.quota_day:
                b.used_today = max(0, b.used_today - 1)
            return refunded
        elif isinstance(e, Account.Adjusted):
            b.give(e.source, e.delta)
        return None

    @staticmethod
    def _load_balances(cur: psycopg.Cursor[Any], table: str, users: set[UUID]) -> dict[UUID, Balance]:
        cur.execute(f"SELECT {BALANCE_COLUMNS} FROM {table} WHERE user_id = ANY(%s)", (list(users),))
        return {row[0]: Balance(row[0], row[1], dict(row[2]), *row[3:]) for row in cur.fetchall()}

    @staticmethod
    def _load_reservations(cur: psycopg.Cursor[Any], table: str, jobs: set[UUID]) -> dict[UUID, Reserved]:
        if not jobs:
            return {}
        cur.execute(
            f"SELECT job_id, user_id, source, amount, quota_day, open FROM {table} WHERE job_id = ANY(%s)",
            (list(jobs),),
        )
        return {row[0]: Reserved(*row) for row in cur.fetchall()}
