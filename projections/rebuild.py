"""Rebuild a read model from the start of the log into fresh tables and swap them in, while
the service (and the projection's live runner) keeps going.

1. create ``<table>__rebuild`` for each of the projection's tables (``LIKE ... INCLUDING ALL``);
2. replay the whole log into them, batch by batch (tracking row ``<name>__rebuild``);
3. in one transaction: lock the live projection's tracking row (the live runner waits on it),
   lock the live tables, apply the last events, rename live -> ``__old`` and rebuilt -> live,
   drop the old tables, set the live position to the rebuilt one. Readers see the old tables
   until the commit and the new ones after; the live runner resumes from the rebuilt position.
"""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.persistence import Mapper

from projections import tracking
from projections.base import Projection
from projections.events import decode, ledger_mapper, select_after

SUFFIX = "__rebuild"


def rebuild(
    url: str, projection: Projection, *, mapper: Mapper[Any] | None = None, batch_size: int = 2000
) -> int:
    """Rebuild ``projection``'s tables from scratch and swap them in; returns the position
    the new tables are at."""
    mapper = mapper or ledger_mapper()
    shadow = {t: f"{t}{SUFFIX}" for t in projection.tables}
    shadow_name = f"{projection.name}{SUFFIX}"
    with psycopg.connect(url) as conn:
        with conn.transaction():
            for live, new in shadow.items():
                conn.execute(f"DROP TABLE IF EXISTS {new}")
                conn.execute(f"CREATE TABLE {new} (LIKE {live} INCLUDING ALL)")
            conn.execute(
                "INSERT INTO projection_tracking (name, position) VALUES (%s, 0) "
                "ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = now()",
                (shadow_name,),
            )
        position = 0
        while True:  # replay, in transactions of one batch each
            with conn.transaction(), conn.cursor() as cur:
                batch = decode(select_after(cur, position, batch_size), mapper)
                if batch:
                    projection.apply(cur, batch, shadow)
                    position = batch[-1].position
                    tracking.advance(cur, shadow_name, position)
            if len(batch) < batch_size:
                break
        with conn.transaction(), conn.cursor() as cur:  # catch up and swap
            tracking.lock(cur, projection.name)
            for live in projection.tables:
                cur.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")
            while True:
                batch = decode(select_after(cur, position, batch_size), mapper)
                if not batch:
                    break
                projection.apply(cur, batch, shadow)
                position = batch[-1].position
            for live, new in shadow.items():
                cur.execute(f"ALTER TABLE {live} RENAME TO {live}__old")
                cur.execute(f"ALTER TABLE {new} RENAME TO {live}")
                cur.execute(f"DROP TABLE {live}__old")
            tracking.advance(cur, projection.name, position)
            cur.execute("DELETE FROM projection_tracking WHERE name = %s", (shadow_name,))
    return position
