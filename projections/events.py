"""Reading the event store's notification log and decoding its events."""

from __future__ import annotations

import gc
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

from ledger.application import event_mapper
from ledger.effects import Effect, effect

EVENTS_TABLE = "ledger_events"
CHANNEL = "ledger_events"  # eventsourcing NOTIFYs this channel on every insert
TRACKING_CHANNEL = "projection_tracking"  # runners NOTIFY it (payload: name) on every commit
PARALLEL_FROM = 200_000  # events from which a replay (audit, rebuild) runs in worker processes
MAX_WORKERS = 4  # each opens 2 connections (README "Connection budget")


@dataclass(frozen=True)
class Notified:
    """One event of the log with its position (notification id)."""

    position: int
    event: Any

    @property
    def effect(self) -> Effect:
        """What the event does (``ledger.effects``), computed once for every reader of it
        (kept beside the fields: not a field, so not compared or shown)."""
        fx: Effect | None = self.__dict__.get("_effect")
        if fx is None:
            fx = self.__dict__["_effect"] = effect(self.event)
        return fx


@lru_cache(maxsize=1)
def ledger_mapper() -> Mapper[Any]:
    """The ledger's event mapper (one per process: it holds no connection)."""
    return event_mapper()


class Decoder:
    """Stored events to domain events exactly as ``mapper.to_domain_event`` makes them (the
    same transcoder, topics, originator id conversion and upcasting), with what it looks up
    per topic resolved once and the JSON of the usual transcodings (UUIDs, datetimes) decoded
    without a call through the transcoder. A mapper that encrypts or compresses, or a
    transcoder that is not the JSON one, is left to the mapper."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self._classes: dict[str, tuple[type[Any], Callable[[Any], Any], int, list[Callable[..., None]]]] = {}
        transcoder = mapper.transcoder
        self._decode_state: Callable[[bytes], dict[str, Any]] | None = None
        if mapper.cipher is None and mapper.compressor is None and type(transcoder) is JSONTranscoder:
            names = transcoder.names
            fast: dict[str, Callable[[Any], Any]] = {}
            for name, transcoding in names.items():
                if type(transcoding) is UUIDAsHex:
                    fast[name] = UUID
                elif type(transcoding) is DatetimeAsISO:
                    fast[name] = datetime.fromisoformat
                else:
                    fast[name] = transcoding.decode
            general = transcoder._decode_obj

            def hook(d: dict[str, Any]) -> Any:
                if len(d) == 2 and "_data_" in d:
                    decode = fast.get(d.get("_type_"))  # type: ignore[arg-type]
                    if decode is not None and isinstance(d["_data_"], str):
                        return decode(d["_data_"])
                    return general(d)  # the transcoder's own answer (and errors)
                return d

            decoder = json.JSONDecoder(object_hook=hook)
            self._decode_state = lambda data: decoder.decode(data.decode("utf8"))

    def _resolve(self, topic: str) -> tuple[type[Any], Callable[[Any], Any], int, list[Callable[..., None]]]:
        cls = resolve_topic(topic)
        version = getattr(cls, "class_version", 1)
        upcasts = [getattr(cls, f"upcast_v{v}_v{v + 1}") for v in range(1, version)]
        entry = self._classes[topic] = (cls, find_id_convertor(cls, UUID), version, upcasts)
        return entry

    def event(self, originator_id: Any, version: int, topic: str, state: bytes) -> Any:
        decode_state = self._decode_state
        if decode_state is None or type(originator_id) is not UUID:
            return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
        entry = self._classes.get(topic)
        if entry is None:
            entry = self._resolve(topic)
        cls, convert, class_version, upcasts = entry
        try:
            event_state = decode_state(state)
        except Exception:  # noqa: BLE001 - the mapper raises its own error, naming the event
            return self.mapper.to_domain_event(StoredEvent(originator_id, version, topic, state))
        event_state["originator_id"] = convert(originator_id)
        event_state["originator_version"] = version
        from_version = event_state.pop("class_version", 1)
        while from_version < class_version:
            upcasts[from_version - 1](event_state)
            from_version += 1
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", event_state)
        return domain_event


@lru_cache(maxsize=8)
def decoder(mapper: Mapper[Any]) -> Decoder:
    return Decoder(mapper)


def decode(rows: Sequence[tuple[Any, ...]], mapper: Mapper[Any]) -> list[Notified]:
    """Rows ``(notification_id, originator_id, originator_version, topic, state)``."""
    event = decoder(mapper).event
    return [Notified(row[0], event(row[1], row[2], row[3], bytes(row[4]))) for row in rows]


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
    url: str, sql: str, params: Sequence[Any], *, snapshot: str | None = None, page: int = 10_000
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql``, page by page, read by a thread of its own on a connection of its
    own (in the exported ``snapshot`` when given) through a server-side cursor, so that the
    database sends the next page while the caller works on this one."""
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
                    with conn.cursor(name="read_pages") as cur:
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


def workers_for(events: int) -> int:
    """Worker processes for a replay of ``events`` events: one per CPU, at most
    ``MAX_WORKERS``, for a large log; none beside the caller's process for a small one
    (starting one costs about a second)."""
    return 1 if events < PARALLEL_FROM else max(1, min(MAX_WORKERS, os.cpu_count() or 1))
