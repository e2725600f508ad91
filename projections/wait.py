"""Read-your-writes across processes: wait until a projection's committed position reaches a
command's position. (In the process that runs the projections, ``Projector.wait_for`` /
``ProjectionRunner.wait_for`` wait on a condition instead, with no query at all.)"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from infra.threads import BackgroundLoop
from projections import tracking
from projections.events import TRACKING_CHANNEL

log = logging.getLogger(__name__)

# How often a waiter looks at the tracking positions when no NOTIFY woke it (a fallback for a
# notification that was missed or a LISTEN connection that silently died).
FALLBACK_POLL_S = 0.25


def wait_for_position(
    url: str,
    names: Iterable[str],
    position: int | None,
    timeout: float,
    poll_interval: float = FALLBACK_POLL_S,
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
            if all(tracking.position(conn, name) >= position for name in names):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in conn.notifies(timeout=min(remaining, poll_interval), stop_after=1):
                pass


class PositionWatcher(BackgroundLoop):
    """Read-your-writes for a process without runners (``vto api``), with one connection for
    the whole process instead of one per request: a thread LISTENs on the runners' NOTIFY
    (and polls every ``poll_interval`` as a fallback), keeps the committed positions, and
    ``wait_for`` waits on a condition."""

    def __init__(self, url: str, names: Iterable[str], poll_interval: float = FALLBACK_POLL_S) -> None:
        super().__init__("position-watcher", stop_timeout=5.0)
        self.url = url
        self.names = list(names)
        self.poll_interval = poll_interval
        self._positions = dict.fromkeys(self.names, 0)
        self._stuck_at: dict[str, int] = {}  # projection -> the event it cannot apply
        self._changed = threading.Condition()

    def position(self) -> int:
        with self._changed:
            return min(self._positions.values())

    def wait_for(self, position: int | None, timeout: float) -> bool:
        if position is None:
            return True

        def reached() -> bool:
            return min(self._positions.values()) >= position

        def hopeless() -> bool:
            return any(at <= position for at in self._stuck_at.values())

        with self._changed:
            self._changed.wait_for(lambda: reached() or hopeless(), timeout)
            return reached()

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        positions = {name: tracking.position(conn, name) for name in self.names}
        stuck = {name: at for name, _, at, _ in tracking.failing(conn) if name in positions}
        with self._changed:
            self._positions = positions
            self._stuck_at = stuck
            self._changed.notify_all()

    def run(self) -> None:
        while not self.stopping:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    while not self.stopping:
                        self._read(conn)
                        for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
                            pass
            except psycopg.OperationalError:
                log.warning("position watcher lost its connection; reconnecting", exc_info=True)
                self.stop_event.wait(self.poll_interval)
