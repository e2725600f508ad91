"""Rebuild read models from the start of the log into fresh tables and swap them in, while
the service (and the projections' live runners) keeps going.

1. create ``<table>__rebuild`` for each of the projections' tables (``LIKE ... INCLUDING ALL``);
   for 2.'s first part, without their indexes, built after it (a sort each, several times
   faster than keeping them up to date row by row);
2. replay the log into them, reading it once for all the projections being rebuilt: up to
   the head of one snapshot, stream by stream (``ORDER BY originator_id,
   originator_version``, the primary key), read by a thread of its own while the rows are
   computed; each chunk of whole streams is folded in memory by the projections
   (``apply_new``: the same effects, the same code as a live batch) and copied in (``COPY``),
   every row written once. A read model's rows depend on the order of the events of a
   stream, not on how streams interleave, so this equals replaying the log in order. Then
   the events appended meanwhile, in log order, in batches (``apply``);
3. in one transaction: lock the live projections' tracking rows (the live runners wait on
   them), lock the live tables, apply the last events, rename live -> ``__old`` and rebuilt
   -> live, drop the old tables, set the live positions to the rebuilt one. Readers see the
   old tables until the commit and the new ones after; the live runners resume from the
   rebuilt position.

A projection offers 2.'s first part with ``apply_new`` and ``copied`` (the tables it only
copies rows into there, whose indexes can wait; not one it upserts into, like
``project_stats``). A projection without them is replayed in log order, batch by batch, instead of 2.'s
first part.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import psycopg
from eventsourcing.persistence import Mapper

from projections import tracking
from projections.base import Projection
from projections.events import (
    Notified,
    StreamRange,
    decode,
    export_snapshot,
    few_collections,
    head,
    ledger_mapper,
    read_streams,
    select_after,
    stream_ranges,
    worker_context,
    workers_for,
)

SUFFIX = "__rebuild"
CHUNK_EVENTS = 20_000  # events folded and copied in at a time (whole streams: a chunk may hold more)


def rebuild(
    url: str,
    projection: Projection | Sequence[Projection],
    *,
    mapper: Mapper[Any] | None = None,
    batch_size: int = 2000,
    workers: int | None = None,
) -> int:
    """Rebuild the tables of ``projection`` (one, or several at once: the log is read once
    for all) from scratch and swap them in; returns the position the new tables are at.
    ``workers``: how many processes replay the streams (default: ``workers_for``). One
    rebuild at a time: a second one waits for the first (``_LOCK``), then rebuilds too."""
    projections = list(projection) if isinstance(projection, Sequence) else [projection]
    with psycopg.connect(url) as conn:
        _lock(conn)
        return _rebuild(conn, url, projections, mapper, batch_size, workers)


def catch_up_by_rebuild(
    url: str,
    projections: Sequence[Projection],
    *,
    at_least: int,
    mapper: Mapper[Any] | None = None,
    batch_size: int = 2000,
) -> int | None:
    """Rebuild ``projections`` when they are far behind the log (``far_behind``): a runner
    that starts on a long backlog (a new deployment, restored or emptied read models) gets
    there faster that way than batch by batch. Returns the position they were rebuilt to;
    None when they were not far behind (nothing done). Decided under the rebuild lock, so
    that projectors started at once rebuild once: the others find the first one's positions."""
    with psycopg.connect(url) as conn:
        _lock(conn)
        with conn.transaction(), conn.cursor() as cur:
            newest = head(cur)
            positions, _ = tracking.watched(conn, [p.name for p in projections])
        if not far_behind(min(positions.values()), newest, at_least):
            return None
        return _rebuild(conn, url, list(projections), mapper, batch_size, None)


# A rebuild reads the whole log, at about four times the events/s of the runners' batches
# (``benchmarks/projection_bench.py``, 200,000 events on 2 CPUs: 60,434 against 15,906): a
# runner a third of the log or more behind is quicker to rebuild.
FAR_BEHIND_SHARE = 3


def far_behind(position: int, newest: int, at_least: int) -> bool:
    """Whether a projection at ``position`` is far enough behind the log's ``newest``
    position to be rebuilt: ``at_least`` events (0: never) and a third of the log."""
    behind = newest - position
    return 0 < at_least <= behind and behind * FAR_BEHIND_SHARE >= newest


# Held (a session lock) by a rebuild from start to end: two at once would drop each other's
# shadow tables.
_LOCK = "SELECT pg_advisory_lock(hashtextextended('vto:projections:rebuild', 0))"


def _lock(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(_LOCK)


def _rebuild(
    conn: psycopg.Connection[Any],
    url: str,
    projections: list[Projection],
    mapper: Mapper[Any] | None,
    batch_size: int,
    workers: int | None,
) -> int:
    custom_mapper = mapper
    mapper = mapper or ledger_mapper()
    shadows = [{t: f"{t}{SUFFIX}" for t in p.tables} for p in projections]
    with conn.transaction():
        for shadow in shadows:
            for live, new in shadow.items():
                conn.execute(f"DROP TABLE IF EXISTS {new}")
                conn.execute(f"CREATE TABLE {new} (LIKE {live} INCLUDING ALL)")
    if all(hasattr(p, "apply_new") and hasattr(p, "copied") for p in projections):
        constraints: list[str] = []
        indexes: list[str] = []
        with conn.transaction():  # indexes are built once the rows are in: far faster
            for p, shadow in zip(projections, shadows, strict=True):
                for live in p.copied:  # type: ignore[attr-defined]
                    added, built = _drop_indexes(conn, shadow[live])
                    constraints += added
                    indexes += built
        position, used = _by_stream(url, projections, shadows, custom_mapper, workers)
        _build_indexes(url, (constraints, indexes), used)
    else:
        position = 0
    while True:  # the rest in log order, in transactions of one batch each
        with conn.transaction(), conn.cursor() as cur:
            batch = decode(select_after(cur, position, batch_size), mapper)
            if batch:
                for p, shadow in zip(projections, shadows, strict=True):
                    p.apply(cur, batch, shadow)
                position = batch[-1].position
        if len(batch) < batch_size:
            break
    with conn.transaction(), conn.cursor() as cur:  # catch up and swap
        for p in projections:
            tracking.lock(cur, p.name)
        for p in projections:
            for live in p.tables:
                cur.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")
        while True:
            batch = decode(select_after(cur, position, batch_size), mapper)
            if not batch:
                break
            for p, shadow in zip(projections, shadows, strict=True):
                p.apply(cur, batch, shadow)
            position = batch[-1].position
        for p, shadow in zip(projections, shadows, strict=True):
            for live, new in shadow.items():
                cur.execute(f"ALTER TABLE {live} RENAME TO {live}__old")
                cur.execute(f"ALTER TABLE {new} RENAME TO {live}")
                cur.execute(f"DROP TABLE {live}__old")
            tracking.advance(cur, p.name, position)
            cur.execute(  # left by the rebuilds of earlier versions
                "DELETE FROM projection_tracking WHERE name = %s", (f"{p.name}{SUFFIX}",)
            )
    return position


def _by_stream(
    url: str,
    projections: list[Projection],
    shadows: list[dict[str, str]],
    mapper: Mapper[Any] | None,
    workers: int | None,
) -> tuple[int, int]:
    """Step 2's first part: every event up to the head of a snapshot, stream by stream, in
    chunks of whole streams, by ``workers`` processes (each a range of the users, in that
    snapshot); returns that head and how many processes replayed it."""
    with psycopg.connect(url) as reader:
        snapshot = export_snapshot(reader)
        with reader.cursor() as cur:
            position = head(cur)
        if workers is None:
            workers = 1 if mapper is not None else workers_for(position)
        if workers <= 1:
            _rebuild_range(url, snapshot, position, StreamRange(), projections, shadows, mapper)
        else:
            with ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
                jobs = [
                    pool.submit(_rebuild_range, url, snapshot, position, streams, projections, shadows, None)
                    for streams in stream_ranges(workers)
                ]
                for job in jobs:
                    job.result()
        reader.rollback()
    return position, max(1, workers)


def _build_indexes(url: str, phases: Sequence[Sequence[str]], connections: int) -> None:
    """Run the statements of ``phases`` (``_drop_indexes``'s, for the shadow tables), a phase
    after the one before, on up to ``connections`` connections at once (the replay's
    processes have ended: the same budget), each in its own transaction: first the
    constraints (``ALTER TABLE`` locks its table), then the other indexes (``CREATE INDEX``
    shares the table's lock, so several of one table are built at once). Built one after
    another, they were a seventh of a rebuild of 200,000 events (0.6 of 4.2 s)."""
    for phase in phases:
        todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for sql in phase:
            todo.put(sql)
        count = max(1, min(connections, len(phase)))
        with ThreadPoolExecutor(count) as pool:
            for built in [pool.submit(_build_from, url, todo) for _ in range(count)]:
                built.result()


def _build_from(url: str, todo: queue.SimpleQueue[str]) -> None:
    """Run the statements of ``todo`` on a connection of its own until none is left."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            try:
                sql = todo.get_nowait()
            except queue.Empty:
                return
            conn.execute(sql)


def _rebuild_range(
    url: str,
    snapshot: str,
    position: int,
    streams: StreamRange,
    projections: list[Projection],
    shadows: list[dict[str, str]],
    mapper: Mapper[Any] | None,
) -> None:
    events = read_streams(url, snapshot, position, streams, mapper or ledger_mapper())
    with psycopg.connect(url) as conn, few_collections(), _Writer(conn, projections, shadows) as writer:
        chunk: list[Notified] = []
        for _, stream in events:
            chunk.extend(stream)
            if len(chunk) >= CHUNK_EVENTS:
                writer.put(chunk)
                chunk = []
        if chunk:
            writer.put(chunk)


def _drop_indexes(conn: psycopg.Connection[Any], table: str) -> tuple[list[str], list[str]]:
    """Drop the indexes of ``table`` (those of its primary key and unique constraints too);
    returns the statements that create them again, as they were: the constraints', then the
    other indexes'."""
    constraints_again: list[str] = []
    indexes_again: list[str] = []
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname",
        (table,),
    ).fetchall()
    for name, definition in constraints:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        constraints_again.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    indexes = conn.execute(
        "SELECT i.oid::regclass::text, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass ORDER BY 1",
        (table,),
    ).fetchall()
    for name, definition in indexes:
        conn.execute(f"DROP INDEX {name}")
        indexes_again.append(definition)
    return constraints_again, indexes_again


class _Writer:
    """Folds and copies in the chunks, one transaction each, in a thread of its own: while
    it waits for the database to take a chunk in, the caller decodes the next one."""

    def __init__(
        self, conn: psycopg.Connection[Any], projections: list[Projection], shadows: list[dict[str, str]]
    ) -> None:
        self.conn = conn
        self.projections = projections
        self.shadows = shadows
        self.chunks: queue.Queue[list[Notified] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rebuild-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def put(self, batch: list[Notified]) -> None:
        self._check()
        self.chunks.put(batch)

    def __exit__(self, *exc: object) -> None:
        self.chunks.put(None)  # the thread drains the queue up to it, whatever happened
        self.thread.join()
        if exc[0] is None:
            self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (batch := self.chunks.get()) is not None:
            if self.error is not None:
                continue  # drain: the caller raises the error at its next put
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    for p, shadow in zip(self.projections, self.shadows, strict=True):
                        p.apply_new(cur, batch, shadow)  # type: ignore[attr-defined]
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                self.error = exc
