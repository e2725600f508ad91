"""Reads of ``point_usage`` for statements and usage reports (indexes of migration 0021)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from command_api.pagination import Key

LINE_COLUMNS = "position, created_at, type, source, category, amount, balance_after, job_id, reason"


def sources(session: Session, user_id: uuid.UUID) -> list[str]:
    """The ticket sources the user's balance row holds (``ticket:<type>``; every source a line
    of theirs ever moved is one of them, or ``credit``)."""
    row = session.execute(
        text("SELECT tickets FROM point_balance WHERE user_id = :u"), {"u": user_id}
    ).scalar()
    return [f"ticket:{t}" for t in (row or {})]


def balances_at(
    session: Session, user_id: uuid.UUID, sources: Sequence[str], at: datetime, until: datetime
) -> list[RowMapping]:
    """Per source, its balance before ``at`` and before ``until``: the ``balance_after`` of its
    last line before each (null: none, a balance of 0); one index probe each."""
    probe = (
        "(SELECT u.balance_after FROM point_usage u WHERE u.user_id = :u AND u.source = s.source "
        "AND u.created_at < {t} ORDER BY u.created_at DESC, u.position DESC LIMIT 1)"
    )
    rows = session.execute(
        text(
            f"SELECT s.source, {probe.format(t=':at')} AS opening, "  # noqa: S608 - fixed text
            f"{probe.format(t=':until')} AS closing "
            "FROM unnest(CAST(:sources AS text[])) AS s(source)"
        ),
        {"u": user_id, "sources": list(sources), "at": at, "until": until},
    ).mappings()
    return list(rows)


def lines(
    session: Session, user_id: uuid.UUID, start: datetime, end: datetime, limit: int, after: Key | None
) -> list[RowMapping]:
    """The user's lines with ``start <= created_at < end``, oldest first: at most ``limit``
    after the key ``after`` = (created_at, position)."""
    params: dict[str, Any] = {"u": user_id, "start": start, "end": end, "limit": limit}
    where = "user_id = :u AND created_at >= :start AND created_at < :end"
    if after is not None:
        where += " AND (created_at, position) > (:at, :position)"
        params["at"], params["position"] = after
    rows = session.execute(
        text(
            f"SELECT {LINE_COLUMNS} FROM point_usage WHERE {where} "  # noqa: S608 - fixed text
            "ORDER BY created_at, position LIMIT :limit"
        ),
        params,
    ).mappings()
    return list(rows)


# The CSV of a statement's lines, by the server (``COPY ... TO STDOUT``): times in UTC as
# ISO 8601 with ``Z``, as the JSON shows them.
CSV_LINES = (
    "COPY (SELECT 'line', position, "
    """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), """
    "type, source, category, amount, balance_after, job_id, reason FROM point_usage "
    "WHERE user_id = {u} AND created_at >= {start} AND created_at < {end} "
    "ORDER BY created_at, position) TO STDOUT WITH (FORMAT csv)"
)


CHUNK = 256 * 1024


def copy_lines_csv(
    conn: psycopg.Connection[Any], user_id: uuid.UUID, start: datetime, end: datetime
) -> Iterator[bytes]:
    """The CSV rows of the user's lines in the period, as the server writes them, in chunks
    of about ``CHUNK`` bytes (the server sends a row at a time: one response write each
    would cost more than the rows)."""
    query = sql.SQL(CSV_LINES).format(u=sql.Literal(user_id), start=sql.Literal(start), end=sql.Literal(end))
    chunk = bytearray()
    with conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            chunk += block
            if len(chunk) >= CHUNK:
                yield bytes(chunk)
                chunk.clear()
    if chunk:
        yield bytes(chunk)


# ------------------------------------------------------------------------------- usage report
def usage_report(session: Session, start: datetime, end: datetime, by_user: bool) -> list[RowMapping]:
    """Every user's lines with ``start <= created_at < end`` summed per (day or user, source,
    type, category), in that order (``service.usage_report`` turns them into its columns)."""
    key = "user_id::text" if by_user else "(created_at AT TIME ZONE 'UTC')::date::text"
    rows = session.execute(
        text(
            f"SELECT {key} AS key, source, type, category, sum(amount) AS amount, count(*) AS lines "  # noqa: S608
            "FROM point_usage WHERE created_at >= :start AND created_at < :end "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
        ),
        {"start": start, "end": end},
    ).mappings()
    return list(rows)


# ------------------------------------------------------------------------------ balance alerts
def thresholds(session: Session, user_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        text("SELECT source, below FROM balance_alert_thresholds WHERE user_id = :u"), {"u": user_id}
    )
    return {source: int(below) for source, below in rows}


def set_thresholds(session: Session, user_id: uuid.UUID, wanted: dict[str, int | None]) -> None:
    """Sets (or, for None, deletes) the thresholds of the sources in ``wanted``."""
    gone = [s for s, below in wanted.items() if below is None]
    session.execute(
        text("DELETE FROM balance_alert_thresholds WHERE user_id = :u AND source = ANY(:s)"),
        {"u": user_id, "s": gone},
    )
    for source, below in wanted.items():
        if below is not None:
            session.execute(
                text(
                    "INSERT INTO balance_alert_thresholds (user_id, source, below) VALUES (:u, :s, :b) "
                    "ON CONFLICT (user_id, source) DO UPDATE SET below = EXCLUDED.below, updated_at = now()"
                ),
                {"u": user_id, "s": source, "b": below},
            )
