"""The ledger audit: replay the whole event store, recompute every account from its events,
check the invariants of docs/ledger.md, and compare with the read models
(``point_balance``, ``point_usage``, ``point_lot``). The recomputation never reads a read model: it evolves
each ``Account`` and takes each event's flows and usage line from its effect
(``ledger.effects``), then compares.

It streams: the events are read in stream order (``ORDER BY originator_id,
originator_version``, the primary key) through a server-side cursor, by a thread of its own a
page ahead (``read_streams``), and merge-joined with the balance rows and usage lines in the
same order, so memory holds one account at a time, never the log. All three are read in the
binary format, keyed by the user id as text (its order is the UUIDs'), and a usage line is
compared with its job id as hex digits and its times in UTC: what is cheap to read and to
compare, with the same meaning. Everything is read in one REPEATABLE READ snapshot
(exported, ``pg_export_snapshot``, so that several connections read the same state), up to
the ``points`` projection's position in that snapshot (the events after it are not in the read
models yet; the audit first waits for the projection to reach the head it saw when it
started). A large log is audited by worker processes, each a range of the user ids, in that
snapshot (``workers_for``; forked where the caller runs one thread, ``worker_context``); their
reports are added up.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Mapper

from ledger.account import Account
from ledger.effects import Flow, effect, held
from ledger.policy import CREDIT, SUBSCRIPTION, ticket_source, ticket_type_of
from ledger.status import ReservationStatus
from projections import tracking
from projections.events import (
    Notified,
    StreamRange,
    export_snapshot,
    few_collections,
    head,
    ledger_mapper,
    read_streams,
    stream_ranges,
    worker_context,
    workers_for,
)
from projections.lag import Lag, lag
from projections.points import (
    BALANCE_COLUMNS,
    LOT_COLUMNS,
    Balance,
    LotBook,
    LotRow,
    Reserved,
    UsageLine,
    usage_line,
)

POINTS = "points"
# The statuses an event may move a job's reservation to, from each status (the ``Account``'s
# rules): a reservation is closed once (by its result, a failure, a cancel or the sweeper),
# and only a job the sweeper expired may still succeed (delivered free).
_NEXT_STATUS: dict[ReservationStatus | None, frozenset[ReservationStatus]] = {
    ReservationStatus.RESERVED: frozenset(
        {
            ReservationStatus.SUCCEEDED,
            ReservationStatus.FAILED,
            ReservationStatus.CANCELED,
            ReservationStatus.EXPIRED,
        }
    ),
    ReservationStatus.EXPIRED: frozenset({ReservationStatus.SUCCEEDED}),
}
MAX_LISTED = 50
AUDIT_WAIT_S = 10.0  # how long the audit waits for the read models to reach the head it saw


@dataclass(frozen=True)
class Mismatch:
    user_id: UUID | None
    what: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.what}: expected {self.expected!r}, found {self.actual!r}"


@dataclass
class AuditReport:
    users: int = 0
    events: int = 0
    position: int = 0
    head: int = 0
    seconds: float = 0.0
    totals: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    lags: list[Lag] = field(default_factory=list)
    behind: bool = False  # the read model never reached the head seen at the start

    @property
    def ok(self) -> bool:
        return self.mismatch_count == 0 and not self.behind

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def mismatch(self, m: Mismatch) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_LISTED:
            self.mismatches.append(m)

    def lines(self) -> list[str]:
        out = [
            f"audited {self.events} events of {self.users} users up to position {self.position} "
            f"(head {self.head}) in {self.seconds:.2f} s: {self.rate:,.0f} events/s",
            "totals per source (granted, reserved, refunded, adjusted, settled jobs):",
        ]
        for source in sorted(self.totals):
            t = self.totals[source]
            out.append(
                f"  {source}: granted {t['granted']}, reserved {t['reserved']}, refunded {t['refunded']}, "
                f"adjusted {t['adjusted']}, settled {t['settled']}"
            )
        for lg in self.lags:
            out.append(f"lag {lg.name}: {lg.events} events, {lg.seconds:.3f} s (position {lg.position})")
        if self.behind:
            out.append(f"read model behind: points projection at {self.position}, head {self.head}")
        out.append(f"mismatches: {self.mismatch_count}")
        out.extend(f"  {m}" for m in self.mismatches)
        if self.mismatch_count > len(self.mismatches):
            out.append(f"  ... and {self.mismatch_count - len(self.mismatches)} more")
        out.append("OK" if self.ok else "FAILED")
        return out


class _Replay:
    """One account, recomputed from its events, with the invariants checked on the way."""

    def __init__(self, user: UUID, report: AuditReport) -> None:
        self.user = user
        self.report = report
        self.account: Account | None = None
        self.flows: Counter[str] = Counter()
        self.reservations: dict[UUID, Reserved] = {}
        self.refunds: Counter[UUID] = Counter()
        self.settled: Counter[UUID] = Counter()
        self.status: dict[UUID, ReservationStatus] = {}
        self.lines: list[UsageLine] = []
        self.lots = LotBook()  # the lots, recomputed from the events (compared with point_lot)

    def fail(self, what: str, expected: Any, actual: Any) -> None:
        self.report.mismatch(Mismatch(self.user, what, expected, actual))

    def apply(self, n: Notified) -> None:
        e = n.event
        totals = self.report.totals
        try:
            fx = effect(e)  # computed once: the account's evolving by it below reads it again
            self.account = e.mutate(self.account)
        except Exception as exc:  # noqa: BLE001 - a broken stream is a finding, not a crash
            self.fail(f"event {n.position} cannot be applied", "a valid event", repr(exc))
            return
        self.lots.apply(n, fx)
        for movement in fx.movements:
            self.flows[movement.source] += movement.delta
            totals[movement.source][movement.flow] += movement.amount
        reservation: Reserved | None = None
        change = fx.job
        if change is not None:
            job_id = change.job_id
            if change.reserved is not None:
                if job_id in self.reservations:
                    self.fail(f"job {job_id} reserved", 1, 2)
                charge = change.reserved
                reservation = Reserved(job_id, self.user, charge.source, charge.amount, None, True)
                self.reservations[job_id] = reservation
            else:
                reservation = self.reservations.get(job_id)
            if change.refunded is not None:
                self.refunds[job_id] += 1
                if self.refunds[job_id] > 1:
                    self.fail(f"job {job_id} refunds", 1, self.refunds[job_id])
                refund = (change.refunded.source, change.refunded.amount)
                if reservation is None:
                    self.fail(f"job {job_id} refunded", "a reservation", None)
                elif refund != (reservation.source, reservation.amount):
                    self.fail(f"job {job_id} refund", (reservation.source, reservation.amount), refund)
            status = change.status
            if status is not None:
                before = self.status.get(job_id)
                if change.reserved is None and status not in _NEXT_STATUS.get(before, ()):
                    allowed = sorted(s.value for s in _NEXT_STATUS.get(before, ()))
                    after = "no reservation" if before is None else before.value
                    self.fail(f"job {job_id} status after {after}", allowed or "none", status.value)
                self.status[job_id] = status
            if status is ReservationStatus.SUCCEEDED:
                self.settled[job_id] += 1
                if self.settled[job_id] > 1:
                    self.fail(f"job {job_id} completions", 1, self.settled[job_id])
            refunds = self.refunds[job_id]
            if change.settled and refunds:  # a charge kept after it was given back
                self.fail(f"job {job_id} settled", "a charge not refunded", f"refunded {refunds}")
            if change.settled and reservation is not None:
                totals[reservation.source][Flow.SETTLED] += 1
        account = self.account
        assert account is not None
        if account.credits < 0:
            self.fail(f"credits after event {n.position}", ">= 0", account.credits)
        for ticket_type, count in account.tickets.items():
            if count < 0:
                self.fail(f"{ticket_source(ticket_type)} after event {n.position}", ">= 0", count)
        line = usage_line(n, fx, account, reservation)
        if line is not None:
            self.lines.append(line)

    def finish(self) -> None:
        """Per source: granted - reserved + refunded + adjusted must be its balance."""
        a = self.account
        if a is None:
            return
        tickets = {ticket_source(t) for t in a.tickets} | {s for s in self.flows if ticket_type_of(s)}
        for source in (CREDIT, *tickets):
            balance = held(a, source)
            if self.flows[source] != balance:
                self.fail(f"{source}: granted - reserved + refunded + adjusted", self.flows[source], balance)
        if self.flows[SUBSCRIPTION] != 0:
            self.fail("subscription flows", 0, self.flows[SUBSCRIPTION])

    def expected_balance(self) -> dict[str, Any]:
        a = self.account
        assert a is not None
        sub = a.subscription
        return {
            "credits": a.credits,
            "tickets": {k: v for k, v in a.tickets.items() if v},
            "subscription": None if sub is None else (sub["plan"], sub["period_end"], sub["daily_quota"]),
            "quota": (a.quota_day, a.quota_used) if a.quota_day is not None else None,
            "pending_reservations": len(a.open_jobs()),
        }


def _actual_balance(row: tuple[Any, ...]) -> dict[str, Any]:
    b = Balance(UUID(row[0]), row[1], dict(row[2]), *row[3:])
    return {
        "credits": b.credits,
        "tickets": {k: v for k, v in b.tickets.items() if v},
        "subscription": None if b.plan is None else (b.plan, b.period_end, b.daily_quota),
        "quota": (b.quota_day.isoformat(), b.used_today) if b.quota_day is not None else None,
        "pending_reservations": b.pending,
    }


_BALANCE_COLUMNS = BALANCE_COLUMNS.replace("user_id", "user_id::text", 1)  # merged on the id as text

# A usage line as compared: the columns of ``point_usage`` after ``user_id``, the job id as
# its 32 hex digits (cheaper to read and to compare than a UUID; shown as one, ``_shown``).
_USAGE_COLUMNS = (
    "position, replace(job_id::text, '-', ''), type, source, amount, balance_after, reason, created_at, "
    "category"
)


def _line(u: UsageLine) -> tuple[Any, ...]:
    job = u.job_id
    return (
        u.position,
        None if job is None else job.hex,
        u.type,
        u.source,
        u.amount,
        u.balance_after,
        u.reason,
        u.created_at,
        u.category,
    )


def _shown(line: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """A compared usage line as ``point_usage`` holds it (its job id a UUID)."""
    if line is None or line[1] is None:
        return line
    return (line[0], UUID(line[1]), *line[2:])


def _pages(
    conn: psycopg.Connection[Any], name: str, sql: str, params: tuple[Any, ...], page: int = 5000
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql`` through a server-side cursor, page by page, in the binary format."""
    with conn.cursor(name=name, binary=True) as cur:
        cur.execute(sql, params)
        while rows := cur.fetchmany(page):
            yield rows


class _Rows:
    """Rows in the merge join's order, keyed by their first column (a user id as text), with
    one row of look-ahead."""

    def __init__(self, pages: Iterator[list[tuple[Any, ...]]]) -> None:
        self.rows: Iterator[tuple[Any, ...]] = itertools.chain.from_iterable(pages)
        self.peek: tuple[Any, ...] | None = next(self.rows, None)

    def of(self, key: str) -> list[tuple[Any, ...]]:
        """The rows of ``key``, next in order (none if the next row is of another key)."""
        found = []
        rows = self.rows
        peek = self.peek
        while peek is not None and peek[0] == key:
            found.append(peek)
            peek = next(rows, None)
        self.peek = peek
        return found

    def before(self, key: str | None) -> list[tuple[Any, ...]]:
        """The rows of the keys before ``key`` (None: all the rows left)."""
        found = []
        while self.peek is not None and (key is None or self.peek[0] < key):
            found.append(self.peek)
            self.peek = next(self.rows, None)
        return found


def audit(
    url: str,
    user: UUID | None = None,
    *,
    mapper: Mapper[Any] | None = None,
    wait_s: float = AUDIT_WAIT_S,
    workers: int | None = None,
) -> AuditReport:
    """Audit the ledger (or the one ``user``). ``workers``: how many processes replay the
    users, each a range of them in the same snapshot (default: ``workers_for``)."""
    report = AuditReport()
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            start_head = head(cur)
        conn.commit()
        deadline = time.monotonic() + wait_s
        while tracking.position(conn, POINTS) < start_head and time.monotonic() < deadline:
            conn.commit()
            time.sleep(0.05)  # waiting for another process's runner: poll with a deadline
        conn.commit()
        report.lags = lag(conn, mapper or ledger_mapper())
        conn.commit()
        snapshot = export_snapshot(conn)  # every reader below sees this one state
        position = tracking.position(conn, POINTS)
        with conn.cursor() as cur:
            report.head = head(cur)
        report.position = position
        report.behind = position < start_head
        if workers is None:
            workers = 1 if user is not None or mapper is not None else workers_for(position)
        if user is not None or workers <= 1:
            parts = [
                _audit_part(
                    url, snapshot, position, StreamRange(user=user) if user else StreamRange(), mapper
                )
            ]
        else:
            with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
                jobs = [
                    pool.submit(_audit_part, url, snapshot, position, p, None) for p in stream_ranges(workers)
                ]
                parts = [job.result() for job in jobs]
        conn.rollback()
    for part in parts:
        report.users += part.users
        report.events += part.events
        for source, counts in part.totals.items():
            report.totals[source].update(counts)
        report.mismatch_count += part.mismatch_count
        report.mismatches.extend(part.mismatches[: MAX_LISTED - len(report.mismatches)])
    report.seconds = time.monotonic() - started
    return report


def _audit_part(
    url: str, snapshot: str, position: int, part: StreamRange, mapper: Mapper[Any] | None
) -> AuditReport:
    """Replay the users of ``part`` from the events up to ``position`` in the exported
    ``snapshot`` and compare them with their read-model rows (merge-joined in user order;
    the user ids of all three as text, whose order is the UUIDs' order)."""
    report = AuditReport()
    streams = read_streams(url, snapshot, position, part, mapper or ledger_mapper())
    uwhere, uparams = part.where("user_id")
    with psycopg.connect(url) as conn:  # the read models, on this thread, in the same snapshot
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            # Times as the events hold them (``timezone.utc``): the same instants either way,
            # compared far faster than across two time zones.
            conn.execute("SET LOCAL TIME ZONE 'UTC'")
            balances = _Rows(
                _pages(
                    conn,
                    "audit_balances",
                    f"SELECT {_BALANCE_COLUMNS} FROM point_balance WHERE {uwhere} ORDER BY user_id",
                    uparams,
                )
            )
            usage = _Rows(
                _pages(
                    conn,
                    "audit_usage",
                    f"SELECT user_id::text, {_USAGE_COLUMNS} FROM point_usage WHERE {uwhere} "
                    "ORDER BY user_id, position",
                    uparams,
                )
            )
            lots = _Rows(
                _pages(
                    conn,
                    "audit_lots",
                    f"SELECT user_id::text, {_LOT_COLUMNS} FROM point_lot WHERE {uwhere} "
                    "ORDER BY user_id, lot_id",
                    uparams,
                )
            )
            with few_collections():
                _merge(report, streams, balances, usage, lots)
    return report


def _merge(
    report: AuditReport,
    streams: Iterator[tuple[UUID, list[Notified]]],
    balances: _Rows,
    usage: _Rows,
    lots: _Rows,
) -> None:
    for user_id, events in streams:
        key = str(user_id)
        _extra_rows(report, balances.before(key), usage.before(key))
        _extra_lots(report, lots.before(key))
        replay = _Replay(user_id, report)
        for n in events:
            replay.apply(n)
        report.events += len(events)
        replay.finish()
        report.users += 1
        found = balances.of(key)
        if replay.account is not None:
            expected = replay.expected_balance()
            if not found:
                replay.fail("point_balance row", expected, None)
            else:
                actual = _actual_balance(found[0])
                for name, value in expected.items():
                    if actual[name] != value:
                        replay.fail(f"point_balance.{name}", value, actual[name])
        lines = [r[1:] for r in usage.of(key)]
        _check_statement(replay, lines, found[0] if found else None)
        expected_lines = [_line(u) for u in replay.lines]
        if lines != expected_lines:
            _diff_lines(replay, expected_lines, lines)
        _diff_lots(replay, [r[1:] for r in lots.of(key)])
    _extra_rows(report, balances.before(None), usage.before(None))
    _extra_lots(report, lots.before(None))


# A lot as compared: the columns of ``point_lot`` after ``user_id``.
_LOT_COLUMNS = LOT_COLUMNS.replace("user_id, ", "", 1)


def _lot(r: LotRow) -> tuple[Any, ...]:
    return r.row()[1:]


def _diff_lots(replay: _Replay, actual: list[tuple[Any, ...]]) -> None:
    """The lots recomputed from the events against the user's ``point_lot`` rows."""
    expected = sorted((_lot(r) for r in replay.lots.rows()), key=lambda lot: lot[0])
    if actual == expected:
        return
    found = {lot[0]: lot for lot in actual}
    for lot in expected:
        row = found.pop(lot[0], None)
        if row != lot:
            replay.fail(f"point_lot {lot[0]}", lot, row)
    for lot_id, row in sorted(found.items()):
        replay.fail(f"point_lot {lot_id}", None, row)


def _extra_lots(report: AuditReport, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        report.mismatch(Mismatch(UUID(row[0]), f"point_lot {row[1]} without events", None, row[1:]))


def _check_statement(replay: _Replay, lines: list[tuple[Any, ...]], row: tuple[Any, ...] | None) -> None:
    """The read models as a statement reads them (``GET /points/statement``): per source, each
    line's ``balance_after`` is the one before it plus its ``amount`` (so any period's opening
    balance plus its lines is its closing balance), and all the lines of a source add up to its
    ``point_balance``. Compared with the read models alone: a line or a balance changed by
    hand breaks it even where the replay above agrees with neither."""
    sums: Counter[str] = Counter()
    after: dict[str, int] = {}
    for line in lines:
        position, source, amount, balance_after = line[0], line[3], line[4], line[5]
        if source == SUBSCRIPTION:
            continue
        sums[source] += amount
        expected = after.get(source, 0) + amount
        if balance_after != expected:
            replay.fail(f"point_usage line {position}: balance before + amount", expected, balance_after)
        after[source] = expected if balance_after is None else balance_after
    if row is None:
        return
    held = {CREDIT: int(row[1])} | {ticket_source(t): int(n) for t, n in dict(row[2]).items()}
    for source in sorted(set(held) | set(sums)):
        if sums[source] != held.get(source, 0):
            replay.fail(f"{source}: sum of point_usage lines", held.get(source, 0), sums[source])


def _extra_rows(report: AuditReport, balances: list[tuple[Any, ...]], usage: list[tuple[Any, ...]]) -> None:
    for row in balances:
        report.mismatch(Mismatch(UUID(row[0]), "point_balance row without events", None, "a row"))
    for row in usage:
        report.mismatch(
            Mismatch(UUID(row[0]), f"point_usage line {row[1]} without an event", None, _shown(row[1:]))
        )


def _diff_lines(replay: _Replay, expected: list[tuple[Any, ...]], actual: list[tuple[Any, ...]]) -> None:
    by_position = {line[0]: line for line in actual}
    for line in expected:
        found = by_position.pop(line[0], None)
        if found != line:
            replay.fail(f"point_usage line {line[0]}", _shown(line), _shown(found))
    for position, line in sorted(by_position.items()):
        replay.fail(f"point_usage line {position}", None, _shown(line))
