"""Live job events (``GET /vto/jobs/{id}/events``): server-sent events driven by the database,
so a stream on any API replica sees every change, whoever made it (docs/job-api.md).

One ``JobEventHub`` per API process (made on first use, closed with the app): one PostgreSQL
connection, whatever the number of streams, that

- LISTENs on ``projection_tracking`` (the jobs projection NOTIFYs each commit: payload
  ``jobs``) and ``job_progress`` (a trigger NOTIFYs every progress write with the job id,
  migration 0023);
- on each such wake-up that concerns a watched job, and every ``VTO_SSE_POLL_INTERVAL_S``
  anyway (a LISTEN connection can die without telling), reads the rows of every job a stream
  of this process watches, in one statement, and hands each stream its job's row when its
  event id grew;
- renews the rows of its open streams (``job_event_streams``, the per-account limit over
  every replica) every ``VTO_SSE_KEEPALIVE_S`` and deletes those of closed streams.

A stream (``job_events``) sends the job as it is first, then each change, and ends after a
terminal status. Event ids are the job's state as a number, so they grow with every change
and mean the same on every replica: ``status rank * 10000 + progress in thousandths``
(queued 0, running 1, finished 2). ``Last-Event-ID`` resumes: only a state with a greater id is
sent (the current one, not the steps in between, which no table keeps)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from command_api.catalog.media import UrlSigner
from command_api.vto import repository
from command_api.vto.schemas import JobOut
from ledger.status import JobStatus
from projections import tracking
from projections.events import TRACKING_CHANNEL  # payload: ``projections.tracking.notice``

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"
PROGRESS_CHANNEL = "job_progress"  # migration 0023's trigger
_RANK = {JobStatus.QUEUED: 0, JobStatus.RUNNING: 1}
PRUNE_EVERY_S = 600.0


def event_id(job: JobOut) -> int:
    """The job's state as a number that grows with every status or progress change."""
    rank = _RANK.get(job.status, 2)
    return rank * 10_000 + round((job.progress or 0.0) * 1000)


def parse_last_event_id(value: str | None) -> int:
    """``Last-Event-ID`` as an event id; anything else resumes from the start (-1)."""
    try:
        return int(value) if value is not None and value.strip() else -1
    except ValueError:
        return -1


def frame(kind: str, job: JobOut, data: str | None = None) -> bytes:
    """One event: ``event:``, ``id:``, and the job as ``GET /vto/jobs/{id}`` shows it
    (``data``: that JSON already made)."""
    if data is None:
        data = json.dumps(job.model_dump(mode="json"), separators=(",", ":"))
    return f"event: {kind}\nid: {event_id(job)}\ndata: {data}\n\n".encode()


@dataclass(eq=False)
class Rendered:
    """A job row as the event's body, rendered once for every stream of the job that reads
    it through the same base URL (``render``)."""

    row: Mapping[str, Any]
    base: str
    job: JobOut
    data: str


def render(sub: Subscription, row: Mapping[str, Any], sign: UrlSigner) -> Rendered:
    shared = sub.shared
    if (
        shared.get("rendered") is None
        or shared["rendered"].row is not row
        or shared["rendered"].base != sign.base
    ):
        job = JobOut.of(row, sign)
        shared["rendered"] = Rendered(
            row, sign.base, job, json.dumps(job.model_dump(mode="json"), separators=(",", ":"))
        )
    rendered: Rendered = shared["rendered"]
    return rendered


@dataclass(eq=False)
class Subscription:
    """A stream's mailbox: the newest row of its job (older ones are of no use to it)."""

    job_id: uuid.UUID
    row: Mapping[str, Any] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    shared: dict[str, Any] = field(default_factory=dict)  # one per job in the hub: ``render``


class JobEventHub:
    """The process's one LISTEN connection and one reader for all its streams."""

    def __init__(self, url: str, *, poll_interval: float, renew_interval: float) -> None:
        self.url = url
        self.poll_interval = poll_interval
        self.renew_interval = renew_interval
        self.reads = 0  # statements that read the watched jobs (benchmarks, tests)
        self._subs: dict[uuid.UUID, set[Subscription]] = {}
        self._seen: dict[uuid.UUID, int] = {}  # the event id last handed out, per job
        self._streams: set[uuid.UUID] = set()  # rows of job_event_streams to renew
        self._released: set[uuid.UUID] = set()  # rows to delete
        self._task: asyncio.Task[None] | None = None
        self._renewed_at = 0.0
        self._pruned_at = 0.0

    @property
    def streams(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    def subscribe(self, job_id: uuid.UUID) -> Subscription:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-event-hub")
        subs = self._subs.setdefault(job_id, set())
        sub = Subscription(job_id, shared=next(iter(subs)).shared if subs else {})
        subs.add(sub)
        return sub

    def track(self, stream_id: uuid.UUID) -> None:
        """Renew the stream's row of ``job_event_streams`` until it is unsubscribed."""
        self._streams.add(stream_id)

    def unsubscribe(self, sub: Subscription, stream_id: uuid.UUID | None = None) -> None:
        """Synchronous (it runs in a cancelled stream's ``finally``): the row is deleted by
        the hub's next round."""
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]
                self._seen.pop(sub.job_id, None)
        if stream_id is not None:
            self._streams.discard(stream_id)
            self._released.add(stream_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, row_factory=dict_row
                ) as conn:
                    await conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
                    await conn.execute(f"LISTEN {TRACKING_CHANNEL}")
                    await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the database above all: reconnect after a pause)
                log.warning("live events: connection lost (%s); reconnecting", exc)
                await asyncio.sleep(self.poll_interval)

    async def _serve(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        wake = True  # a first round at once: anything written before LISTEN
        while True:
            if wake and self._subs:
                await self._read(conn)
            await self._housekeeping(conn)
            wake = await self._wait(conn)

    async def _wait(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> bool:
        """Until a notification that concerns a watched job, or the poll interval (then True
        as well: the poll fallback). Notifications that came meanwhile are all consumed."""
        deadline = time.monotonic() + self.poll_interval
        while (left := deadline - time.monotonic()) > 0:
            async for notify in conn.notifies(timeout=left, stop_after=1):
                if notify.channel == TRACKING_CHANNEL and tracking.notice(notify.payload)[0] == "jobs":
                    return True
                if notify.channel == PROGRESS_CHANNEL:
                    with contextlib.suppress(ValueError):
                        if uuid.UUID(notify.payload) in self._subs:
                            return True
        return True

    async def _read(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        ids = list(self._subs)
        cur = await conn.execute(repository.WATCHED_JOBS, (ids,))
        self.reads += 1
        for row in await cur.fetchall():
            job_id = row["job_id"]
            subs = self._subs.get(job_id)
            if not subs:
                continue
            key = _row_event_id(row)
            if key <= self._seen.get(job_id, -1):
                continue
            self._seen[job_id] = key
            for sub in subs:
                sub.row = row
                sub.changed.set()

    async def _housekeeping(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        if self._released:
            released, self._released = list(self._released), set()
            await conn.execute(repository.STREAM_RELEASE, (released,))
        now = time.monotonic()
        if self._streams and now - self._renewed_at >= self.renew_interval:
            self._renewed_at = now
            await conn.execute(repository.STREAM_RENEW, (list(self._streams),))
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await conn.execute(repository.STREAM_PRUNE)


def _row_event_id(row: Mapping[str, Any]) -> int:
    rank = _RANK.get(JobStatus(row["shown_status"]), 2)
    return rank * 10_000 + round((row["progress"] or 0.0) * 1000)


async def job_events(
    hub: JobEventHub,
    sub: Subscription,
    first: JobOut,
    last_seen: int,
    sign: UrlSigner,
    keepalive_s: float,
    stream_id: uuid.UUID | None,
) -> AsyncIterator[bytes]:
    """The stream's body: ``first`` (the job when the stream opened) unless the client saw
    it, then each change, keep-alive comments between; it ends after a terminal status."""
    try:
        job = first
        if event_id(job) > last_seen:
            yield frame("status", job)
            last_seen = event_id(job)
        while not job.status.finished:
            try:
                await asyncio.wait_for(sub.changed.wait(), keepalive_s)
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            sub.changed.clear()
            if sub.row is None:
                continue
            rendered = render(sub, sub.row, sign)
            new = rendered.job
            if event_id(new) > last_seen:
                yield frame("status" if new.status != job.status else "progress", new, rendered.data)
                last_seen = event_id(new)
                job = new
    finally:
        hub.unsubscribe(sub, stream_id)
