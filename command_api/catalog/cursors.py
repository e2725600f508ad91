"""Keyset cursors over ``(created_at, id)``: ``<microseconds since the epoch>.<id hex>``.

Stable under inserts (no offsets), at most 49 characters, opaque to clients."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import tuple_

from command_api.problems import ProblemError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


def encode(created_at: datetime, id_: uuid.UUID) -> str:
    return f"{(created_at - EPOCH) // ONE_MICROSECOND}.{id_.hex}"


def decode(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    micros, _, hex_id = cursor.partition(".")
    try:
        if not micros.isdigit() or len(micros) > 18 or len(hex_id) != 32:
            raise ValueError(cursor)
        return EPOCH + int(micros) * ONE_MICROSECOND, uuid.UUID(hex=hex_id)
    except (ValueError, OverflowError):
        raise ProblemError(400, "invalid_cursor", "the cursor is not one this API returned") from None


def after(created_col: Any, id_col: Any, cursor: str | None, *, descending: bool) -> Any:
    """The WHERE clause of the page after ``cursor`` (None: no condition)."""
    position = decode(cursor)
    if position is None:
        return None
    key = tuple_(created_col, id_col)
    return key < tuple_(*position) if descending else key > tuple_(*position)


def page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """Split ``limit + 1`` fetched rows into the page and the next page's cursor (None when
    this is the last page). Rows have ``created_at`` and ``id``."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(rows[-1].created_at, rows[-1].id)
