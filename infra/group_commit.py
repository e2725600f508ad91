"""Group commit: the ledger appends of concurrent commands written in one statement.

Every append to ``ledger_events`` takes the table's EXCLUSIVE lock, so that notification ids
are committed in the order they are issued (a reader of the notification log never passes over
an id that commits later). Appends are therefore serial: one lock, one NOTIFY and one commit
each. ``GroupCommitWriter`` queues the appends of concurrent commands: the first command to
arrive writes at once; the commands that arrive while a write is in flight are written
together by the first of them, when it ends (up to ``max_batch`` commands), and each gets its
own outcome back. A batch never waits to fill: the more load, the larger the batches.

One batch is one statement on an autocommit connection (one round trip):
``vto_append_events`` (migration 0012) takes the table lock, then appends each command's
events only if its stream is still at the version the command decided on, and NOTIFYs the
projections. A command whose stream moved (another process wrote it) is left out, alone: its
``IntegrityError`` goes to that command (which decides again on the account brought up to
date); the rest of the batch is written. The primary key ``(originator_id,
originator_version)`` stays the last guard.

Appends of one stream may be pipelined (``submit(..., after=...)``): a command decided on the
account the earlier, still unwritten, appends of the same user left submits its events after
theirs, so one busy user's commands share batches too. The queue is written in order; an
append whose predecessor failed is not written at all (``PredecessorFailed``, an
``IntegrityError``), so a stream never gets a gap and a later version never commits after an
earlier one failed.

``exclusive()`` is the other way in: a transaction that holds the table lock while its caller
reads the stream, decides and appends (the account store's retry after a collision, which
cannot collide again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, StoredEvent
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

Connect = Callable[[], AbstractContextManager[Any]]

APPEND = (
    "SELECT originator_id, originator_version, notification_id "
    "FROM vto_append_events(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[], %s::bigint[])"
)
LOCK = "LOCK TABLE ledger_events IN EXCLUSIVE MODE"
READ_AFTER = (
    "SELECT originator_id, originator_version, topic, state FROM ledger_events "
    "WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version"
)
# A database that restarts or drops a connection: the statement is made again on another
# connection (as eventsourcing's recorder does). Safe: an append that did commit before the
# error is refused the second time (its stream moved), and the command decided again finds
# its own events.
RETRY_ERRORS = (InterfaceError, OperationalError)
RETRY_ATTEMPTS = 10
RETRY_WAIT_S = 0.2


class PredecessorFailed(IntegrityError):
    """Not written: an earlier append of the same stream, which this one follows, failed."""


class StreamMoved(IntegrityError):
    """Not written: the stream was no longer at the version the append was decided on."""


class Append:
    """One command's events, waiting to be written, then its notification ids or error.

    ``after`` is the append of the same stream this one was decided after (pipelining): it
    is written only if that one was. ``finished`` is set once the outcome is known, for
    anyone waiting on it besides the command that appended (which is ``woken``)."""

    __slots__ = ("after", "done", "error", "events", "finished", "ids", "lead", "owner", "woken")

    def __init__(self, events: list[StoredEvent], after: Append | None = None) -> None:
        self.events = events
        self.after = after
        self.done = False
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, rather than with a result
        self.owner: GroupCommitWriter | None = None  # set by ``submit``: who writes it
        self.woken = threading.Event()
        self.finished = threading.Event()

    @property
    def stream(self) -> UUID:
        return UUID(str(self.events[0].originator_id))

    @property
    def base(self) -> int:
        """The version the stream was at when this append was decided."""
        return self.events[0].originator_version - 1

    def finish(self, ids: Sequence[int] | None = None, error: BaseException | None = None) -> None:
        self.ids, self.error, self.done = ids, error, True
        self.after = None  # the chain behind a written append is no longer needed
        self.finished.set()

    @property
    def failed(self) -> bool:
        return self.done and self.error is not None

    def blocked(self) -> bool:
        """Whether the append it follows failed (so this one must not be written)."""
        return self.after is not None and self.after.failed

    def wait(self) -> None:
        """Wait until the outcome is known (for others than the command that appended)."""
        self.finished.wait()

    def result(self) -> Sequence[int]:
        """The appending command's own call: write (when its turn to lead comes) or wait,
        then the notification ids, or the error raised."""
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner._complete(self)
        if self.error is not None:
            raise self.error
        assert self.ids is not None
        return self.ids


class Exclusive:
    """A transaction holding the event store's table lock: no other append can be made until
    it ends, so what ``read_after`` reads is the stream as it is, and ``append`` cannot
    collide. Pipelined: the lock and the read are one round trip, the append and the commit
    another (``written`` answers once the transaction has committed)."""

    def __init__(self, conn: Any, pipeline: Any) -> None:
        self.conn = conn
        self.pipeline = pipeline
        self._appended: tuple[Any, int] | None = None

    def read_after(self, user_id: UUID, version: int) -> list[StoredEvent]:
        cursor = self.conn.execute(READ_AFTER, (user_id, version), prepare=True)
        self.pipeline.sync()
        return [stored_event(row) for row in cursor.fetchall()]

    def append(self, events: Sequence[StoredEvent]) -> None:
        """Append ``events`` with the commit (see ``written``)."""
        if events:
            self._appended = (self.conn.execute(APPEND, arguments(events, {}), prepare=True), len(events))

    def written(self) -> list[int]:
        """The notification ids of the events appended, once committed."""
        if self._appended is None:
            return []
        cursor, count = self._appended
        rows = cursor.fetchall()
        if len(rows) != count:  # cannot happen while the lock is held
            raise StreamMoved("a stream moved under the table lock")
        return [row["notification_id"] for row in rows]


def stored_event(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


def arguments(events: Sequence[StoredEvent], heads: dict[UUID, int]) -> tuple[list[Any], ...]:
    """``vto_append_events``'s arrays for ``events``; each stream's head is taken from
    ``heads`` or else from its first event here."""
    ids, versions, topics, states, bases = [], [], [], [], []
    for event in events:
        stream = UUID(str(event.originator_id))
        ids.append(stream)
        versions.append(event.originator_version)
        topics.append(event.topic)
        states.append(event.state)
        bases.append(heads.setdefault(stream, event.originator_version - 1))
    return ids, versions, topics, states, bases


class GroupCommitWriter:
    """Writes the ledger's appends, batching concurrent ones (see the module's text).
    ``connect`` gives a pooled autocommit connection (a context manager)."""

    def __init__(self, connect: Connect, max_batch: int) -> None:
        self.connect = connect
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[Append] = []
        self._writing = False
        self.batches = 0  # statements written, and the appends in them (for benchmarks)
        self.appends = 0

    def submit(self, stored_events: Sequence[StoredEvent], after: Append | None = None) -> Append:
        """Queue an append (to be written after ``after``, an append of the same stream) and
        return it at once; its ``result()`` (called once, by the submitting thread) writes or
        waits and answers. Submitting fixes the order in which appends are written."""
        append = Append(list(stored_events), after)
        with self._lock:
            self._queue.append(append)
            append.lead = not self._writing
            self._writing = True
        append.owner = self
        return append

    def write(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        """Append now (in the next batch) and answer the notification ids."""
        return self.submit(stored_events).result()

    @contextmanager
    def exclusive(self) -> Iterator[Exclusive]:
        """A transaction that holds the table lock (``Exclusive``); committed when the block
        ends normally, rolled back otherwise."""
        with self.connect() as conn, conn.pipeline() as pipeline, conn.transaction():
            conn.execute(LOCK)
            yield Exclusive(conn, pipeline)

    def _complete(self, append: Append) -> None:
        if not append.lead:
            append.woken.wait()
            if not append.lead:
                return
        self._write_next()

    def _write_next(self) -> None:
        """Write the next batch (it holds this thread's own append: the queue's first), then
        wake the next queued command to write the batch after it, or end the writing."""
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            self._write(batch)
        finally:
            for append in batch:
                if not append.done:  # _write was interrupted
                    append.finish(error=RuntimeError("the batch with this append was not written"))
                append.woken.set()
            with self._lock:
                if self._queue:
                    following = self._queue[0]
                    following.lead = True
                    following.woken.set()
                else:
                    self._writing = False

    def _write(self, batch: list[Append]) -> None:
        batch = self._unblocked(batch)
        if not batch:
            return
        self.batches += 1
        self.appends += len(batch)
        try:
            written = self._append([event for append in batch for event in append.events])
        except Exception as exc:  # noqa: BLE001 - the database failed: every command of the batch raises it
            for append in batch:
                append.finish(error=exc)
            return
        moved: set[UUID] = set()
        for append in batch:
            stream = append.stream
            ids = [written.get((stream, e.originator_version)) for e in append.events]
            if stream not in moved and all(i is not None for i in ids):
                append.finish(ids=[i for i in ids if i is not None])
            elif stream in moved:
                append.finish(error=_predecessor_failed())
            else:
                moved.add(stream)
                append.finish(error=StreamMoved(f"stream {stream} moved on from version {append.base}"))

    def _append(self, events: list[StoredEvent]) -> dict[tuple[UUID, int], int]:
        """One statement: the events appended whose streams had not moved, by (stream,
        version), with their notification ids."""
        params = arguments(events, {})
        retrying = Retrying(
            retry=retry_if_exception_type(RETRY_ERRORS),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_fixed(RETRY_WAIT_S),
            reraise=True,
        )
        for attempt in retrying:
            with attempt, self.connect() as conn:
                rows = conn.execute(APPEND, params, prepare=True).fetchall()
                return {
                    (row["originator_id"], row["originator_version"]): row["notification_id"] for row in rows
                }
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _unblocked(batch: list[Append]) -> list[Append]:
        """The batch without the appends whose predecessor failed (those fail unwritten)."""
        kept = []
        for append in batch:
            if append.blocked():
                append.finish(error=_predecessor_failed())
            else:
                kept.append(append)
        return kept


def _predecessor_failed() -> PredecessorFailed:
    return PredecessorFailed("not written: an earlier append of this stream failed")
