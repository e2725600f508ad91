"""The rules of statements and usage reports: the period's bounds, the balances per source at
its ends, the lines in between (paged, or all of them as CSV)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from command_api.billing import repository
from command_api.billing.schemas import AlertsIn, AlertsOut, Statement, StatementLine, UsageReport, UsageRow
from command_api.pagination import cut, decode
from command_api.problems import DomainError
from ledger.policy import CREDIT


class InvalidPeriod(DomainError):
    status, code = 422, "invalid_period"

    def __init__(self) -> None:
        super().__init__("from must be before to")


class PeriodTooLong(DomainError):
    status, code = 422, "period_too_long"

    def __init__(self, max_days: int) -> None:
        super().__init__(f"a period covers at most {max_days} days")


def period(start: datetime, end: datetime, max_days: int) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC (a time without an offset is UTC), checked."""
    start, end = (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC) for t in (start, end))
    if start >= end:
        raise InvalidPeriod()
    if end - start > timedelta(days=max_days):
        raise PeriodTooLong(max_days)
    return start, end


def _balances(
    session: Session, user_id: uuid.UUID, ticket_types: list[str], start: datetime, end: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """Per source (credits, every configured ticket type, any other the account holds), its
    balance at ``start`` and at ``end``."""
    sources = [CREDIT, *(f"ticket:{t}" for t in ticket_types)]
    sources += [s for s in repository.sources(session, user_id) if s not in sources]
    rows = repository.balances_at(session, user_id, sources, start, end)
    opening = {r["source"]: int(r["opening"] or 0) for r in rows}
    closing = {r["source"]: int(r["closing"] or 0) for r in rows}
    return opening, closing


def statement(
    session: Session,
    user_id: uuid.UUID,
    ticket_types: list[str],
    start: datetime,
    end: datetime,
    limit: int,
    cursor: str | None,
) -> Statement:
    after = decode(cursor, datetime, int)
    rows = repository.lines(session, user_id, start, end, limit + 1, after)
    items, next_cursor = cut(rows, limit, lambda r: (r["created_at"], r["position"]))
    opening, closing = _balances(session, user_id, ticket_types, start, end)
    return Statement(
        **{"from": start},
        to=end,
        opening=opening,
        closing=closing,
        items=[StatementLine.model_validate(dict(r)) for r in items],
        next_cursor=next_cursor,
    )


CSV_COLUMNS = (
    "row",
    "position",
    "created_at",
    "type",
    "source",
    "category",
    "amount",
    "balance_after",
    "job_id",
    "reason",
)


def _csv_rows(rows: list[tuple[Any, ...]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def statement_csv(
    session: Session,
    engine: Engine,
    user_id: uuid.UUID,
    ticket_types: list[str],
    start: datetime,
    end: datetime,
) -> Iterator[bytes]:
    """The statement as CSV, streamed: the header, an ``opening`` row per source, every line
    of the period (``line`` rows, written by the server: ``COPY ... TO STDOUT``), a ``closing``
    row per source. The balances are read first (in ``session``); the lines on a connection of
    their own while the response streams."""
    opening, closing = _balances(session, user_id, ticket_types, start, end)
    head = [CSV_COLUMNS] + [("opening", "", "", "", s, "", "", n, "", "") for s, n in opening.items()]
    tail = [("closing", "", "", "", s, "", "", n, "", "") for s, n in closing.items()]

    def stream() -> Iterator[bytes]:
        yield _csv_rows(head)
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            yield from repository.copy_lines_csv(raw, user_id, start, end)
            conn.rollback()
        yield _csv_rows(tail)

    return stream()


def usage_report(
    session: Session, start: datetime, end: datetime, group_by: Literal["day", "user"]
) -> UsageReport:
    """Per (day or user, source): points charged (reservations), refunded, expired, adjusted,
    granted per category, and the jobs settled."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for r in repository.usage_report(session, start, end, by_user=group_by == "user"):
        row = sums.setdefault((r["key"], r["source"]), dict.fromkeys(UsageRow.model_fields, 0))
        amount, kind = int(r["amount"]), r["type"]
        if kind == "reservation":
            row["charged"] -= amount
        elif kind == "refund":
            row["refunded"] += amount
        elif kind == "expiry":
            row["expired"] -= amount
        elif kind == "adjustment":
            row["adjusted"] += amount
        elif kind == "settlement":
            row["settled_jobs"] += int(r["lines"])
        elif kind == "grant" and r["category"] in ("paid", "promotional"):
            row[f"granted_{r['category']}"] += amount
    rows = [
        UsageRow.model_validate(row | {"key": key, "source": source}) for (key, source), row in sums.items()
    ]
    return UsageReport(**{"from": start}, to=end, group_by=group_by, rows=rows)


# The fields of a balance alert and the source each watches.
ALERT_SOURCES = {
    "credits_below": CREDIT,
    "lookbook_tickets_below": "ticket:lookbook",
    "video_tickets_below": "ticket:video",
}


def alerts(session: Session, user_id: uuid.UUID) -> AlertsOut:
    found = repository.thresholds(session, user_id)
    return AlertsOut.model_validate({field: found.get(source) for field, source in ALERT_SOURCES.items()})


def set_alerts(session: Session, user_id: uuid.UUID, body: AlertsIn) -> AlertsOut:
    """Replaces the caller's thresholds (null clears one). A crossing is a line that takes a
    balance from the threshold or more to less; those after the change are alerted."""
    wanted = {source: getattr(body, field) for field, source in ALERT_SOURCES.items()}
    repository.set_thresholds(session, user_id, wanted)
    return alerts(session, user_id)
