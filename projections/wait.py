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
    the whole process instead of one per request: a thread LISTENs on the runners' NOTIFY,
    keeps the committed positions, and ``wait_for`` waits on a condition.

    The positions are read (one query) only when a waiter needs them: after a commit was
    notified while some request waits, or when one starts waiting on positions that a commit
    has made stale; otherwise at most every ``poll_interval`` (also the fallback for a
    notification that was missed). A busy projector commits many times a second, and an API
    process whose requests rarely wait should not read the tracking table each time."""

    # How often the thread looks for new waiters while no commit is notified: the most a
    # waiter waits for its first read of positions that a commit made stale.
    WAKE_S = 0.01

    def __init__(self, url: str, names: Iterable[str], poll_interval: float = FALLBACK_POLL_S) -> None:
        super().__init__("position-watcher", stop_timeout=5.0)
        self.url = url
        self.names = list(names)
        self.poll_interval = poll_interval
        self._positions = dict.fromkeys(self.names, 0)
        self._stuck_at: dict[str, int] = {}  # projection -> the event it cannot apply
        self._changed = threading.Condition()
        self._waiters = 0

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

        with self._changed:  # positions only grow: a reached position stays reached
            if reached():
                return True
            self._waiters += 1
            try:
                self._changed.wait_for(lambda: reached() or hopeless(), timeout)
                return reached()
            finally:
                self._waiters -= 1

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        positions, stuck = tracking.watched(conn, self.names)
        with self._changed:
            self._positions = positions
            self._stuck_at = stuck
            self._changed.notify_all()

    def run(self) -> None:
        while not self.stopping:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    self._follow(conn)
            except psycopg.OperationalError:
                log.warning("position watcher lost its connection; reconnecting", exc_info=True)
                self.stop_event.wait(self.poll_interval)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        stale, last_read = True, 0.0
        while not self.stopping:
            now = time.monotonic()
            if now - last_read >= self.poll_interval or (stale and self._waiters):
                self._read(conn)
                stale, last_read = False, now
            waiting = self._waiters > 0
            # With waiters, the next commit ends this wait at once; without, commits are only
            # noted (their notifications taken in bulk) until a waiter comes or the poll is due.
            for _ in conn.notifies(timeout=self.WAKE_S, stop_after=1 if waiting else None):
                stale = True
