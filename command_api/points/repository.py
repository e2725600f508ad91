"""Reads of the point read models (point_balance, point_usage, vto_job)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from command_api.own_reads import own_read
from command_api.pagination import Key

# The caller's balance row, read with the caller's token state (``own_reads``).
OWN_BALANCE = own_read("SELECT b.*, true AS found FROM point_balance b WHERE b.user_id = :caller")


def balance_row(session: Session, user_id: uuid.UUID) -> RowMapping | None:
    """The user's ``point_balance`` row (None before the first event of the account)."""
    return (
        session.execute(text("SELECT * FROM point_balance WHERE user_id = :u"), {"u": user_id})
        .mappings()
        .first()
    )


def usage(session: Session, user_id: uuid.UUID, limit: int, before: Key | None) -> list[RowMapping]:
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
    return list(rows)


def job_owner(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    owner = session.execute(text("SELECT user_id FROM vto_job WHERE job_id = :j"), {"j": job_id}).scalar()
    return owner if owner is None or isinstance(owner, uuid.UUID) else uuid.UUID(str(owner))
