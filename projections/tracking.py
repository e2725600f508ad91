"""The projections' positions in the notification log (table ``projection_tracking``).

A runner locks its row (``FOR UPDATE``) at the start of each transaction, applies the events
after that position and moves the position in the same transaction: a crash before commit
leaves both untouched, and a second delivery of the same events finds them already behind the
position (exactly-once). The row lock also serialises two runners of one projection and a
rebuild's swap."""

from __future__ import annotations

from typing import Any

import psycopg

from projections.events import TRACKING_CHANNEL


def lock(cur: psycopg.Cursor[Any], name: str) -> int:
    """Lock the projection's row for this transaction and return its position."""
    cur.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE", (name,))
    row = cur.fetchone()
    if row is None:
        cur.execute(
            "INSERT INTO projection_tracking (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING",
            (name,),
        )
        cur.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE", (name,))
        row = cur.fetchone()
        assert row is not None
    return int(row[0])


def advance(cur: psycopg.Cursor[Any], name: str, position: int) -> None:
    cur.execute(
        "UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
        (position, name),
    )
    cur.execute("SELECT pg_notify(%s, %s)", (TRACKING_CHANNEL, name))


def position(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def positions(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, Any]]:
    """Every projection's (position, updated_at)."""
    rows = conn.execute("SELECT name, position, updated_at FROM projection_tracking ORDER BY name")
    return {name: (int(pos), at) for name, pos, at in rows}
