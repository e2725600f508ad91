"""Queries of ``login_throttle`` (migrations 0009, 0015): one counter per (kind, key) with the start
of its fixed window. Every statement uses the database clock (``now()``), so the replicas of
the API, whatever their own clocks say, share one notion of the window."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Connection, text

Kind = Literal["account", "address", "register"]

# The counter of a key whose window has passed starts again at 1 in a new window.
_COUNT = text(
    """
    INSERT INTO login_throttle AS t (kind, key, window_start, failures)
    VALUES (:kind, :key, now(), 1)
    ON CONFLICT (kind, key) DO UPDATE SET
        failures = CASE WHEN t.window_start <= now() - make_interval(secs => :window_s)
                        THEN 1 ELSE LEAST(t.failures + 1, :cap) END,
        window_start = CASE WHEN t.window_start <= now() - make_interval(secs => :window_s)
                            THEN now() ELSE t.window_start END
    RETURNING failures,
        EXTRACT(EPOCH FROM t.window_start + make_interval(secs => :window_s) - now())::float8
    """
)
_TAKE_BACK = text(
    "UPDATE login_throttle SET failures = failures - 1 WHERE kind = :kind AND key = :key AND failures > 0"
)
_CLEAR = text("DELETE FROM login_throttle WHERE kind = :kind AND key = :key")
_FORGET = text(
    """
    DELETE FROM login_throttle WHERE ctid IN (
        SELECT ctid FROM login_throttle
        WHERE kind = ANY(:kinds) AND window_start < now() - make_interval(secs => :window_s) LIMIT :batch
    )
    """
)


def count(conn: Connection, kind: Kind, key: str, window_s: int, cap: int) -> tuple[int, float]:
    """One more attempt for ``key``: its count in the current window (at most ``cap``) and the
    seconds until that window ends."""
    row = conn.execute(_COUNT, {"kind": kind, "key": key, "window_s": window_s, "cap": cap}).one()
    return int(row[0]), float(row[1])


def take_back(conn: Connection, kind: Kind, key: str) -> None:
    conn.execute(_TAKE_BACK, {"kind": kind, "key": key})


def clear(conn: Connection, kind: Kind, key: str) -> None:
    conn.execute(_CLEAR, {"kind": kind, "key": key})


def forget_expired(conn: Connection, kinds: list[Kind], window_s: int, batch: int) -> None:
    """Delete up to ``batch`` counters of ``kinds`` whose window has passed (they count for
    nothing)."""
    conn.execute(_FORGET, {"kinds": kinds, "window_s": window_s, "batch": batch})
