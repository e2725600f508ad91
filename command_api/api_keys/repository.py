"""Queries of ``api_keys`` and ``api_rate_limits`` (migration 0022).

Times: ``:now`` is the injected clock's epoch seconds, or null for the database's clock
(``now()``: the transaction's start, the same in every statement of it), so that every
replica shares one notion of time unless a test sets one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, text
from sqlalchemy.orm import Session

NOW = "coalesce(CAST(:now AS float8), extract(epoch FROM now()))"

# The key's owner, checked against the stored user, and last_used_at written when it is
# older than ``:interval`` seconds (a conditional UPDATE: concurrent requests write it once).
# A data-modifying WITH runs whether or not the SELECT reads it.
_AUTHENTICATE = text(
    f"""
    WITH k AS (
        SELECT k.id, k.user_id, u.token_version, u.deleted_at IS NOT NULL AS deleted
        FROM api_keys k JOIN users u ON u.id = k.user_id
        WHERE k.key_hash = :hash
    ), touched AS (
        UPDATE api_keys SET last_used_at = to_timestamp({NOW})
        WHERE id = (SELECT id FROM k WHERE NOT deleted)
          AND (last_used_at IS NULL
               OR last_used_at <= to_timestamp({NOW}) - make_interval(secs => :interval))
        RETURNING id
    )
    SELECT id, user_id, token_version, deleted FROM k
    """  # noqa: S608 (constant text)
)

_LOCK_ACCOUNT = text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")
_COUNT = text("SELECT count(*) FROM api_keys WHERE user_id = :user")
_INSERT = text(
    f"""
    INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at)
    VALUES (:id, :user, :name, :prefix, :hash, to_timestamp({NOW}))
    RETURNING id, name, prefix, created_at, last_used_at
    """  # noqa: S608
)
_LIST = text(
    "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
    "WHERE user_id = :user ORDER BY created_at DESC, id DESC"
)
_DELETE = text("DELETE FROM api_keys WHERE id = :id AND user_id = :user RETURNING id")
_FORGET_BUCKET = text("DELETE FROM api_rate_limits WHERE bucket = :bucket")

# GCRA: an order is let through when the bucket's theoretical arrival time, moved one
# emission interval ``:t`` on, is at most ``:window`` ahead of now (``:window`` = 60 s: a
# burst of ``rate`` orders, then one every ``t``). A denied order changes nothing, yet the
# conflicting row stays locked until the transaction ends; no row comes back then.
_TAKE = text(
    f"""
    INSERT INTO api_rate_limits AS r (bucket, tat) VALUES (:bucket, {NOW} + :t)
    ON CONFLICT (bucket) DO UPDATE SET tat = greatest(r.tat, {NOW}) + :t
    WHERE greatest(r.tat, {NOW}) + :t - {NOW} <= :window + :slack
    RETURNING tat
    """  # noqa: S608
)
# Seconds until the bucket lets the next order through.
_WAIT = text(f"SELECT tat + :t - :window - {NOW} FROM api_rate_limits WHERE bucket = :bucket")  # noqa: S608

SLACK_S = 0.001  # float rounding of the sums of t (epoch seconds are ~2e9)


def _epoch(now: datetime | None) -> float | None:
    return None if now is None else now.timestamp()


def authenticate(
    conn: Connection, key_hash: bytes, now: datetime | None, interval_s: int
) -> RowMapping | None:
    """``id``, ``user_id``, ``token_version``, ``deleted`` of the live key with this hash."""
    params = {"hash": key_hash, "now": _epoch(now), "interval": interval_s}
    return conn.execute(_AUTHENTICATE, params).mappings().first()


def lock_account(session: Session, user_id: uuid.UUID) -> None:
    """Serialises the key creations of one account (the cap), for the transaction."""
    session.execute(_LOCK_ACCOUNT, {"k": f"api-keys:{user_id}"})


def count(session: Session, user_id: uuid.UUID) -> int:
    return int(session.execute(_COUNT, {"user": user_id}).scalar_one())


def insert(session: Session, row: dict[str, Any], now: datetime | None) -> RowMapping:
    return session.execute(_INSERT, {**row, "now": _epoch(now)}).mappings().one()


def list_keys(session: Session, user_id: uuid.UUID) -> list[RowMapping]:
    return list(session.execute(_LIST, {"user": user_id}).mappings().all())


def delete(session: Session, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    found = session.execute(_DELETE, {"id": key_id, "user": user_id}).first() is not None
    if found:
        session.execute(_FORGET_BUCKET, {"bucket": key_bucket(key_id)})
    return found


def key_bucket(key_id: uuid.UUID) -> str:
    return f"key:{key_id}"


def account_bucket(user_id: uuid.UUID) -> str:
    return f"account:{user_id}"


def take(session: Session, bucket: str, per_minute: int, now: datetime | None) -> float | None:
    """One order from ``bucket``: None when let through, else the seconds to wait (the
    bucket's row stays locked until the transaction ends either way)."""
    params = {"bucket": bucket, "t": 60.0 / per_minute, "window": 60.0, "slack": SLACK_S, "now": _epoch(now)}
    if session.execute(_TAKE, params).first() is not None:
        return None
    return float(session.execute(_WAIT, params).scalar_one())
