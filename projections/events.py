"""Reading the event store's notification log and decoding its events."""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import operator
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing.context import BaseContext
from typing import Any
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import Mapper, StoredEvent

from ledger.application import event_mapper
from ledger.effects import Effect, effect

log = logging.getLogger(__name__)

EVENTS_TABLE = "ledger_events"
SNAPSHOTS_TABLE = "ledger_snapshots"
CHANNEL = "ledger_events"  # eventsourcing NOTIFYs this channel on every insert
# Runners NOTIFY it on every commit, payload ``name:position`` (the position committed), and
# when they record an event they cannot apply, payload ``name`` (``projections.tracking.notice``).
TRACKING_CHANNEL = "projection_tracking"
# A reader waits for a position the projections have not committed yet (read-your-writes),
# payload the position (``projections.wait.Nudge``): the runners then start their batches the
# setting ``projection_wanted_batch_interval_s`` apart instead of ``projection_batch_interval_s``.
WANTED_CHANNEL = "projections_wanted"
# How long the runners keep the shorter interval after they last heard a reader waiting: while
# readers keep coming, batches start at the shorter interval whether or not each reader tells
# them (each API process tells them at most every quarter of this: ``projections.wait.Nudge``).
READERS_HEARD_S = 1.0
# A loop that LISTENs (a projection runner, ``Together``, the position watcher) also LISTENs on
# a channel of its own (``wake_channel``): ``wake`` NOTIFYs it when the loop is asked to stop,
# so that the thread ends at once instead of at the end of its poll interval.
WAKE_CHANNEL_PREFIX = "projections_wake_"
PARALLEL_FROM = 200_000  # events from which a replay (audit, rebuild) runs in worker processes
MAX_WORKERS = 4  # each opens 2 connections (docs/operations.md "Connection budget")


def wake_channel() -> str:
    """A new loop's own wake-up channel (an identifier: prefix and 32 hex digits)."""
    return f"{WAKE_CHANNEL_PREFIX}{uuid4().hex}"


def wake(url: str, channel: str) -> None:
    """NOTIFY ``channel`` on a connection of its own (a loop asked to stop, whose thread may
    be waiting on its LISTEN connection); a database that cannot be reached is logged: the
    loop then ends at its next poll, as it did before."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT pg_notify(%s, '')", (channel,))
    except psycopg.Error as exc:
        log.warning("cannot wake %s (%s); it stops at its next poll", channel, exc)


@dataclass(slots=True)
class Notified:
    """One event of the log with its position (notification id). Made for every event a
    replay reads: slots and no frozen ``__init__`` make it about twice as cheap to create.
    Treat it as read-only."""

    position: int
    event: Any
    _effect: Effect | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def effect(self) -> Effect:
        """What the event does (``ledger.effects``), computed once for every reader of it
        (kept beside the fields: not compared or shown)."""
        fx = self._effect
        if fx is None:
            fx = self._effect = effect(self.event)
        return fx


@lru_cache(maxsize=1)
def ledger_mapper() -> Mapper[Any]:
    """The ledger's event mapper (one per process: it holds no connection)."""
    return event_mapper()


def decode(rows: Sequence[tuple[Any, ...]], mapper: Mapper[Any]) -> list[Notified]:
    """Rows ``(notification_id, originator_id, originator_version, topic, state)``, decoded
    by the mapper (``Mapper.to_domain_event``: its transcoder, topics, upcasting)."""
    event = mapper.to_domain_event
    return [Notified(row[0], event(StoredEvent(row[1], row[2], row[3], row[4]))) for row in rows]


class SharedDecoding:
    """The events of the log decoded once for several runners of one process (a
    ``Projector``'s): each runner reads its rows itself, in its own transaction, and takes
    the events another runner decoded from the same rows (by position) instead of decoding
    them again. Keeps the last ``keep`` events decoded; one that is gone is decoded again.
    The events are shared: readers do not change them (the projections never do)."""

    def __init__(self, mapper: Mapper[Any], keep: int) -> None:
        self.mapper = mapper
        self.keep = keep
        self._events: dict[int, Notified] = {}  # in the order they were decoded
        self._lock = threading.Lock()

    def decode(self, rows: Sequence[tuple[Any, ...]]) -> list[Notified]:
        """``decode(rows, mapper)``, an event decoded already taken as it is."""
        known = self._events.get
        event = self.mapper.to_domain_event
        batch: list[Notified] = []
        new: dict[int, Notified] = {}
        for row in rows:
            n = known(row[0])
            if n is None:
                n = new[row[0]] = Notified(row[0], event(StoredEvent(row[1], row[2], row[3], row[4])))
            batch.append(n)
        if new:
            with self._lock:
                events = self._events
                events.update(new)
                excess = len(events) - self.keep
                if excess > 0:  # the oldest decoded go first
                    for position in list(itertools.islice(events, excess)):
                        del events[position]
        return batch


def select_after(cur: psycopg.Cursor[Any], position: int, limit: int) -> list[tuple[Any, ...]]:
    cur.execute(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
        (position, limit),
    )
    return cur.fetchall()


def head(cur: psycopg.Cursor[Any]) -> int:
    """The newest notification position (0 when the log is empty)."""
    cur.execute(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def export_snapshot(conn: psycopg.Connection[Any]) -> str:
    """Open a read-only REPEATABLE READ transaction on ``conn`` and export its snapshot, for
    other connections to read the same database state (``read_pages(..., snapshot=)``). The
    snapshot lives as long as that transaction."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def read_pages(
    url: str,
    sql: str,
    params: Sequence[Any],
    *,
    snapshot: str | None = None,
    page: int = 10_000,
    binary: bool = False,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql``, page by page, read by a thread of its own on a connection of its
    own (in the exported ``snapshot`` when given) through a server-side cursor, so that the
    database sends the next page while the caller works on this one. ``binary``: the rows
    come in PostgreSQL's binary format (cheaper to send and to read)."""
    pages: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: list[tuple[Any, ...]] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with psycopg.connect(url) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    if snapshot is not None:
                        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                    with conn.cursor(name="read_pages", binary=binary) as cur:
                        cur.execute(sql, params)
                        while rows := cur.fetchmany(page):
                            if not put(rows):
                                return
            put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            put(exc)

    thread = threading.Thread(target=read, name="read-pages", daemon=True)
    thread.start()
    try:
        while True:
            item = pages.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


_replays = 0  # replays under few_collections now (threads of one process)
_replays_lock = threading.Lock()
_threshold = gc.get_threshold()


@contextmanager
def few_collections(young: int = 100_000) -> Iterator[None]:
    """For a replay of many events: the objects that exist now are left out of the garbage
    collector's scans (``gc.freeze``) and a young collection runs every ``young``
    allocations instead of every 700. A replay allocates millions of short-lived objects
    that reference counting frees; the default thresholds make the collector scan the
    replay's live objects again and again (about 40 % of a rebuild's CPU). Restored when
    the last replay of the process ends."""
    global _replays, _threshold
    with _replays_lock:
        if _replays == 0:
            _threshold = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(young, _threshold[0]), *_threshold[1:])
        _replays += 1
    try:
        yield
    finally:
        with _replays_lock:
            _replays -= 1
            if _replays == 0:
                gc.set_threshold(*_threshold)
                gc.unfreeze()


@dataclass(frozen=True)
class StreamRange:
    """The streams (users) of one replay worker: from ``low`` (inclusive) to ``high``
    (exclusive; None: no bound), or the one ``user``."""

    low: UUID | None = None
    high: UUID | None = None
    user: UUID | None = None

    def where(self, column: str) -> tuple[str, tuple[Any, ...]]:
        """A condition on ``column`` (a user id) and its parameters."""
        if self.user is not None:
            return f"{column} = %s", (self.user,)
        clauses, params = [], []
        if self.low is not None:
            clauses.append(f"{column} >= %s")
            params.append(self.low)
        if self.high is not None:
            clauses.append(f"{column} < %s")
            params.append(self.high)
        return " AND ".join(clauses) or "true", tuple(params)


def stream_ranges(count: int) -> list[StreamRange]:
    """The user id space cut in ``count`` ranges of equal width (user ids are random UUIDs,
    so of about equal numbers of users); PostgreSQL orders UUIDs as Python does, by value."""
    bounds = [UUID(int=(i << 128) // count) for i in range(1, count)]
    lows: list[UUID | None] = [None, *bounds]
    highs: list[UUID | None] = [*bounds, None]
    return [StreamRange(low, high) for low, high in zip(lows, highs, strict=True)]


def read_streams(
    url: str, snapshot: str, position: int, streams: StreamRange, mapper: Mapper[Any]
) -> Iterator[tuple[UUID, list[Notified]]]:
    """The events up to ``position`` of the streams (users) of ``streams``, in the exported
    ``snapshot``, stream by stream in stream order (``ORDER BY originator_id,
    originator_version``, the primary key): each stream's id and its events, decoded. Read
    by a thread of its own a page ahead (``read_pages``), in the binary format, each
    originator id as text: one ``UUID`` is made per stream, not per event."""
    event = mapper.to_domain_event
    where, params = streams.where("originator_id")
    pages = read_pages(
        url,
        "SELECT originator_id::text, notification_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id <= %s AND {where} "
        "ORDER BY originator_id, originator_version",
        (position, *params),
        snapshot=snapshot,
        binary=True,
    )
    for text, rows in itertools.groupby(itertools.chain.from_iterable(pages), key=_first):
        originator_id = UUID(text)
        yield (
            originator_id,
            [Notified(r[1], event(StoredEvent(originator_id, r[2], r[3], r[4]))) for r in rows],
        )


_first = operator.itemgetter(0)


def worker_context() -> BaseContext:
    """How to start the worker processes of a replay: ``fork`` where this process runs one
    thread (on Linux), so that they start at once with everything imported; ``spawn``
    otherwise (a fork copies the locks that other threads hold), which starts a fresh
    interpreter that imports the caller's main module again (a second or more)."""
    if sys.platform == "linux" and threading.active_count() == 1 and _os_threads() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _os_threads() -> int:
    """This process's threads, those no ``threading.Thread`` started included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0  # unknown: not one


def workers_for(events: int) -> int:
    """Worker processes for a replay of ``events`` events: one per CPU, at most
    ``MAX_WORKERS``, for a large log; none beside the caller's process for a small one
    (starting one costs about a second)."""
    return 1 if events < PARALLEL_FROM else max(1, min(MAX_WORKERS, os.cpu_count() or 1))
