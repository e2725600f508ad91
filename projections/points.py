"""Projection ``points``: ``point_balance`` (one row per user) and ``point_usage`` (the
accounting ledger: one line per reservation, settlement, refund, grant, adjustment and expiry;
a line that grants a lot carries its ``category``), with ``point_reservation`` (each job's
charge, to refund to its source and count open jobs) and ``point_lot`` (each lot: what it was
granted, what it has left, when it expires; ``LotBook``).

What each event does to them is its effect (``ledger.effects``), the same the ``Account``
evolves by; this module only applies it to the rows."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from uuid import UUID

import psycopg

from ledger.effects import Balances, Effect, LotMove, give_back_quota, held, move, use_quota
from ledger.lots import Category, LotRecord, draw
from ledger.policy import SUBSCRIPTION
from projections.base import copy_rows, jsonb, upsert_rows
from projections.events import Notified

BALANCE_TYPES = (
    ("user_id", "uuid"),
    ("credits", "bigint"),
    ("tickets", "jsonb"),
    ("subscription_plan", "text"),
    ("subscription_period_end", "timestamptz"),
    ("daily_quota", "integer"),
    ("quota_day", "date"),
    ("used_today", "integer"),
    ("pending_reservations", "integer"),
    ("position", "bigint"),
    ("updated_at", "timestamptz"),
)
BALANCE_COLUMNS = ", ".join(name for name, _ in BALANCE_TYPES)


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

    def row(self) -> tuple[Any, ...]:
        return (
            self.user_id,
            self.credits,
            jsonb(self.tickets),
            self.plan,
            self.period_end,
            self.daily_quota,
            self.quota_day,
            self.used_today,
            self.pending,
            self.position,
            self.updated_at,
        )


RESERVATION_TYPES = (
    ("job_id", "uuid"),
    ("user_id", "uuid"),
    ("source", "text"),
    ("amount", "bigint"),
    ("quota_day", "date"),
    ("open", "boolean"),
)
RESERVATION_COLUMNS = ", ".join(name for name, _ in RESERVATION_TYPES)
USAGE_TYPES = (
    ("position", "bigint"),
    ("user_id", "uuid"),
    ("job_id", "uuid"),
    ("type", "text"),
    ("source", "text"),
    ("amount", "bigint"),
    ("balance_after", "bigint"),
    ("reason", "text"),
    ("created_at", "timestamptz"),
    ("category", "text"),
)


@dataclass
class Reserved:
    job_id: UUID
    user_id: UUID
    source: str
    amount: int
    quota_day: date | None
    open: bool


def _reservation_row(r: Reserved) -> tuple[Any, ...]:
    return (r.job_id, r.user_id, r.source, r.amount, r.quota_day, r.open)


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
    category: str | None = None  # the category of the lot a line grants (``paid``, ``promotional``)


# A usage line's values in the order of ``USAGE_TYPES`` (the order of its fields).
_line_values = operator.attrgetter(*(name for name, _ in USAGE_TYPES))


def usage_line(n: Notified, fx: Effect, balances: Balances, reservation: Reserved | None) -> UsageLine | None:
    """The accounting line of an event with effect ``fx`` (None for events that write none),
    computed after the event was applied to ``balances``."""
    usage = fx.usage
    if usage is None:
        return None
    source = usage.source if usage.source is not None else reservation.source if reservation else None
    if source is None:  # a settlement of a job whose reservation is unknown
        return None
    e = n.event
    return UsageLine(
        n.position,
        e.originator_id,
        None if fx.job is None else fx.job.job_id,
        usage.type.value,
        source,
        usage.amount,
        held(balances, source),
        usage.reason,
        e.timestamp,
        None if fx.lot is None else fx.lot.category,
    )


class PointsProjection:
    name = "points"
    tables = ("point_balance", "point_usage", "point_reservation", "point_lot")
    copied = (
        "point_balance",
        "point_usage",
        "point_reservation",
        "point_lot",
    )  # the tables ``apply_new`` only copies rows into

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        balances = self._load_balances(cur, tables["point_balance"], {n.event.originator_id for n in batch})
        jobs = [fx.job for n in batch if (fx := n.effect).job is not None]
        reserved_here = {j.job_id for j in jobs if j.reserved is not None}
        wanted = {j.job_id for j in jobs} - reserved_here
        reservations = self._load_reservations(cur, tables["point_reservation"], wanted)
        touched, lines = self._fold(batch, balances, reservations)
        upsert_rows(
            cur,
            tables["point_balance"],
            BALANCE_TYPES,
            [b.row() for b in balances.values() if b.updated_at is not None],
            "ON CONFLICT (user_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in BALANCE_TYPES[1:]),
        )
        upsert_rows(
            cur,
            tables["point_reservation"],
            RESERVATION_TYPES,
            [_reservation_row(reservations[j]) for j in touched],
            "ON CONFLICT (job_id) DO UPDATE SET open = EXCLUDED.open",
        )
        upsert_rows(cur, tables["point_usage"], USAGE_TYPES, [_line_values(line) for line in lines], "")
        self._apply_lots(cur, batch, tables["point_lot"])

    def apply_new(
        self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]
    ) -> None:
        """Like ``apply``, for a batch that holds every event of each stream it touches,
        from the first, into tables that have no row of them yet (a rebuild): the rows are
        computed in memory and copied in (``COPY``), each written once."""
        balances: dict[UUID, Balance] = {}
        reservations: dict[UUID, Reserved] = {}
        _, lines = self._fold(batch, balances, reservations)
        rows = [b.row() for b in balances.values() if b.updated_at is not None]
        copy_rows(cur, tables["point_balance"], BALANCE_TYPES, rows)
        copy_rows(
            cur, tables["point_reservation"], RESERVATION_TYPES, map(_reservation_row, reservations.values())
        )
        copy_rows(cur, tables["point_usage"], USAGE_TYPES, map(_line_values, lines))
        book = LotBook()
        for n in batch:
            book.apply(n, n.effect)
        copy_rows(cur, tables["point_lot"], LOT_TYPES, (r.row() for r in book.rows()))

    @staticmethod
    def _apply_lots(cur: psycopg.Cursor[Any], batch: Sequence[Notified], table: str) -> None:
        """The lots a live batch granted, burnt or gave back (``LotBook``), upserted."""
        book = load_lots(cur, table, batch)
        for n in batch:
            book.apply(n, n.effect)
        upsert_rows(
            cur,
            table,
            LOT_TYPES,
            [r.row() for r in book.changed.values()],
            "ON CONFLICT (user_id, lot_id) DO UPDATE SET remaining = EXCLUDED.remaining",
        )

    def _fold(
        self, batch: Sequence[Notified], balances: dict[UUID, Balance], reservations: dict[UUID, Reserved]
    ) -> tuple[set[UUID], list[UsageLine]]:
        """Evolve the rows by the batch's effects, in memory; returns the reservations it
        touched and the usage lines it writes."""
        touched: set[UUID] = set()
        lines: list[UsageLine] = []
        for n in batch:
            fx = n.effect
            e = n.event
            user = e.originator_id
            b = balances.get(user)
            if b is None:
                b = balances[user] = Balance(user)
            r = self._evolve(b, reservations, fx)
            if r is not None:
                touched.add(r.job_id)
            b.position, b.updated_at = n.position, e.timestamp
            usage = usage_line(n, fx, b, r)
            if usage is not None:
                lines.append(usage)
        return touched, lines

    @staticmethod
    def _evolve(b: Balance, reservations: dict[UUID, Reserved], fx: Effect) -> Reserved | None:
        """Apply an event's effect to the read model's row (as the Account applies it to
        itself). Returns the reservation the event concerns (when it concerns one)."""
        for movement in fx.movements:
            move(b, movement.source, movement.delta)
        if fx.subscription is not None:
            s = fx.subscription.active
            b.plan, b.period_end, b.daily_quota = (
                (None, None, None) if s is None else (s.plan, s.period_end, s.daily_quota)
            )
        change = fx.job
        if change is None:
            return None
        if change.reserved is not None:
            day = None if change.quota_day is None else date.fromisoformat(change.quota_day)
            if day is not None:
                b.quota_day, b.used_today = use_quota(b.quota_day, b.used_today, day)
            b.pending += 1
            charge = change.reserved
            opened = reservations[change.job_id] = Reserved(
                change.job_id, b.user_id, charge.source, charge.amount, day, True
            )
            return opened
        r = reservations.get(change.job_id)
        if r is None:
            return None
        if change.status is not None and not change.status.open and r.open:
            r.open = False
            b.pending -= 1
        if change.refunded is not None:
            b.used_today = give_back_quota(b.quota_day, b.used_today, r.quota_day)
        return r

    @staticmethod
    def _load_balances(cur: psycopg.Cursor[Any], table: str, users: set[UUID]) -> dict[UUID, Balance]:
        cur.execute(f"SELECT {BALANCE_COLUMNS} FROM {table} WHERE user_id = ANY(%s)", (list(users),))
        return {row[0]: Balance(row[0], row[1], dict(row[2]), *row[3:]) for row in cur.fetchall()}

    @staticmethod
    def _load_reservations(cur: psycopg.Cursor[Any], table: str, jobs: set[UUID]) -> dict[UUID, Reserved]:
        if not jobs:
            return {}
        cur.execute(
            f"SELECT {RESERVATION_COLUMNS} FROM {table} WHERE job_id = ANY(%s)",
            (list(jobs),),
        )
        return {row[0]: Reserved(*row) for row in cur.fetchall()}


# ------------------------------------------------------------------------------------ lots
# ``point_lot``: one row per lot (``ledger.lots``), what it was granted and what it has left
# (neither burnt nor expired). Evolved by the same effects as the ``Account``'s own lots
# (``LotBook``), written beside the balances by ``apply``/``apply_new``.
LOT_TYPES = (
    ("user_id", "uuid"),
    ("lot_id", "bigint"),
    ("source", "text"),
    ("category", "text"),
    ("expires_at", "timestamptz"),
    ("granted_at", "timestamptz"),
    ("granted", "bigint"),
    ("remaining", "bigint"),
)
LOT_COLUMNS = ", ".join(name for name, _ in LOT_TYPES)


@dataclass
class LotRow:
    user_id: UUID
    lot_id: int
    source: str
    category: str
    expires_at: datetime | None
    granted_at: datetime
    granted: int
    remaining: int

    def row(self) -> tuple[Any, ...]:
        return (
            self.user_id,
            self.lot_id,
            self.source,
            self.category,
            self.expires_at,
            self.granted_at,
            self.granted,
            self.remaining,
        )

    def record(self) -> LotRecord:
        return LotRecord(
            source=self.source,
            category=self.category,
            expires_at=self.expires_at,
            granted_at=self.granted_at,
            amount=self.granted,
            left=self.remaining,
        )


class LotBook:
    """The lots of some users, evolved event by event as the ``Account`` evolves its own:
    a grant (or a positive adjustment) is a new lot; the lots an event burnt or gave back
    (``Effect.lot_moves``) move; an event from before lots were recorded (``lot_moves`` None)
    moves what ``ledger.effects`` says it moved: a reservation or a negative adjustment burnt
    by the burn order at its time (``ledger.lots.draw``), a refund gave back what its
    reservation burnt (a reservation this book did not see: a new paid lot of what the refund
    gave back, under the refund's stream version, as the ``Account`` does for a job it no
    longer remembers). Unlike the ``Account``, it forgets no lot. A move on a lot it does not
    hold is left out (the audit reports such a stream: the ``Account`` cannot apply it)."""

    def __init__(self, rows: Iterable[LotRow] = ()) -> None:
        self.lots: dict[UUID, dict[int, LotRow]] = {}
        for r in rows:
            self.lots.setdefault(r.user_id, {})[r.lot_id] = r
        self.burnt: dict[UUID, tuple[LotMove, ...]] = {}  # the lots each job's reservation burnt
        self.changed: dict[tuple[UUID, int], LotRow] = {}

    def of(self, user: UUID) -> dict[int, LotRow]:
        return self.lots.get(user, {})

    def rows(self) -> list[LotRow]:
        return [r for lots in self.lots.values() for r in lots.values()]

    def apply(self, n: Notified, fx: Effect) -> None:
        job = fx.job
        if fx.lot is None and fx.lot_moves == () and (job is None or job.reserved is None):
            return  # the common case: no lot granted, burnt or given back, no charge to remember
        e = n.event
        user: UUID = e.originator_id
        lots = self.lots.setdefault(user, {})
        if fx.lot is not None:
            g = fx.lot
            lots[g.id] = self._changed(
                LotRow(user, g.id, g.source, g.category, g.expires_at, g.granted_at, g.amount, g.amount)
            )
        moves = fx.lot_moves if fx.lot_moves is not None else self._by_rule(user, lots, fx, e)
        if job is not None and job.reserved is not None:
            self.burnt[job.job_id] = moves
        for m in moves:
            row = lots.get(m.lot)
            if row is not None:
                row.remaining += m.delta
                self._changed(row)

    def _changed(self, row: LotRow) -> LotRow:
        self.changed[(row.user_id, row.lot_id)] = row
        return row

    def _by_rule(self, user: UUID, lots: dict[int, LotRow], fx: Effect, e: Any) -> tuple[LotMove, ...]:
        """What an event from before lots were recorded moved (``ledger.effects``)."""
        if fx.job is not None and fx.job.refunded is not None:
            burnt = self.burnt.get(fx.job.job_id)
            if burnt is not None:
                return tuple(LotMove(m.lot, -m.delta) for m in burnt)
            charge = fx.job.refunded
            if charge.source == SUBSCRIPTION:
                return ()
            lot_id = int(e.originator_version)
            lots[lot_id] = self._changed(
                LotRow(user, lot_id, charge.source, Category.PAID.value, None, e.timestamp, 0, 0)
            )
            return (LotMove(lot_id, charge.amount),)
        records = {str(i): r.record() for i, r in lots.items() if r.remaining > 0}
        burnt_now: tuple[LotMove, ...] = ()
        for movement in fx.movements:
            if movement.delta < 0 and movement.source != SUBSCRIPTION:
                taken = draw(records, movement.source, -movement.delta, e.timestamp)
                burnt_now = tuple(LotMove(d.lot, -d.amount) for d in taken)
        return burnt_now


def lots_needed(batch: Sequence[Notified]) -> tuple[set[UUID], set[int]]:
    """The users whose lots a batch may move and the lot ids its events name."""
    users: set[UUID] = set()
    ids: set[int] = set()
    for n in batch:
        fx = n.effect
        if fx.lot_moves is None or fx.lot_moves:
            users.add(n.event.originator_id)
            ids.update(m.lot for m in fx.lot_moves or ())
    return users, ids


def load_lots(cur: psycopg.Cursor[Any], table: str, batch: Sequence[Notified]) -> LotBook:
    """The lots a batch may move: of its users, those with points left (what a reservation
    from before lots burns by the burn order) and those its events name."""
    users, ids = lots_needed(batch)
    if not users:
        return LotBook()
    cur.execute(
        f"SELECT {LOT_COLUMNS} FROM {table} WHERE user_id = ANY(%s) AND (remaining > 0 OR lot_id = ANY(%s))",
        (list(users), list(ids)),
    )
    return LotBook(LotRow(*row) for row in cur.fetchall())


def users_with_due_lots(conn: psycopg.Connection[Any], at: datetime, limit: int = 1000) -> list[UUID]:
    """The users holding a lot with points left whose expiry has come at ``at``, from
    ``point_lot`` (the sweeper's candidates: each account records its own expiries)."""
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM point_lot "
        "WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= %s ORDER BY user_id LIMIT %s",
        (at, limit),
    ).fetchall()
    return [row[0] for row in rows]
