"""The projections' positions in the notification log (table ``projection_tracking``).

A runner locks its row (``FOR UPDATE``) at the start of each transaction, applies the events
after that position and moves the position in the same transaction: a crash before commit
leaves both untouched, and a second delivery of the same events finds them already behind the
position (exactly-once). The row lock also serialises two runners of one projection and a
rebuild's swap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from projections.events import EVENTS_TABLE, TRACKING_CHANNEL, select_after


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


# ``lock`` and the events after the position in one round trip. The tracking row is locked in
# a MATERIALIZED CTE: a runner that waited for the lock (another runner of the projection
# committed meanwhile) reads from the position that runner left, not the one it saw first.
_LOCK_AND_READ = (
    "WITH t AS MATERIALIZED (SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE) "
    "SELECT t.position, e.notification_id, e.originator_id, e.originator_version, e.topic, e.state "
    "FROM t LEFT JOIN LATERAL (SELECT x.notification_id, x.originator_id, x.originator_version, "
    f"  x.topic, x.state FROM {EVENTS_TABLE} x WHERE x.notification_id > t.position "
    "  ORDER BY x.notification_id LIMIT %s) e ON true"
)


def lock_and_read(cur: psycopg.Cursor[Any], name: str, limit: int) -> tuple[int, list[tuple[Any, ...]]]:
    """``lock``, then at most ``limit`` rows of the log after the position (as
    ``events.select_after`` reads them), in one statement (two for a projection's first)."""
    cur.execute(_LOCK_AND_READ, (name, limit))
    rows = cur.fetchall()
    if not rows:  # the projection has no row yet
        position = lock(cur, name)
        return position, select_after(cur, position, limit)
    position = int(rows[0][0])
    return position, [row[1:] for row in rows if row[1] is not None and row[1] > position]


def advance(cur: psycopg.Cursor[Any], name: str, position: int) -> None:
    """Move the position and wake the position's watchers, in one statement: the
    notification says the position (``notice``), delivered once it is committed."""
    cur.execute(
        "WITH moved AS (UPDATE projection_tracking SET position = %s, updated_at = now() "
        "WHERE name = %s RETURNING name, position) SELECT pg_notify(%s, name || ':' || position) FROM moved",
        (position, name, TRACKING_CHANNEL),
    )


def notice(payload: str) -> tuple[str, int | None]:
    """A ``TRACKING_CHANNEL`` notification's projection and the position it committed (None:
    not a commit, e.g. a failure recorded: read the row)."""
    name, _, position = payload.partition(":")
    try:
        return name, int(position) if position else None
    except ValueError:
        return name, None


def lock_many(cur: psycopg.Cursor[Any], names: Sequence[str]) -> dict[str, int]:
    """``lock`` for several projections in one statement (their rows locked in the order of
    ``names``, as a rebuild locks them); returns each one's position."""
    cur.execute(
        "SELECT name, position FROM projection_tracking WHERE name = ANY(%s) "
        "ORDER BY array_position(%s, name) FOR UPDATE",
        (list(names), list(names)),
    )
    found = {str(name): int(at) for name, at in cur.fetchall()}
    return {name: found[name] if name in found else lock(cur, name) for name in names}


def advance_many(cur: psycopg.Cursor[Any], moves: Mapping[str, int]) -> None:
    """``advance`` for several projections (name -> position) in one statement."""
    cur.execute(
        "WITH moved AS (UPDATE projection_tracking t SET position = m.position, updated_at = now() "
        "FROM unnest(%s::text[], %s::bigint[]) AS m(name, position) WHERE t.name = m.name "
        "RETURNING t.name, t.position) SELECT pg_notify(%s, name || ':' || position) FROM moved",
        (list(moves), list(moves.values()), TRACKING_CHANNEL),
    )


def record_failure(
    conn: psycopg.Connection[Any], name: str, failures: int, position: int, event: str | None, cause: str
) -> None:
    """Publish that the projection cannot apply the event at ``position`` (read by /readyz)."""
    conn.execute(
        "UPDATE projection_tracking SET failures = %s, failing_position = %s, error = %s, "
        "failing_since = coalesce(failing_since, now()) WHERE name = %s",
        (failures, position, f"{event}: {cause}" if event else cause, name),
    )
    conn.execute("SELECT pg_notify(%s, %s)", (TRACKING_CHANNEL, name))


def clear_failure(cur: psycopg.Cursor[Any], name: str) -> None:
    cur.execute(
        "UPDATE projection_tracking SET failures = 0, failing_position = NULL, error = NULL, "
        "failing_since = NULL WHERE name = %s",
        (name,),
    )


def failing(conn: psycopg.Connection[Any]) -> list[tuple[str, int, int, str]]:
    """Every projection stuck on an event: (name, failures, position, error)."""
    rows = conn.execute(
        "SELECT name, failures, failing_position, error FROM projection_tracking "
        "WHERE failing_position IS NOT NULL ORDER BY name"
    )
    return [(name, int(n), int(pos), str(error)) for name, n, pos, error in rows]


def position(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def positions(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, Any]]:
    """Every projection's (position, updated_at)."""
    rows = conn.execute("SELECT name, position, updated_at FROM projection_tracking ORDER BY name")
    return {name: (int(pos), at) for name, pos, at in rows}


def watched(conn: psycopg.Connection[Any], names: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """In one query, for the projections ``names``: their committed positions (0 before their
    first commit) and, for those stuck on an event, the position of that event."""
    rows = conn.execute(
        "SELECT name, position, failing_position FROM projection_tracking WHERE name = ANY(%s)", (names,)
    ).fetchall()
    positions = dict.fromkeys(names, 0)
    stuck: dict[str, int] = {}
    for name, at, failing_at in rows:
        positions[name] = int(at)
        if failing_at is not None:
            stuck[name] = int(failing_at)
    return positions, stuck
