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
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent


class _Append:
    """One command's events, waiting to be written, then its notification ids or error."""

    __slots__ = ("done", "error", "events", "ids", "lead", "woken")

    def __init__(self, events: list[StoredEvent]) -> None:
        self.events = events
        self.done = False
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, rather than with a result
        self.woken = threading.Event()

    def finish(self, ids: Sequence[int] | None = None, error: BaseException | None = None) -> None:
        self.ids, self.error, self.done = ids, error, True

    def result(self) -> Sequence[int] | None:
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
        append = _Append(list(stored_events))
        with self._lock:
            self._queue.append(append)
            lead = not self._writing
            self._writing = True
        if not lead:
            append.woken.wait()
            if not append.lead:
                return append.result()
        self._write_next()
        return append.result()

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

    def _write_one(self, append: _Append) -> None:
        try:
            append.finish(ids=self.recorder.insert_events(append.events))
        except Exception as exc:  # noqa: BLE001 - handed to the command that appended, which raises it
            append.finish(error=exc)
