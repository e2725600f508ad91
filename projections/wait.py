"""Read-your-writes across processes: wait until a projection's committed position reaches a
command's position. (In the process that runs the projections, ``Projector.wait_for`` /
``ProjectionRunner.wait_for`` wait on a condition instead, with no query at all.)"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg

from projections import tracking
from projections.events import TRACKING_CHANNEL


def wait_for_position(
    url: str, names: Iterable[str], position: int | None, timeout: float, poll_interval: float = 0.25
) -> bool:
    """True once every projection in ``names`` has committed ``position``; False when the
    deadline passed first. Woken by the runners' NOTIFY, polling as a fallback."""
    if position is None:
        return True
    names = list(names)
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {TRACKING_CHANNEL}")
        while True:
            if all(_position(conn, name) >= position for name in names):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in conn.notifies(timeout=min(remaining, poll_interval), stop_after=1):
                pass


def _position(conn: psycopg.Connection[Any], name: str) -> int:
    return tracking.position(conn, name)
