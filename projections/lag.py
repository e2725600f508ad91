"""How far each projection is behind the newest notification, in events and in seconds (the
age of the oldest event it has not applied yet; 0 when it is current)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from eventsourcing.persistence import Mapper

from projections.events import EVENTS_TABLE, decode, ledger_mapper


@dataclass(frozen=True)
class Lag:
    name: str
    head: int
    position: int
    events: int  # notifications after the position (ids may have holes: an upper bound)
    seconds: float


def lag(
    conn: psycopg.Connection[Any], mapper: Mapper[Any] | None = None, now: datetime | None = None
) -> list[Lag]:
    """The lag of every tracked projection (for metrics and the audit)."""
    mapper = mapper or ledger_mapper()
    now = now or datetime.now(UTC)
    rows = conn.execute(
        "SELECT t.name, t.position, "
        f"(SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}), "
        f"(SELECT count(*) FROM (SELECT 1 FROM {EVENTS_TABLE} e WHERE e.notification_id > t.position "
        "LIMIT 1000000) behind) "
        "FROM projection_tracking t WHERE t.name NOT LIKE '%%\\_\\_rebuild' ORDER BY t.name"
    ).fetchall()
    result = []
    for name, position, head, behind in rows:
        seconds = 0.0
        if behind:
            oldest = conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT 1",
                (position,),
            ).fetchall()
            if oldest:
                seconds = max(0.0, (now - decode(oldest, mapper)[0].event.timestamp).total_seconds())
        result.append(Lag(name, int(head), int(position), int(behind), seconds))
    return result
