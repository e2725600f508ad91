"""Job rules: what a job request records, who may read or cancel a job; job and gallery bodies."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.persistence import StoredEvent
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from command_api import own_reads
from command_api.auth import tokens
from command_api.catalog.access import readable_project_id
from command_api.catalog.job_inputs import load_job_inputs
from command_api.catalog.media import UrlSigner
from command_api.pagination import Page, cut, decode
from command_api.problems import DomainError, NotFound
from command_api.vto import repository
from command_api.vto.schemas import Charge, GalleryItem, JobIn, JobOut, QueueSpot
from infra.settings import Settings
from ledger.account import Reservation
from ledger.application import LedgerApplication, StreamNews
from ledger.status import JobStatus
from pipeline.webhooks.events import events_filter


class JobFinished(DomainError):
    status, code = 409, "job_finished"


class InvalidCancelAfter(DomainError):
    status, code = 422, "invalid_cancel_after"


class InvalidDeadline(DomainError):
    status, code = 422, "invalid_deadline"


# ``Cancel-After``: whole seconds ("90"), or a duration of hours, minutes and seconds in that
# order, each at most once ("90s", "10m", "1h", "1h30m", "2m30s").
_DURATION = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,9})s)?")
_SECONDS = re.compile(r"[0-9]{1,9}")


def cancel_after_seconds(value: str, most: int) -> int:
    """The seconds a ``Cancel-After`` header gives; ``InvalidCancelAfter`` when it is not a
    duration, or is not in (0, ``most``]."""
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = int(text)
    else:
        found = _DURATION.fullmatch(text)
        if not text or found is None:
            raise InvalidCancelAfter(
                "Cancel-After must be a duration such as 90s, 10m, 1h or 1h30m, or whole seconds; "
                f"got {value!r}"
            )
        hours, minutes, secs = (int(part or 0) for part in found.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 0 < seconds <= most:
        raise InvalidCancelAfter(f"Cancel-After must be more than 0 s and at most {most} s; got {value!r}")
    return seconds


def job_deadline(body: JobIn, cancel_after: str | None, most: int) -> JobIn:
    """The body with the deadline the order sets (``deadline_s``): the earlier of the
    ``Cancel-After`` header and the body's ``deadline_s`` (either may be absent), each checked
    against (0, ``most``] (``InvalidCancelAfter``, ``InvalidDeadline``); nothing is changed
    before both are valid."""
    header = None if cancel_after is None else cancel_after_seconds(cancel_after, most)
    if body.deadline_s is not None and body.deadline_s > most:
        raise InvalidDeadline(f"deadline_s must be at most {most} s; got {body.deadline_s}")
    given = [s for s in (header, body.deadline_s) if s is not None]
    if not given or min(given) == body.deadline_s:
        return body
    return body.model_copy(update={"deadline_s": min(given)})


class TooManyStreams(DomainError):
    status, code = 429, "too_many_streams"


@dataclass(frozen=True)
class Order:
    """A job order read and checked, ready for the ledger: the request as the ledger records
    it, and the news of the caller's stream read with it (``ledger.store.StreamNews``)."""

    request: dict[str, Any]
    news: StreamNews | None


def job_request(
    session: Session | Connection,
    user_id: uuid.UUID,
    body: JobIn,
    claims: tokens.Claims | None = None,
    stream_after: int | None = None,
) -> Order:
    """The job as the ledger records it (and the relay publishes it): the client's choices
    and the storage keys of its inputs, after checking the caller may use each of them (and,
    with ``claims``, the caller's access token, in the same read; with ``stream_after``, the
    caller's ledger events after that version, in the same read too).
    Deterministic for a given body, so an idempotent retry fingerprints the same."""
    found = load_job_inputs(
        session,
        user_id,
        body.project_id,
        body.product_ids,
        body.model_asset_id,
        body.background_asset_id,
        claims=claims,
        stream_after=stream_after,
    )
    inputs = {
        "model": found["model"]["storage_key"],
        "background": found["background"]["storage_key"] if found["background"] else None,
        "garments": [
            {"key": p["storage_key"], "category": p["category"], "side": p["side"]} for p in found["products"]
        ],
    }
    request: dict[str, Any] = {
        "project_id": str(body.project_id),
        "product_ids": [str(p) for p in body.product_ids],
        "model_asset_id": str(body.model_asset_id),
        "background_asset_id": str(body.background_asset_id) if body.background_asset_id else None,
        "pose": body.pose.value,
        "options": body.options.model_dump(),
        "inputs": inputs,
    }
    if body.deadline_s is not None:  # absent otherwise: a request without one fingerprints as before
        request["deadline_s"] = body.deadline_s
    if body.webhook is not None:
        request["webhook"] = body.webhook
        request["webhook_events_filter"] = events_filter(body.webhook_events_filter)
    news = None
    if stream_after is not None:
        events = [
            StoredEvent(user_id, version, topic, bytes(state)) for version, topic, state in found["stream"]
        ]
        snapshot = found["snapshot"]
        news = StreamNews(
            stream_after,
            events,
            None if snapshot is None else StoredEvent(user_id, snapshot[0], snapshot[1], bytes(snapshot[2])),
        )
    return Order(request, news)


def read_order(conn: Connection, ledger: LedgerApplication, claims: tokens.Claims, body: JobIn) -> Order:
    """The token, the catalog and the news of the caller's ledger stream, in one read."""
    return job_request(conn, claims.user_id, body, claims, ledger.known_version(claims.user_id))


def place_order(
    ledger: LedgerApplication,
    claims: tokens.Claims,
    body: JobIn,
    order: Order,
    idempotency_key: str | None,
    trace: dict[str, str] | None = None,
) -> Reservation:
    """Reserve the charge and record the job (one ledger append; no catalog connection held),
    with ``trace`` (the request id and trace context, ``infra.tracing``: the relay sends them
    on; not part of the request's fingerprint)."""
    request = order.request if not trace else {**order.request, "trace": trace}
    return ledger.request_job(
        claims.user_id, uuid.uuid4(), body.kind.value, request, idempotency_key, news=order.news
    ).value


def repeated_order(
    conn: Connection, reservation: Reservation, body: JobIn, sign: UrlSigner, queue: QueueTerms
) -> JobOut:
    """An idempotent repeat shows the job as the read model has it (the caller waited until
    that includes everything written so far: the job may have moved on since it was ordered)."""
    row = repository.job_row(conn, reservation.job_id)
    return job_from_reservation(reservation, body) if row is None else jobs_out(conn, [row], sign, queue)[0]


@dataclass(frozen=True)
class QueueTerms:
    """How a queued job's place is told: the ETA's throughput window, and how many jobs ahead
    are counted exactly (``VTO_QUEUE_ETA_WINDOW_S``, ``VTO_QUEUE_POSITION_EXACT_MAX``)."""

    window_s: float
    exact_max: int

    @classmethod
    def of(cls, settings: Settings) -> QueueTerms:
        return cls(settings.queue_eta_window_s, settings.queue_position_exact_max)

    def params(self) -> dict[str, Any]:
        """The parameters of the queue counts in ``repository.OWN_JOB``."""
        return {"window": self.window_s, "cap": self.exact_max}

    def spot(self, ahead: int, started_recently: int, exact: bool) -> QueueSpot:
        """The place shown for ``ahead`` jobs ahead: the ETA is ``(ahead + 1) / rate``, the
        rate being the jobs started per second over the window (None when none started)."""
        eta = round((ahead + 1) * self.window_s / started_recently, 1) if started_recently else None
        return QueueSpot(ahead, eta, exact)


def queue_spots(conn: Session | Connection, rows: list[Any], queue: QueueTerms) -> dict[uuid.UUID, QueueSpot]:
    """The place in the queue of the rows shown ``queued`` (one query for them all): the
    position (``repository.QUEUE``) and the ETA, ``(position + 1) / rate`` where the rate is
    the jobs started per second over the last ``queue.window_s`` (None when none started).
    Past ``queue.exact_max`` jobs ahead the position is a lower bound (``exact`` false), so that
    a poll costs the same however long the queue is."""
    queued = [(r["job_id"], r["created_at"]) for r in rows if r["shown_status"] == JobStatus.QUEUED]
    places = repository.queue_rows(conn, queued, queue.window_s, queue.exact_max)
    return {job_id: queue.spot(*place) for job_id, place in places.items()}


def jobs_out(conn: Session | Connection, rows: list[Any], sign: UrlSigner, queue: QueueTerms) -> list[JobOut]:
    """The rows as jobs, the queued ones with their place in the queue."""
    spots = queue_spots(conn, rows, queue)
    return [JobOut.of(row, sign, spots.get(row["job_id"])) for row in rows]


def job_from_reservation(reservation: Reservation, body: JobIn) -> JobOut:
    return JobOut(
        id=reservation.job_id,
        status=JobStatus.QUEUED,
        kind=reservation.kind,
        project_id=str(body.project_id),
        charge=Charge(source=reservation.source, amount=reservation.amount),
        created_at=reservation.reserved_at,
        product_ids=body.product_ids,
        model_asset_id=body.model_asset_id,
        background_asset_id=body.background_asset_id,
        pose=body.pose.value,
        options=body.options.model_dump(),
        deadline_s=body.deadline_s,
        deadline_at=None
        if body.deadline_s is None
        else reservation.reserved_at + timedelta(seconds=body.deadline_s),
        webhook=body.webhook,
        webhook_events_filter=events_filter(body.webhook_events_filter) if body.webhook else None,
    )


def own_job(
    conn: Connection,
    claims: tokens.Claims,
    job_id: uuid.UUID,
    sign: UrlSigner,
    wait: Callable[[int], object],
    ledger: LedgerApplication,
    queue: QueueTerms,
) -> JobOut:
    """``GET /vto/jobs/{id}`` in one round trip (``own_reads``): the job, for its requester or a
    reader of its project; ``NotFound`` for anyone else. A job the read model lacks may have
    been ordered a moment ago by someone else (an editor of the caller's project): it is
    looked for again once the read models include everything written so far."""
    params = {"job": job_id, **queue.params()}
    rows = own_reads.read(conn, claims, repository.OWN_JOB, params, wait)
    if not rows:
        wait(ledger.position())
        rows = own_reads.read(conn, claims, repository.OWN_JOB, params, wait)
    if not rows:
        raise NotFound("job")
    row = rows[0]
    if row["user_id"] != claims.user_id and not readable_project_id(conn, claims.user_id, row["project_id"]):
        raise NotFound("job")
    spot = None
    if row["q_segment"] is not None:
        place = repository.queue_place(
            row["q_segment"], row["q_started_ahead"], row["q_started_recently"], queue.exact_max
        )
        spot = queue.spot(*place)
    return JobOut.of(row, sign, spot)


def open_stream(
    conn: Connection,
    claims: tokens.Claims,
    job_id: uuid.UUID,
    sign: UrlSigner,
    wait: Callable[[int], object],
    ledger: LedgerApplication,
    settings: Settings,
    stream_id: uuid.UUID,
) -> JobOut:
    """A live event stream's start: the job as ``GET /vto/jobs/{id}`` shows it (same access
    rule), once the account has a free stream slot (``TooManyStreams`` otherwise)."""
    job = own_job(conn, claims, job_id, sign, wait, ledger, QueueTerms.of(settings))
    if job.status.finished:  # one event and the end: no slot needed
        return job
    if not repository.take_stream_slot(
        conn,
        stream_id,
        claims.user_id,
        job_id,
        settings.sse_max_streams_per_account,
        stream_stale_s(settings),
    ):
        raise TooManyStreams(
            f"this account has {settings.sse_max_streams_per_account} live event streams open already",
            headers={"Retry-After": str(max(1, round(settings.sse_poll_interval_s)))},
        )
    return job


def stream_stale_s(settings: Settings) -> float:
    """A stream whose row was not renewed for this long no longer counts (its process died)."""
    return 3 * settings.sse_keepalive_s


def own_gallery_page(
    conn: Connection,
    claims: tokens.Claims,
    project_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    sign: UrlSigner,
    wait: Callable[[int], object],
) -> Page[GalleryItem]:
    """A project's results (owner or shared reader), newest job first, by ``(position,
    index)``, in one round trip (``own_reads``); ``NotFound`` for anyone else."""
    after = decode(cursor, int, int)
    params = {
        "project": project_id,
        "limit": limit + 1,
        "after_position": after[0] if after else None,
        "after_index": after[1] if after else None,
    }
    rows = own_reads.read(conn, claims, repository.OWN_GALLERY, params, wait)
    if not rows:
        raise NotFound("project")
    outputs = [row for row in rows if row["job_id"] is not None]
    items, next_cursor = cut(outputs, limit, lambda row: (row["position"], row["output_index"]))
    return Page[GalleryItem](items=[GalleryItem.of(row, sign) for row in items], next_cursor=next_cursor)


def job(session: Session, job_id: uuid.UUID, sign: UrlSigner) -> JobOut | None:
    """The job as the read model has it (None: not there yet)."""
    row = repository.job_row(session, job_id)
    return None if row is None else JobOut.of(row, sign)


def check_cancellable(session: Session, user_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Only the requester cancels a job; ``NotFound`` for anyone else."""
    row = repository.job_row(session, job_id)
    if row is None or row["user_id"] != user_id:
        raise NotFound("job")


def check_canceled(job: JobOut, canceled_now: bool) -> None:
    """``JobFinished`` (409) unless the cancel took effect (now or by an earlier request)."""
    if not canceled_now and job.status != JobStatus.CANCELED:
        raise JobFinished(f"the job already finished ({job.status})")


def jobs_page(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    sign: UrlSigner,
    queue: QueueTerms,
) -> Page[JobOut]:
    """The caller's jobs, newest first, by ``(created_at, id)``."""
    rows = repository.job_rows(
        session,
        user_id=user_id,
        project_id=project_id,
        status=status,
        limit=limit + 1,
        before=decode(cursor, datetime, uuid.UUID),
    )
    items, next_cursor = cut(rows, limit, lambda row: (row["created_at"], row["job_id"]))
    return Page[JobOut](items=jobs_out(session, items, sign, queue), next_cursor=next_cursor)
