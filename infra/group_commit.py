"""Group commit: the ledger appends of concurrent commands written in one transaction.

The event store's insert takes a table lock, so that notification ids are committed in the
order they are issued (a reader of the notification log never passes over an id that commits
later). Every append therefore waits for the one before it: one transaction, one lock, one
NOTIFY and one commit per command. Under load that serial section, and the work around it,
is what the API spends.

``GroupCommitRecorder`` wraps the application recorder. A command that appends while another
append is being written queues its events; when the write in flight ends, the first queued
command writes everything queued (up to ``max_batch`` commands) in one transaction and hands
the results back to each command. Nothing changes for the guarantees:

- Each command still appends its own events with the next versions of its own stream: a
  command whose stream moved on meanwhile (another process wrote) collides on the version
  (``IntegrityError``), as before. One collision aborts the whole transaction, so a batch
  that collided is written again one command at a time: the others are appended, only the
  command that collided gets its ``IntegrityError`` (and the ledger retries it on its
  up-to-date account).
- A command returns only after the transaction with its events has committed (or failed), so
  what it answers is durable, and the outbox is still written with the reservation.
- A batch never waits to fill: the first command to arrive writes at once; batches form only
  from the commands that arrived while a write was in flight (the more load, the larger).

Appends of one stream may be pipelined (``submit``): the ledger decides a user's next command
on the account its earlier, still unwritten, appends left, and submits it ``after`` them, so
the commands of one user share transactions too instead of waiting a commit each. The queue
is written in order, so an append is written after (or with) the appends it follows; one whose
predecessor failed is not written at all (``PredecessorFailed``, an ``IntegrityError``: the
ledger decides it again on the stored account). A later version of a stream therefore never
commits after an earlier one failed, and a stream never gets a gap.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent


class PredecessorFailed(IntegrityError):
    """Not written: an earlier append of the same stream, which this one follows, failed."""


class _Append:
    """One command's events, waiting to be written, then its notification ids or error.

    ``after`` is the append of the same stream this one was decided after (pipelining): it
    is written only if that one was. ``finished`` is set once the outcome is known, for
    anyone waiting on it besides the command that appended (which is ``woken``)."""

    __slots__ = ("after", "done", "error", "events", "finished", "ids", "lead", "owner", "woken")

    def __init__(self, events: list[StoredEvent], after: _Append | None = None) -> None:
        self.events = events
        self.after = after
        self.done = False
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, rather than with a result
        self.owner: GroupCommitRecorder | None = None  # set by ``submit``: who writes it
        self.woken = threading.Event()
        self.finished = threading.Event()

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

    def result(self) -> Sequence[int] | None:
        """The appending command's own call: write (when its turn to lead comes) or wait,
        then the notification ids, or the error raised."""
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner._complete(self)
        if self.error is not None:
            raise self.error
        return self.ids


class GroupCommitRecorder:
    """An application recorder whose ``insert_events`` batches concurrent appends (see the
    module's text); everything else is the wrapped recorder's."""

    def __init__(self, recorder: ApplicationRecorder, max_batch: int) -> None:
        self.recorder = recorder
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Append] = []
        self._writing = False
        self.batches = 0  # transactions written, and the appends in them (for benchmarks)
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if any(value is not None for value in kwargs.values()) or not stored_events:
            return self.recorder.insert_events(stored_events, **kwargs)  # e.g. with tracking
        return self.submit(stored_events).result()

    def submit(self, stored_events: Sequence[StoredEvent], after: _Append | None = None) -> _Append:
        """Queue an append (to be written after ``after``, an append of the same stream) and
        return it at once; its ``result()`` (called once, by the submitting thread) writes or
        waits and answers. Submitting fixes the order in which appends are written."""
        append = _Append(list(stored_events), after)
        with self._lock:
            self._queue.append(append)
            append.lead = not self._writing
            self._writing = True
        append.owner = self
        return append

    def _complete(self, append: _Append) -> None:
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

    def _write(self, batch: list[_Append]) -> None:
        if any(append.after is not None for append in batch):
            batch = self._unblocked(batch)
            if not batch:
                return
        self.batches += 1
        self.appends += len(batch)
        events = [event for append in batch for event in append.events]
        try:
            ids = self.recorder.insert_events(events)
        except IntegrityError as exc:
            if len(batch) == 1:
                batch[0].finish(error=exc)
                return
            for append in batch:  # find the command(s) that collided; write the others
                if append.blocked():  # its predecessor (in this batch) collided
                    append.finish(error=_predecessor_failed())
                else:
                    self._write_one(append)
            return
        except Exception as exc:  # noqa: BLE001 - the database failed: every command of the batch raises it
            for append in batch:
                append.finish(error=exc)
            return
        start = 0
        for append in batch:
            append.finish(ids=None if ids is None else ids[start : start + len(append.events)])
            start += len(append.events)

    @staticmethod
    def _unblocked(batch: list[_Append]) -> list[_Append]:
        """The batch without the appends whose predecessor failed (those fail unwritten)."""
        kept = []
        for append in batch:
            if append.blocked():
                append.finish(error=_predecessor_failed())
            else:
                kept.append(append)
        return kept

    def _write_one(self, append: _Append) -> None:
        try:
            append.finish(ids=self.recorder.insert_events(append.events))
        except Exception as exc:  # noqa: BLE001 - handed to the command that appended, which raises it
            append.finish(error=exc)


def _predecessor_failed() -> PredecessorFailed:
    return PredecessorFailed("not written: an earlier append of this stream failed")
