"""Read-your-writes across processes: wait until a projection's committed position reaches a
command's position (``PositionWatcher``, one per ``vto api`` process). (In the process that
runs the projections, ``Projector.wait_for`` / ``ProjectionRunner.wait_for`` wait on a
condition instead, with no query at all.) Either way, a reader about to wait tells the
runners (``Nudge``), which then start their next batch sooner."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from infra.threads import BackgroundLoop
from projections import tracking
from projections.events import READERS_HEARD_S, TRACKING_CHANNEL, WANTED_CHANNEL, wake, wake_channel

log = logging.getLogger(__name__)

# How often a waiter looks at the tracking positions when no NOTIFY woke it (a fallback for a
# notification that was missed or a LISTEN connection that silently died).
FALLBACK_POLL_S = 0.25


class PositionWatcher(BackgroundLoop):
    """Read-your-writes for a process without runners (``vto api``), with one connection for
    the whole process instead of one per request: a thread LISTENs on the runners' NOTIFY,
    and each commit's notification says the position committed (``tracking.notice``): the
    waiters are woken with it, and nobody queries. The thread reads the positions (one query,
    on the same connection) only when it starts or reconnects, when a notification says no
    position (a failure recorded) or comes from a stuck projection (its commit cleared that),
    and every ``poll_interval`` (the fallback for a missed notification). It sleeps until a
    notification or the poll (it once woke every 10 ms to look for waiters: about 8 % of a
    core in an idle ``vto api``), and waiters only wait on a condition (they once read the
    positions themselves, on a connection of their own, after each commit)."""

    def __init__(self, url: str, names: Iterable[str], poll_interval: float = FALLBACK_POLL_S) -> None:
        super().__init__("position-watcher", stop_timeout=5.0)
        self.url = url
        self.names = list(names)
        self.poll_interval = poll_interval
        self._positions = dict.fromkeys(self.names, 0)
        self._stuck_at: dict[str, int] = {}  # projection -> the event it cannot apply
        self._changed = threading.Condition()
        self.wake_channel = wake_channel()  # NOTIFYed by ``stop()``: the thread ends at once

    def wake_up(self) -> None:  # its thread waits on its LISTEN connection
        wake(self.url, self.wake_channel)

    def position(self) -> int:
        with self._changed:
            return min(self._positions.values())

    def wait_for(self, position: int | None, timeout: float) -> bool:
        """True once every watched projection has committed ``position``; False when the
        deadline passed first, or at once when one is stuck on an event at or before it."""
        if position is None:
            return True

        def reached() -> bool:
            return min(self._positions.values()) >= position

        def hopeless() -> bool:
            return any(at <= position for at in self._stuck_at.values())

        with self._changed:  # positions only grow: a reached position stays reached
            self._changed.wait_for(lambda: reached() or hopeless(), timeout)
            return reached()

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        positions, stuck = tracking.watched(conn, self.names)
        with self._changed:
            # Positions only grow: never lower than a notification already said.
            self._positions = {n: max(at, self._positions[n]) for n, at in positions.items()}
            self._stuck_at = stuck
            self._changed.notify_all()

    def run(self) -> None:
        while not self.stopping:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    conn.execute(f"LISTEN {self.wake_channel}")
                    self._follow(conn)
            except psycopg.OperationalError:
                log.warning("position watcher lost its connection; reconnecting", exc_info=True)
                self.stop_event.wait(self.poll_interval)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        while not self.stopping:
            self._read(conn)  # the poll (and the first read after a reconnection)
            deadline = time.monotonic() + self.poll_interval
            while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
                read = False
                for notify in conn.notifies(timeout=remaining, stop_after=1):
                    if notify.channel == TRACKING_CHANNEL:  # else woken to stop
                        read = self._committed(*tracking.notice(notify.payload)) or read
                if read:
                    self._read(conn)

    def _committed(self, name: str, position: int | None) -> bool:
        """A runner's notification: the position it committed is taken as it is (it is
        delivered after the commit). Returns whether the positions must be read instead: it
        says no position (a failure recorded), or its projection was stuck."""
        with self._changed:
            if name not in self._positions:
                return False  # a projection this process does not wait on
            if position is not None:
                self._positions[name] = max(self._positions[name], position)
                self._changed.notify_all()
            return position is None or name in self._stuck_at


NUDGE_EVERY_S = READERS_HEARD_S / 4  # the least time between two nudges of one process


class Nudge:
    """Tells the projection runners, wherever they run, that a reader waits for a position
    they have not committed: ``NOTIFY`` on ``WANTED_CHANNEL``, payload the position, on a
    connection from ``connect`` (the ledger's pool: no connection of its own). The runners
    then start their batches ``projection_wanted_batch_interval_s`` apart instead of
    ``projection_batch_interval_s``, for ``READERS_HEARD_S`` after they last heard one
    (``projections.runner.idle``).

    So it is sent at most every ``every`` seconds (less than ``READERS_HEARD_S``: the runners
    still keep the shorter interval for the readers in between), and never for a position at
    or before one already sent (the batch it brought forward covers it). A nudge that cannot
    be sent (no connection free at once, a database error) is dropped: that wait lasts up to
    the longer interval, and the next reader tries again."""

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        every: float = NUDGE_EVERY_S,
    ) -> None:
        self.connect = connect  # an autocommit connection, taken for one statement
        self.every = every
        self.sent = 0  # the newest position sent (or being sent)
        self._sent_at = -math.inf  # time.monotonic() when it was sent
        self._lock = threading.Lock()

    def want(self, position: int) -> None:
        with self._lock:
            now = time.monotonic()
            if position <= self.sent or now < self._sent_at + self.every:
                return
            before = self.sent, self._sent_at
            self.sent, self._sent_at = position, now
        try:
            with self.connect() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (WANTED_CHANNEL, str(position)))
        except (psycopg.Error, TimeoutError) as error:  # a pool's timeout is one or the other
            log.debug("could not tell the projections a reader waits for %d: %s", position, error)
            with self._lock:
                if self.sent == position:
                    self.sent, self._sent_at = before
