"""Projection ``jobs``: ``vto_job`` (one row per job), ``gallery`` (one row per output) and
``project_stats`` (image and video counts per project).

Status: the status the product shows for the reservation's status after the event (its
effect, ``ledger.effects``): a reservation is ``queued``; ``JobCompleted`` -> ``succeeded``
(also when it arrives after the sweeper failed and refunded the job: it is delivered free, to
the gallery too); ``JobFailed`` -> ``failed`` (an expired job has error code ``timeout``);
``JobCanceled`` -> ``canceled`` (by its user, or at its deadline: ``deadline_at``, the
creation + the request's ``deadline_s``, refund cause ``deadline``). A finished job is
``charged`` when its success settled the reservation. ``running`` (and ``started_at``) will
come from the worker's progress messages."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from ledger.account import Account
from ledger.status import JobStatus
from projections.base import copy_rows, jsonb, upsert_rows
from projections.events import Notified

JOB_TYPES = (
    ("job_id", "uuid"),
    ("user_id", "uuid"),
    ("project_id", "text"),
    ("kind", "text"),
    ("status", "text"),
    ("charge_source", "text"),
    ("charge_amount", "bigint"),
    ("charged", "boolean"),
    ("refund_source", "text"),
    ("refund_amount", "bigint"),
    ("refund_cause", "text"),
    ("request", "jsonb"),
    ("outputs", "jsonb"),
    ("error", "jsonb"),
    ("idempotency_key", "text"),
    ("created_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("refunded_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("position", "bigint"),
    ("deadline_at", "timestamptz"),
)
JOB_COLUMNS = tuple(name for name, _ in JOB_TYPES)
_JSON = {"request", "outputs", "error"}
GALLERY_TYPES = (
    ("job_id", "uuid"),
    ("output_index", "integer"),
    ("project_id", "text"),
    ("user_id", "uuid"),
    ("storage_key", "text"),
    ("media_type", "text"),
    ("width", "integer"),
    ("height", "integer"),
    ("duration", "double precision"),
    ("size", "bigint"),
    ("created_at", "timestamptz"),
    ("position", "bigint"),
)
GALLERY_COLUMNS = ", ".join(name for name, _ in GALLERY_TYPES)
STATS_TYPES = (("project_id", "text"), ("image_count", "bigint"), ("video_count", "bigint"))
_JOB_EVENTS = (
    Account.EntitlementReserved,
    Account.JobRequested,
    Account.JobCompleted,
    Account.JobFailed,
    Account.JobCanceled,
    Account.Refunded,
)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


_job_values = operator.itemgetter(*JOB_COLUMNS)
_JSON_AT = [i for i, c in enumerate(JOB_COLUMNS) if c in _JSON]


def _job_row(job: dict[str, Any]) -> tuple[Any, ...]:
    row = list(_job_values(job))
    for i in _JSON_AT:
        if row[i] is not None:
            row[i] = jsonb(row[i])
    return tuple(row)


def _first_outputs(gallery: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The gallery rows, the first of each (job, output index) only: as ``ON CONFLICT DO
    NOTHING`` keeps them (a success delivered again after its job's refund)."""
    first = {(row[0], row[1]): row for row in reversed(gallery)}
    return list(reversed(first.values()))


def media_class(media_type: str | None, kind: str) -> str:
    """``image`` or ``video``: from the output's media type, else from the job's kind."""
    if media_type:
        major = media_type.split("/", 1)[0]
        if major in ("image", "video"):
            return major
    return "video" if kind == "video" else "image"


class JobsProjection:
    name = "jobs"
    tables = ("vto_job", "gallery", "project_stats")
    copied = ("vto_job", "gallery")  # the tables ``apply_new`` only copies rows into

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        relevant = [n for n in batch if isinstance(n.event, _JOB_EVENTS)]
        if not relevant:
            return
        jobs = self._load(cur, tables["vto_job"], {n.event.job_id for n in relevant})
        changed, gallery, stats = self._fold(relevant, jobs)
        upsert_rows(
            cur,
            tables["vto_job"],
            JOB_TYPES,
            [_job_row(jobs[j]) for j in changed],
            "ON CONFLICT (job_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in JOB_COLUMNS[1:]),
        )
        upsert_rows(cur, tables["gallery"], GALLERY_TYPES, _first_outputs(gallery), "ON CONFLICT DO NOTHING")
        self._add_stats(cur, tables, stats)

    def apply_new(
        self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]
    ) -> None:
        """Like ``apply``, for a batch that holds every event of each stream it touches,
        from the first, into tables that have no row of them yet (a rebuild): the rows are
        computed in memory and copied in (``COPY``), each written once."""
        jobs: dict[UUID, dict[str, Any]] = {}
        _, gallery, stats = self._fold([n for n in batch if isinstance(n.event, _JOB_EVENTS)], jobs)
        copy_rows(cur, tables["vto_job"], JOB_TYPES, map(_job_row, jobs.values()))
        copy_rows(cur, tables["gallery"], GALLERY_TYPES, _first_outputs(gallery))
        self._add_stats(cur, tables, stats)

    def _fold(
        self, relevant: Sequence[Notified], jobs: dict[UUID, dict[str, Any]]
    ) -> tuple[set[UUID], list[tuple[Any, ...]], dict[str, Counter[str]]]:
        """Evolve the job rows by the job events ``relevant``, in memory; returns the jobs it
        changed, the gallery rows and the image and video counts per project it adds."""
        gallery: list[tuple[Any, ...]] = []
        stats: dict[str, Counter[str]] = {}
        changed: set[UUID] = set()
        for n in relevant:
            e = n.event
            job = jobs.get(e.job_id)
            if isinstance(e, Account.EntitlementReserved):
                job = jobs[e.job_id] = dict.fromkeys(JOB_COLUMNS)
                job.update(
                    job_id=e.job_id,
                    user_id=e.originator_id,
                    kind=e.kind,
                    charge_source=e.source,
                    charge_amount=e.amount,
                    outputs=[],
                    idempotency_key=e.idempotency_key,
                    created_at=e.timestamp,
                )
            elif job is None:
                continue  # an event of a job this projection never saw reserved (cannot happen)
            elif isinstance(e, Account.JobRequested):
                job["request"] = e.request
                project = e.request.get("project_id")
                job["project_id"] = None if project is None else str(project)
                job["deadline_at"] = deadline_at(e.request, job["created_at"])
            elif isinstance(e, Account.JobCompleted):
                job.update(outputs=e.outputs, error=None)
                project = job["project_id"]
                for index, output in enumerate(e.outputs):
                    media_type = output.get("media_type")
                    gallery.append(
                        (
                            e.job_id,
                            index,
                            project,
                            job["user_id"],
                            output.get("storage_key"),
                            media_type,
                            _int(output.get("width")),
                            _int(output.get("height")),
                            _float(output.get("duration")),
                            _int(output.get("size")),
                            e.timestamp,
                            n.position,
                        )
                    )
                    if project is not None:
                        stats.setdefault(project, Counter())[media_class(media_type, job["kind"])] += 1
            elif isinstance(e, Account.JobFailed):
                job["error"] = e.error
            elif isinstance(e, Account.JobCanceled):
                job["error"] = {"code": "canceled", "message": e.reason}
            elif isinstance(e, Account.Refunded):
                job.update(
                    refund_source=e.source,
                    refund_amount=e.amount,
                    refund_cause=e.cause,
                    refunded_at=e.timestamp,
                )
            change = n.effect.job
            if change is not None and change.status is not None:  # the job's status changed
                job["status"] = change.status.job_status
                if not change.status.open:
                    job.update(finished_at=e.timestamp, charged=change.settled)
            job["updated_at"], job["position"] = e.timestamp, n.position
            changed.add(e.job_id)
        return changed, gallery, stats

    @staticmethod
    def _add_stats(
        cur: psycopg.Cursor[Any], tables: Mapping[str, str], stats: dict[str, Counter[str]]
    ) -> None:
        upsert_rows(
            cur,
            tables["project_stats"],
            STATS_TYPES,
            [(p, c["image"], c["video"]) for p, c in sorted(stats.items())],
            "ON CONFLICT (project_id) DO UPDATE SET image_count = t.image_count + EXCLUDED.image_count, "
            "video_count = t.video_count + EXCLUDED.video_count",
        )

    @staticmethod
    def _load(cur: psycopg.Cursor[Any], table: str, job_ids: set[UUID]) -> dict[UUID, dict[str, Any]]:
        cur.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM {table} WHERE job_id = ANY(%s)", (list(job_ids),))
        return {row[0]: dict(zip(JOB_COLUMNS, row, strict=True)) for row in cur.fetchall()}


def deadline_at(request: Mapping[str, Any], created_at: datetime | None) -> datetime | None:
    """When a job's deadline comes: its creation + the ``deadline_s`` of its request (None: the
    order set no deadline)."""
    seconds = _int(request.get("deadline_s"))
    if seconds is None or created_at is None:
        return None
    return created_at + timedelta(seconds=seconds)


def jobs_past_deadline(
    conn: psycopg.Connection[Any], now: datetime, limit: int = 1000
) -> list[tuple[UUID, UUID]]:
    """The jobs still open (queued or running) whose deadline came at or before ``now``, as
    (user id, job id), oldest deadline first, from the ``vto_job`` read model (the sweeper's
    candidates: each account cancels only a job still open)."""
    rows = conn.execute(
        "SELECT user_id, job_id FROM vto_job WHERE status = %s AND deadline_at IS NOT NULL "
        "AND deadline_at <= %s ORDER BY deadline_at, job_id LIMIT %s",
        (JobStatus.QUEUED.value, now, limit),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def users_with_open_jobs_before(conn: psycopg.Connection[Any], cutoff: datetime) -> list[UUID]:
    """The users holding a job still open (queued or running) that was created at or before
    ``cutoff``, from the ``vto_job`` read model (the sweeper's candidates: the ledger's
    accounts decide what is really stale)."""
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM vto_job WHERE status = %s AND created_at <= %s ORDER BY user_id",
        (JobStatus.QUEUED.value, cutoff),
    ).fetchall()
    return [row[0] for row in rows]
