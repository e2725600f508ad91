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
    """Read-your-writes for a process without runners (``vto api``), with two connections for
    the whole process instead of one per request: a thread LISTENs on the runners' NOTIFY
    (each commit's notification says the position committed: the waiters are woken with it,
    no query), and a waiter that finds the positions stale (a failure recorded, a stuck
    projection's commit, a reconnection) reads them (one query, on the process's reading
    connection, one waiter at a time: the others take what it read). Besides, the thread
    reads them every ``poll_interval`` (the fallback for a notification that was missed).
    The thread sleeps until a commit or the poll: it
    does not wake on a timer to look for waiters (it once did, every 10 ms: about 8 % of a
    core in an idle ``vto api``)."""

    def __init__(self, url: str, names: Iterable[str], poll_interval: float = FALLBACK_POLL_S) -> None:
        super().__init__("position-watcher", stop_timeout=5.0)
        self.url = url
        self.names = list(names)
        self.poll_interval = poll_interval
        self._positions = dict.fromkeys(self.names, 0)
        self._stuck_at: dict[str, int] = {}  # projection -> the event it cannot apply
        self._changed = threading.Condition()
        self._stale = True  # a commit was notified since the positions were last read
        self._reading = threading.Lock()  # one waiter reads at a time, on ``_reader``
        self._reader: psycopg.Connection[Any] | None = None

    def position(self) -> int:
        with self._changed:
            return min(self._positions.values())

    def wait_for(self, position: int | None, timeout: float) -> bool:
        if position is None:
            return True
        deadline = time.monotonic() + timeout

        def reached() -> bool:
            return min(self._positions.values()) >= position

        def hopeless() -> bool:
            return any(at <= position for at in self._stuck_at.values())

        while True:
            with self._changed:  # positions only grow: a reached position stays reached
                if reached() or hopeless():
                    return reached()
                if not self._stale:  # until the next commit (or the poll) there is nothing to read
                    self._changed.wait_for(
                        lambda: self._stale or reached() or hopeless(), deadline - time.monotonic()
                    )
                if reached() or hopeless() or time.monotonic() >= deadline:
                    return reached()
            self._read_for_waiters()

    def _read_for_waiters(self) -> None:
        """Read the positions, unless another waiter is reading (then wait for its answer);
        on a database error, leave it to the watcher's poll."""
        if not self._reading.acquire(blocking=False):
            with self._reading:  # another waiter's read: its answer is as new as ours would be
                return
        try:
            with self._changed:
                if not self._stale:
                    return
            if self._reader is None or self._reader.closed:
                self._reader = psycopg.connect(self.url, autocommit=True)
            self._read(self._reader)
        except psycopg.Error:
            log.warning("position watcher: cannot read the positions; waiting for the poll", exc_info=True)
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self.stop_event.wait(min(0.05, self.poll_interval))
        finally:
            self._reading.release()

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        with self._changed:
            self._stale = False  # a commit notified during the read marks them stale again
        positions, stuck = tracking.watched(conn, self.names)
        with self._changed:
            # Positions only grow: a notification taken while this read was under way may
            # have brought a newer one than it read.
            self._positions = {n: max(at, self._positions[n]) for n, at in positions.items()}
            self._stuck_at = stuck
            self._changed.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        with self._reading:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def run(self) -> None:
        while not self.stopping:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    self._follow(conn)
            except psycopg.OperationalError:
                log.warning("position watcher lost its connection; reconnecting", exc_info=True)
                self._mark_stale()
                self.stop_event.wait(self.poll_interval)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        while not self.stopping:
            self._read(conn)  # the poll (and the first read after a reconnection)
            deadline = time.monotonic() + self.poll_interval
            while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
                for notify in conn.notifies(timeout=remaining, stop_after=1):
                    self._committed(*tracking.notice(notify.payload))

    def _committed(self, name: str, position: int | None) -> None:
        """A runner's notification: the position it committed is taken as it is (it is
        delivered after the commit), with no read. Read instead (marked stale) when it says
        no position (a failure recorded) or its projection was stuck (the commit cleared that)."""
        with self._changed:
            if name not in self._positions:
                return  # a projection this process does not wait on
            if position is not None:
                self._positions[name] = max(self._positions[name], position)
            if position is None or name in self._stuck_at:
                self._stale = True
            self._changed.notify_all()

    def _mark_stale(self) -> None:
        with self._changed:
            self._stale = True
            self._changed.notify_all()
