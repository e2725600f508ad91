"""Cursor pagination (``?limit=&cursor=`` -> ``{"items": [...], "next_cursor": ...}``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from command_api.problems import ProblemError

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]


def position_cursor(cursor: str | None) -> int | None:
    """Cursors over positions (event order) are the decimal position."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise ProblemError(400, "invalid_cursor", "the cursor is not one this API returned")
    return int(cursor)
