"""A runner follows the notification log of ``ledger_events`` and applies it to one
projection's read-model tables.

Each batch is one transaction: lock the projection's tracking row, read the events after its
position, apply them, move the position, commit. So a crash anywhere before the commit changes
nothing, a restart resumes from the committed position, and events delivered twice (a stale
runner, two runners of one projection) are skipped because they are not after the position.

Waking up: LISTEN on the ``ledger_events`` channel (eventsourcing NOTIFYs it on every insert),
and a poll every ``poll_interval`` seconds whatever happens, so a LISTEN connection that died
silently (eventsourcing issue #305) delays a runner by at most that interval, never stalls it.

A batch that fails is retried one event at a time, so that an event the projection cannot
apply is named: its position, type, stream and the cause are logged and written beside the
projection's position in ``projection_tracking`` (``failing_position``, ``error``), where
``/readyz`` of every process reads them, and ``wait_for`` stops waiting on this runner. The
next commit clears them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import Mapper
from tenacity import RetryCallState

from infra.settings import Settings
from infra.threads import BackgroundLoop, Stopping, backoff
from projections import tracking
from projections.base import Projection, identity
from projections.events import (
    CHANNEL,
    READERS_HEARD_S,
    WANTED_CHANNEL,
    Notified,
    SharedDecoding,
    decode,
    few_collections,
    ledger_mapper,
    select_after,
    wake,
    wake_channel,
)
from projections.rebuild import catch_up_by_rebuild

log = logging.getLogger(__name__)

ERROR_TEXT_MAX = 1000  # characters of a cause kept in projection_tracking.error


@dataclass(frozen=True)
class Failure:
    """Why a runner is not moving: the batch failed ``failures`` times in a row; ``position``
    is the event it failed on once that was isolated (None: not known, e.g. no connection)."""

    failures: int
    position: int | None
    event: str | None  # the event's type and stream, for people
    cause: str


class ProjectionRunner(BackgroundLoop):
    """Keeps one projection up to date. ``start()`` runs it in a daemon thread; ``catch_up()``
    runs it in the caller's thread until the log is exhausted."""

    def __init__(
        self,
        url: str,
        projection: Projection,
        *,
        poll_interval: float,
        mapper: Mapper[Any] | None = None,
        batch_size: int = 500,
        catch_up_batch_size: int | None = None,
        listen: bool = True,
        decoding: SharedDecoding | None = None,
        batch_interval: float = 0.0,
        wanted_batch_interval: float | None = None,
    ) -> None:
        """``batch_size``: the most events a batch applies; ``catch_up_batch_size`` (default:
        the same), the most while the runner is behind (its last batch was full): fewer,
        larger transactions when there is a backlog, short ones otherwise. ``decoding``: the
        events decoded once for the runners of a ``Projector`` (of the same mapper).
        ``batch_interval``: the least time between the starts of two live batches (``idle``);
        ``wanted_batch_interval``: the same while a reader waits for a position (None: the
        runner does not listen for them)."""
        super().__init__(f"projection-{projection.name}")
        self.url = url
        self.projection = projection
        self.name = projection.name
        self.tables = identity(projection.tables)
        self.mapper = mapper or ledger_mapper()
        self.decoding = decoding
        self.batch_size = batch_size
        self.catch_up_batch_size = max(batch_size, catch_up_batch_size or batch_size)
        self.poll_interval = poll_interval
        self.listen = listen
        self.pace = Pace.of(batch_interval, wanted_batch_interval)
        self.readers = Readers()
        self._batch_started = 0.0  # time.monotonic() at the last batch's start
        # Test seam: called inside the transaction after the read model was written and
        # before the tracking position moves and the transaction commits.
        self.before_commit: Callable[[Sequence[Notified]], None] | None = None
        # Called (in the runner's thread) with each committed position.
        self.on_commit: list[Callable[[int], None]] = []
        self.errors = 0
        self.failing: Failure | None = None  # set while batches fail, cleared by a commit
        self.full = False  # whether the last batch was as long as allowed (more may follow)
        self._careful_until = 0  # apply one event at a time up to here (after a failed batch)
        self._position = 0
        self._changed = threading.Condition()
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None  # the thread's LISTEN connection
        self.wake_channel = wake_channel()  # NOTIFYed by ``stop()``: the thread ends at once

    # ------------------------------------------------------------------------ position
    @property
    def position(self) -> int:
        """The newest position this runner committed or saw committed."""
        return self._position

    def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until this runner has committed ``position`` (read-your-writes); False when
        the deadline passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._position < position:
                if self.failing is not None and self.failing.position is not None:
                    return False  # stuck on an event: waiting would not help
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _seen(self, position: int) -> None:
        with self._changed:
            self._position = position
            self._changed.notify_all()
        for callback in self.on_commit:
            callback(position)

    # ------------------------------------------------------------------------ batches
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url)
        return self._conn

    def deliver(self, notifications: Iterable[Notified] | None = None) -> int:
        """One transaction: apply the events after the tracked position (fetched from the log
        when ``notifications`` is None) and move the position. Events at or before the
        position are skipped: a duplicate delivery changes nothing. Returns how many were
        applied. After a failed batch, events up to that batch's end are fetched one at a
        time, so that a second failure names the event."""
        conn = self._connection()
        if self._position < self._careful_until:
            limit = 1
        else:
            limit = self.catch_up_batch_size if self.full else self.batch_size
        rows: list[tuple[Any, ...]] = []
        # Catching up (a batch as large as allowed came before): a batch allocates many
        # objects that live until it ends; the default collector thresholds scan them, and
        # everything else the process holds, again and again (``few_collections``).
        collections = few_collections() if self.full else contextlib.nullcontext()
        try:
            # Rows in the binary format: cheaper to send and to read than text. Not in
            # pipeline mode: it saved round trips but cost more CPU than it saved, in the
            # projector and in PostgreSQL (``benchmarks/projector_cpu.py``: 3.9 against 3.4
            # ms of the projector's CPU an event, 2.5-2.6 against 2.1-2.3 of PostgreSQL's).
            with collections, conn.transaction(), conn.cursor(binary=True) as cur:
                if notifications is None:
                    if self.full:  # catching up: a large read, its plan made for its position
                        position = tracking.lock(cur, self.name)
                        rows = select_after(cur, position, limit)
                    else:
                        position, rows = tracking.lock_and_read(cur, self.name, limit)
                    batch = decode(rows, self.mapper) if self.decoding is None else self.decoding.decode(rows)
                else:
                    position = tracking.lock(cur, self.name)
                    batch = [n for n in notifications if n.position > position]
                    rows = [(n.position,) for n in batch]
                if not batch:
                    applied, newest = 0, position
                else:
                    self.projection.apply(cur, batch, self.tables)
                    if self.before_commit is not None:
                        self.before_commit(batch)
                    newest = batch[-1].position
                    tracking.advance(cur, self.name, newest)
                    applied = len(batch)
                if self.failing is not None:
                    tracking.clear_failure(cur, self.name)
        except BaseException as exc:
            if conn.broken:
                self._conn = None
            if isinstance(exc, Exception):
                self._note_failure(rows, exc)
            raise
        if self.failing is not None:
            log.info("projection %s: applying again from %d", self.name, newest)
            self.failing = None
        self.full = applied >= limit
        self._seen(newest)
        return applied

    def _note_failure(self, rows: Sequence[tuple[Any, ...]], exc: Exception) -> None:
        """Remember (and publish) why the batch ``rows`` failed. A batch of several events is
        retried one at a time; a failed batch of one names its event."""
        failures = (self.failing.failures if self.failing is not None else 0) + 1
        cause = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]
        position: int | None = None
        event: str | None = None
        if len(rows) > 1:
            self._careful_until = max(self._careful_until, int(rows[-1][0]))
        elif len(rows) == 1:
            row = rows[0]
            position = int(row[0])
            event = f"{row[3]} of stream {row[1]} v{row[2]}" if len(row) >= 4 else None
            if self.failing is None or self.failing.position != position:
                log.error(
                    "projection %s: cannot apply event %d (%s): %s",
                    self.name,
                    position,
                    event or "?",
                    cause,
                )
        if position is not None:  # recorded before it is published: a reader of either finds both
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    tracking.record_failure(conn, self.name, failures, position, event, cause)
            except psycopg.Error as error:
                log.warning("projection %s: cannot record the failure: %s", self.name, error)
        with self._changed:
            self.failing = Failure(failures, position, event, cause)
            self._changed.notify_all()

    def catch_up(self) -> int:
        """Apply batches until the log is exhausted; returns how many events were applied."""
        total = 0
        while True:
            total += self.deliver()
            if not self.full:
                return total

    # ------------------------------------------------------------------------ thread
    def wake_up(self) -> None:
        if self.listen:  # its thread may wait on its LISTEN connection
            wake(self.url, self.wake_channel)

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self) -> None:
        """Follow the log until stopped: a batch, then (unless it was full) wait for a
        notification. A failed batch is retried, backing off from 0.05 s up to
        ``poll_interval``."""
        retrying = backoff(self.stop_event, 0.05, self.poll_interval, before_sleep=self._failed)
        try:
            while not self.stopping:
                retrying(self._batch)
                if not self.full:
                    self._idle()
        except Stopping:
            pass
        finally:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def _batch(self) -> int:
        if self.listen and self._listener is None:
            self._listener = self._listen()
        self._batch_started = time.monotonic()
        return self.deliver()

    def _failed(self, state: RetryCallState) -> None:
        self.errors += 1
        error = state.outcome.exception() if state.outcome is not None else None
        log.error("projection %s: batch failed; retrying", self.name, exc_info=error)

    def _listen(self) -> psycopg.Connection[Any] | None:
        return listen(self.url, self.name, self.pace.listens, self.wake_channel)

    def _idle(self) -> None:
        self._listener = idle(
            self._listener,
            self.poll_interval,
            self.stop_event,
            self.name,
            self.pace,
            self._batch_started,
            self.readers,
        )


@dataclass(frozen=True)
class Pace:
    """How far apart two live batches start, at least, under a steady stream of appends:
    ``interval`` (the setting ``projection_batch_interval_s``), or ``wanted`` while a reader
    waits for a position not projected yet (``projection_wanted_batch_interval_s``; None: no
    shorter interval, and the runners do not listen for such readers)."""

    interval: float = 0.0
    wanted: float | None = None

    @classmethod
    def of(cls, interval: float, wanted: float | None) -> Pace:
        return cls(interval, wanted if wanted is not None and wanted < interval else None)

    @property
    def listens(self) -> bool:
        """Whether the runners LISTEN for readers' waits (``WANTED_CHANNEL``)."""
        return self.wanted is not None

    def now(self, readers: Readers | None) -> float:
        """The interval that holds now: ``wanted`` while ``readers`` were heard lately."""
        if self.wanted is not None and readers is not None and readers.active():
            return self.wanted
        return self.interval


@dataclass
class Readers:
    """When a runner (or ``Together``) last heard a reader waiting (``time.monotonic()``)."""

    heard: float = -math.inf

    def active(self) -> bool:
        """Whether one was heard in the last ``READERS_HEARD_S``."""
        return time.monotonic() - self.heard < READERS_HEARD_S


def listen(
    url: str, who: str, wanted: bool = False, wake_on: str | None = None
) -> psycopg.Connection[Any] | None:
    """A connection LISTENing to the log's appends (and, ``wanted``, to the readers waiting
    for a position: ``WANTED_CHANNEL``; ``wake_on``, to the loop's own wake-up channel:
    ``projections.events.wake``); None (poll instead) when it cannot."""
    try:
        conn = psycopg.connect(url, autocommit=True)
        conn.execute(f"LISTEN {CHANNEL}")
        if wanted:
            conn.execute(f"LISTEN {WANTED_CHANNEL}")
        if wake_on is not None:
            conn.execute(f"LISTEN {wake_on}")
        return conn
    except psycopg.Error:
        log.warning("projection %s: cannot LISTEN; polling", who)
        return None


# After a wake-up, how long notifications are taken together before the next batch, at least:
# a batch costs a transaction, whatever its size, and appends arrive one at a time.
GATHER_S = 0.002


def idle(
    listener: psycopg.Connection[Any] | None,
    poll_interval: float,
    stop: threading.Event,
    who: str,
    pace: Pace = Pace(),
    last_batch: float = 0.0,
    readers: Readers | None = None,
) -> psycopg.Connection[Any] | None:
    """Wait for a notification on ``listener``, at most ``poll_interval`` (the poll is the
    fallback for a LISTEN connection that died without telling), then take the notifications
    that follow for ``GATHER_S``, or until ``last_batch`` (``time.monotonic()`` at the last
    batch's start) plus ``pace.interval`` if that is later; returns the listener, None once
    it was lost (the caller listens again).

    The interval only counts under a steady stream of appends: an append after a quiet spell
    is projected ``GATHER_S`` after its notification, while appends arriving one at a time
    faster than the interval (one client ordering in a loop) share a batch, its transaction
    and its round trips, instead of each paying for one.

    While readers wait (a notification on ``WANTED_CHANNEL``, sent by ``projections.wait.Nudge``,
    heard in the last ``READERS_HEARD_S`` and noted in ``readers``), the interval is
    ``pace.wanted`` instead, and a reader heard during the gathering brings the batch forward
    to it: nobody waits the long interval for their own write, and writes nobody reads at once
    do not pay a batch each."""
    if listener is None:
        stop.wait(poll_interval)
        return None

    def heard(notify: psycopg.Notify) -> bool:
        if readers is None or pace.wanted is None or notify.channel != WANTED_CHANNEL:
            return False
        readers.heard = time.monotonic()
        return True

    try:
        if stop.is_set():  # asked before its wake-up channel was listened to
            return listener
        for notify in listener.notifies(timeout=poll_interval, stop_after=1):
            heard(notify)
        # Take the notifications of the appends committed with it or just after (they would
        # each wake an empty batch), and let them join the next batch; a reader heard
        # meanwhile brings the batch forward, once. Asked to stop (``stop`` set, then the
        # loop's wake-up channel notified), it returns at once.
        woke = time.monotonic()
        while not stop.is_set():
            interval = pace.now(readers)
            remaining = max(woke + GATHER_S, last_batch + interval) - time.monotonic()
            if remaining <= 0:
                return listener
            for notify in listener.notifies(timeout=remaining):
                if stop.is_set():
                    break
                if heard(notify) and interval != pace.wanted:  # not yet at the shorter one
                    break
            else:
                return listener
        return listener
    except psycopg.Error:
        log.warning("projection %s: LISTEN connection lost; reconnecting", who)
        listener.close()
        return None


class Together(BackgroundLoop):
    """A ``Projector``'s runners kept up to date in one thread, one transaction a batch for
    all of them: their tracking rows locked in one statement, the log read once, each
    projection applying the events after its own position, the positions moved (and their
    NOTIFYs sent) in one statement, one commit; one LISTEN connection. Against a thread each,
    that is one transaction (BEGIN, read, advance, COMMIT) and one wake-up a batch fewer.

    Each runner stays what it is alone, so the work goes back to it when that is better:
    while a runner is behind (its last batch full), its catch-up batches run on its own
    (larger, ``COPY``); a batch that fails together is delivered again by each runner on its
    own (which names an event it cannot apply); and if one of those fails too, each runner
    is handed its own thread, as without ``Together``, so that one projection stuck on an
    event never holds up the others."""

    def __init__(self, projector: Projector) -> None:
        super().__init__("projections-together")
        self.projector = projector
        self.runners = projector.runners
        first = self.runners[0]
        self.url, self.poll_interval, self.listen = first.url, first.poll_interval, first.listen
        self.pace = first.pace
        self.readers = Readers()
        self.batch_size = min(r.batch_size for r in self.runners)
        self._batch_started = 0.0
        self.handed_off = False
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self.wake_channel = wake_channel()

    def wake_up(self) -> None:
        if self.listen:  # its thread may wait on its LISTEN connection
            wake(self.url, self.wake_channel)

    def run(self) -> None:
        try:
            self.projector.rebuild_if_far_behind()
            while not self.stopping:
                if self.listen and self._listener is None:
                    self._listener = listen(self.url, self.thread_name, self.pace.listens, self.wake_channel)
                if not self._round():
                    self._hand_off()
                    return
                if not any(r.full for r in self.runners):
                    self._listener = idle(
                        self._listener,
                        self.poll_interval,
                        self.stop_event,
                        self.thread_name,
                        self.pace,
                        self._batch_started,
                        self.readers,
                    )
        finally:
            for conn in (self._listener, self._conn):
                if conn is not None:
                    conn.close()
            self._listener = self._conn = None

    def _round(self) -> bool:
        """A batch together, or, while a runner is behind or after a batch failed together,
        one by each runner on its own; False when one of those failed."""
        self._batch_started = time.monotonic()
        if not any(r.full for r in self.runners):
            try:
                self.deliver()
                return True
            except Exception as exc:  # noqa: BLE001 - each runner delivers on its own next, and names it
                if self._conn is not None and self._conn.broken:
                    self._conn = None
                log.warning(
                    "projections: a batch failed together (%s: %s); each on its own", type(exc).__name__, exc
                )
        failed = False
        for runner in self.runners:
            try:
                runner.deliver()
            except Exception:  # noqa: BLE001 - recorded and logged by the runner; it gets its thread
                failed = True
        return not failed

    def deliver(self) -> int:
        """One transaction for every runner (see the class); returns how many events it read."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url)
        names = [r.name for r in self.runners]
        with self._conn.transaction(), self._conn.cursor(binary=True) as cur:
            positions = tracking.lock_many(cur, names)
            rows = select_after(cur, min(positions.values()), self.batch_size)
            batch = self.projector.decoding.decode(rows)
            moves: dict[str, int] = {}
            for runner in self.runners:
                own = [n for n in batch if n.position > positions[runner.name]]
                if own:
                    runner.projection.apply(cur, own, runner.tables)
                    if runner.before_commit is not None:
                        runner.before_commit(own)
                    moves[runner.name] = own[-1].position
            if moves:
                tracking.advance_many(cur, moves)
        for runner in self.runners:
            runner.full = len(batch) >= self.batch_size
            runner._seen(moves.get(runner.name, positions[runner.name]))
        return len(batch)

    def _hand_off(self) -> None:
        """Each runner on a thread of its own from now on."""
        if self.stopping:
            return
        log.warning("projections: each runner on a thread of its own from now on")
        self.handed_off = True
        for runner in self.runners:
            # The readers heard waiting so far: each runner keeps the shorter interval for them.
            runner.readers.heard = max(runner.readers.heard, self.readers.heard)
            runner.start()


class Projector:
    """Several runners in one process (``vto serve`` / ``vto projector``), for the API:
    ``start()``, ``wait_for(position, timeout)``, ``stop()``."""

    def __init__(
        self,
        url: str,
        projections: Sequence[Projection] | None = None,
        *,
        poll_interval: float,
        together: bool = True,
        rebuild_from: int = 0,
        **options: Any,
    ) -> None:
        """``poll_interval``: the setting ``projection_poll_interval_s``; ``options`` go to
        each ``ProjectionRunner``. The runners decode each event once between them
        (``SharedDecoding``). ``together``: ``start()`` runs them in one thread and one
        transaction a batch (``Together``); else each in a thread of its own.
        ``rebuild_from``: the setting ``projection_rebuild_from`` (``rebuild_if_far_behind``)."""
        from projections.registry import all_projections

        self.url = url
        self.rebuild_from = rebuild_from
        self._rebuild_checked = False
        self.custom_mapper: Mapper[Any] | None = options.get("mapper")
        self.runners = [
            ProjectionRunner(url, p, poll_interval=poll_interval, **options)
            for p in (projections or all_projections())
        ]
        # Runners two catch-up batches apart still share; further apart, they decode again.
        self.decoding = SharedDecoding(
            self.runners[0].mapper, keep=2 * max(r.catch_up_batch_size for r in self.runners)
        )
        for runner in self.runners:
            runner.decoding = self.decoding
        self.together = Together(self) if together and len(self.runners) > 1 else None

    @classmethod
    def configured(cls, url: str, settings: Settings) -> Projector:
        """Every projection, run as the settings say (``projection_*``)."""
        return cls(
            url,
            poll_interval=settings.projection_poll_interval_s,
            batch_size=settings.projection_batch_size,
            catch_up_batch_size=settings.projection_catch_up_batch_size,
            batch_interval=settings.projection_batch_interval_s,
            wanted_batch_interval=settings.projection_wanted_batch_interval_s,
            rebuild_from=settings.projection_rebuild_from,
        )

    def start(self) -> Projector:
        if self.together is not None:
            self.together.start()
        else:
            for runner in self.runners:
                runner.start()
        return self

    def stop(self) -> None:
        if self.together is not None:
            self.together.stop()
        for runner in self.runners:
            runner.stop()

    def stopped(self) -> list[str]:
        """The projections no thread keeps up to date (for ``/readyz``)."""
        if self.together is not None and self.together.running:
            return []
        return [r.name for r in self.runners if not r.running]

    def rebuild_if_far_behind(self) -> int | None:
        """Started on a long backlog (``rebuild_from`` events or more, and a third of the log
        or more: ``projections.rebuild.far_behind``), the runners catch up by a rebuild,
        several times faster than batch by batch (``docs/transcoder-and-catch-up.md``): the
        first step of ``Together``'s thread, unless the caller did it before ``start()`` (as
        ``vto projector`` does, so that the rebuild's workers are forked). Once per projector:
        later calls return None. Returns the position rebuilt to; None when nothing was
        rebuilt. A rebuild that fails is logged and the runners catch up batch by batch."""
        if self.rebuild_from <= 0 or self._rebuild_checked:
            return None
        self._rebuild_checked = True
        started = time.monotonic()
        projections = [r.projection for r in self.runners]
        try:
            position = catch_up_by_rebuild(
                self.url, projections, at_least=self.rebuild_from, mapper=self.custom_mapper
            )
        except Exception:  # logged; the batches then name an event that cannot be applied
            log.exception("projections: the catch-up by a rebuild failed; batch by batch instead")
            return None
        if position is not None:
            log.info(
                "projections: far behind; rebuilt to position %d in %.1f s",
                position,
                time.monotonic() - started,
            )
            for runner in self.runners:
                runner._seen(position)
        return position

    def catch_up(self) -> int:
        """Apply batches until every runner has exhausted the log, the runners taking turns
        (a batch each), so that each event is decoded once for all of them."""
        total = 0
        behind = list(self.runners)
        while behind:
            for runner in behind:
                total += runner.deliver()
            behind = [runner for runner in behind if runner.full]
        return total

    def position(self) -> int:
        """The position every runner has committed (or seen committed)."""
        return min(runner.position for runner in self.runners)

    def wait_for(self, position: int | None, timeout: float) -> bool:
        """Wait until every runner has committed ``position`` (a command's
        ``CommandResult.position``; None = nothing written = nothing to wait for)."""
        if position is None:
            return True
        deadline = time.monotonic() + timeout
        return all(r.wait_for(position, max(0.0, deadline - time.monotonic())) for r in self.runners)

    def runner(self, name: str) -> ProjectionRunner:
        return next(r for r in self.runners if r.name == name)

    def __enter__(self) -> Projector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
