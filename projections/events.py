"""Reading the event store's notification log and decoding its events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from eventsourcing.persistence import Mapper, StoredEvent

from ledger.application import event_mapper

EVENTS_TABLE = "ledger_events"
CHANNEL = "ledger_events"  # eventsourcing NOTIFYs this channel on every insert
TRACKING_CHANNEL = "projection_tracking"  # runners NOTIFY it (payload: name) on every commit


@dataclass(frozen=True)
class Notified:
    """One event of the log with its position (notification id)."""

    position: int
    event: Any


@lru_cache(maxsize=1)
def ledger_mapper() -> Mapper[Any]:
    """The ledger's event mapper (one per process: it holds no connection)."""
    return event_mapper()


def decode(rows: Sequence[tuple[Any, ...]], mapper: Mapper[Any]) -> list[Notified]:
    """Rows ``(notification_id, originator_id, originator_version, topic, state)``."""
    return [
        Notified(row[0], mapper.to_domain_event(StoredEvent(row[1], row[2], row[3], bytes(row[4]))))
        for row in rows
    ]


def select_after(cur: psycopg.Cursor[Any], position: int, limit: int) -> list[tuple[Any, ...]]:
    cur.execute(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
        (position, limit),
    )
    return cur.fetchall()


def head(cur: psycopg.Cursor[Any]) -> int:
    """The newest notification position (0 when the log is empty)."""
    cur.execute(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
    row = cur.fetchone()
    return int(row[0]) if row else 0
