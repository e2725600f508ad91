"""Reading the event store's notification log and decoding its events."""

from __future__ import annotations

import gc
import itertools
import json
import multiprocessing
import operator
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from multiprocessing.context import BaseContext
from typing import Any
from uuid import UUID, SafeUUID

import orjson
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
MAX_WORKERS = 4  # each opens 2 connections (docs/operations.md "Connection budget")


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


_new_uuid = object.__new__
_set = object.__setattr__
_UUID_SLOTS = ("int", "is_safe", "__weakref__")


def uuid_of(text: str) -> UUID:
    """``UUID(text)``, made faster for the usual text (32 hex digits, dashes or not): the same
    value, and for any other text ``UUID(text)`` itself (its answer or its error). Any text
    ``int(..., 16)`` reads once its dashes are gone is what ``UUID`` reads too: the prefixes
    and braces ``UUID`` strips are not digits."""
    digits = text.replace("-", "")
    if len(digits) == 32 and UUID.__slots__ == _UUID_SLOTS:
        try:
            value = int(digits, 16)
        except ValueError:
            return UUID(text)
        uuid = _new_uuid(UUID)
        _set(uuid, "int", value)
        _set(uuid, "is_safe", SafeUUID.unknown)
        return uuid
    return UUID(text)


class _Unusual(Exception):
    """JSON that ``orjson`` may read otherwise than ``json`` (a number with a fraction or an
    exponent, or an integer too large for 64 bits, which ``orjson`` reads as a float)."""


class Decoder:
    """Stored events to domain events exactly as ``mapper.to_domain_event`` makes them (the
    same transcoder, topics, originator id conversion and upcasting), with what it looks up
    per topic resolved once and the JSON of the usual transcodings (UUIDs, datetimes) decoded
    without a call through the transcoder. A mapper that encrypts or compresses, or a
    transcoder that is not the JSON one, is left to the mapper.

    The JSON is read by ``orjson`` and its transcodings (``{"_type_": ..., "_data_": ...}``
    objects, at any depth) converted afterwards, innermost first, as the transcoder's
    ``object_hook`` converts them while ``json`` reads; JSON that holds a float, or that
    ``orjson`` refuses, is read by ``json`` with that hook (and what that refuses, by the
    mapper, which raises its own error)."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self._classes: dict[str, tuple[type[Any], Callable[[Any], Any], int, list[Callable[..., None]]]] = {}
        transcoder = mapper.transcoder
        self._decode_state: Callable[[bytes], Any] | None = None
        if mapper.cipher is None and mapper.compressor is None and type(transcoder) is JSONTranscoder:
            fast: dict[str, Callable[[Any], Any]] = {}
            for name, transcoding in transcoder.names.items():
                if type(transcoding) is UUIDAsHex:
                    fast[name] = uuid_of
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

            def transcoded(d: dict[str, Any]) -> Any:
                """A JSON object of orjson's, its values converted in place (innermost first)
                as ``hook`` converts them while ``json`` reads, and then itself by ``hook``."""
                for key, value in d.items():  # values replaced in place: the keys stay
                    t = type(value)
                    if t is dict:
                        if (
                            len(value) == 2
                            and type(value.get("_data_")) is str
                            and type(value.get("_type_")) is str
                        ):
                            decode = fast.get(value["_type_"])  # no object inside: what ``hook`` does
                            d[key] = general(value) if decode is None else decode(value["_data_"])
                        else:
                            d[key] = transcoded(value)
                    elif t is list:
                        in_list(value)
                    elif t is float:
                        raise _Unusual
                return hook(d) if len(d) == 2 else d

            def in_list(items: list[Any]) -> None:
                for i, value in enumerate(items):
                    t = type(value)
                    if t is dict:
                        items[i] = transcoded(value)
                    elif t is list:
                        in_list(value)
                    elif t is float:
                        raise _Unusual

            decoder = json.JSONDecoder(object_hook=hook)
            loads = orjson.loads

            def decode_state(data: bytes) -> Any:
                try:
                    state = loads(data)
                    if type(state) is not dict:
                        raise _Unusual
                    return transcoded(state)
                except Exception:  # noqa: BLE001 - json says what it makes of it (or raises)
                    return decoder.decode(data.decode("utf8"))

            self._decode_state = decode_state

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
        if type(event_state) is not dict:  # JSON that is no object: the mapper says what it is
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
    event = decoder(mapper).event
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
        yield originator_id, [Notified(r[1], event(originator_id, r[2], r[3], r[4])) for r in rows]


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
