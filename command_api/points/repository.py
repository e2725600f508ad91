"""Reads of the point read models (point_balance, point_usage, vto_job)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, text
from sqlalchemy.orm import Session

from command_api.own_reads import own_read
from command_api.pagination import Key

# The lots of the balance row's user that can still be burnt at ``:now`` (points left, expiry
# to come), as a JSON array in the burn order of ``ledger.lots`` (earliest expiry first, never
# last; promotional before paid; oldest first).
LOTS = (
    "(SELECT coalesce(jsonb_agg(jsonb_build_object('id', l.lot_id, 'source', l.source, "
    "'category', l.category, 'expires_at', l.expires_at, 'granted_at', l.granted_at, "
    "'granted', l.granted, 'left', l.remaining) "
    "ORDER BY l.source, l.expires_at ASC NULLS LAST, l.category = 'paid', l.lot_id), '[]'::jsonb) "
    "FROM point_lot l WHERE l.user_id = b.user_id AND l.remaining > 0 "
    "AND (l.expires_at IS NULL OR l.expires_at > CAST(:now AS timestamptz))) AS lots"
)

# The caller's balance row and lots, read with the caller's token state (``own_reads``).
OWN_BALANCE = own_read(
    f"SELECT b.*, true AS found, {LOTS} FROM point_balance b WHERE b.user_id = :caller"  # noqa: S608
)


def balance_row(session: Session, user_id: uuid.UUID, now: datetime) -> RowMapping | None:
    """The user's ``point_balance`` row with its lots usable at ``now`` (None before the
    first event of the account)."""
    return (
        session.execute(
            text(f"SELECT b.*, {LOTS} FROM point_balance b WHERE b.user_id = :u"),  # noqa: S608
            {"u": user_id, "now": now},
        )
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


def claim_signup_credits(
    conn: Connection, email_sha256: str, user_id: uuid.UUID, amount: int, expires_at: datetime | None
) -> bool:
    """Record the sign-up credits of an account and its address; False when either already
    had them (``signup_credit_grants``: one row per account and per address)."""
    claimed = conn.execute(
        text(
            "INSERT INTO signup_credit_grants (email_sha256, user_id, amount, expires_at) "
            "VALUES (:digest, :u, :amount, :expires_at) ON CONFLICT DO NOTHING RETURNING user_id"
        ),
        {"digest": email_sha256, "u": user_id, "amount": amount, "expires_at": expires_at},
    ).first()
    return claimed is not None


def release_signup_credits(conn: Connection, user_id: uuid.UUID) -> None:
    """Forget a claim whose grant did not reach the ledger."""
    conn.execute(text("DELETE FROM signup_credit_grants WHERE user_id = :u"), {"u": user_id})
