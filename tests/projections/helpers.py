"""Reading the read models back, for comparisons."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg

from ledger.application import LedgerApplication
from projections.events import TRACKING_CHANNEL
from projections.registry import all_projections
from projections.runner import Projector
from projections.tracking import position as committed
from projections.wait import FALLBACK_POLL_S
from tests.projections.history import random_history

READ_MODELS = {
    "point_balance": "user_id",
    "point_usage": "position",
    "point_reservation": "job_id",
    "point_lot": "user_id, lot_id",
    "vto_job": "job_id",
    "gallery": "job_id, output_index",
    "project_stats": "project_id",
}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row, in key order."""
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in READ_MODELS.items()
        }


def one(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()


def tracking(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT name, position FROM projection_tracking").fetchall())


def forget(url: str) -> None:
    """Empty every projection's read models and move their positions back to the start (read
    models restored from an old backup, or a new deployment): the log is all backlog."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(t for p in all_projections() for t in p.tables)}")
        conn.execute("UPDATE projection_tracking SET position = 0")


def projected_history(
    url: str, ledger: LedgerApplication, *, users: int, events: int, seed: int
) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
    """A random history, projected batch by batch: the log's head and the read models (what a
    catch-up of the whole log must make again)."""
    random_history(ledger, users=users, events=events, seed=seed)
    head = ledger.position()
    assert head is not None
    Projector(url, poll_interval=1.0).catch_up()
    return head, dump(url)


def wait_for_position(
    url: str,
    names: Iterable[str],
    position: int | None,
    timeout: float,
    poll_interval: float = FALLBACK_POLL_S,
) -> bool:
    """True once every projection in ``names`` has committed ``position`` (read from
    another process than the runners'); False when the deadline passed first. Woken by the
    runners' NOTIFY, polling as a fallback."""
    if position is None:
        return True
    names = list(names)
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {TRACKING_CHANNEL}")
        while True:
            if all(committed(conn, name) >= position for name in names):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in conn.notifies(timeout=min(remaining, poll_interval), stop_after=1):
                pass
