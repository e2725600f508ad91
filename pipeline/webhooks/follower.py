"""Where webhook messages come from.

``WebhookFollower`` is a projection runner on the ledger's notification log, like the outbox
relay (tracking row ``webhooks``): each batch, in one transaction with its position, records
the jobs whose ``JobRequested`` names a webhook (``webhook_jobs``) and a ``job.completed``
message for each of them that finished (``JobCompleted``; ``JobFailed`` or ``JobCanceled``
with the ``Refunded`` appended with it). A crash before the commit applies the batch again,
and a message that exists already is left as it is (its id is derived from the event), so
each event gets exactly one message, whatever the restarts. A message records the position
the job read model must have applied before its body is rendered: the refund's, for a failed
or canceled job (appended in the same transaction; when the batch ends before it, the log's
head, which includes it).

``ProgressWatcher`` turns the workers' progress (``job_progress``, written by the pipeline's
progress recorder) into ``job.started`` (the first time a job shows progress) and
``job.progress`` messages (when it grew; at most one per job every
``webhook_progress_interval_s``), for the open jobs that asked for them, each job's row
locked while it is handled (several watchers skip each other's). A job that finishes before
its start was seen gets its ``job.started`` (if it shows progress by then) with its
``job.completed``. It also deletes, once an hour, what the retention setting lets go."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import psycopg

from infra.database import ReopeningConnection
from infra.threads import BackgroundLoop
from ledger.account import Account
from pipeline.webhooks import store
from pipeline.webhooks.events import EventType, WebhookEvent, requested_webhook
from pipeline.webhooks.store import NewMessage
from projections.events import Notified
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)

NAME = "webhooks"
PRUNE_EVERY_S = 3600.0
_FINAL = {
    Account.JobCompleted: "succeeded",
    Account.JobFailed: "failed",
    Account.JobCanceled: "canceled",
}


class WebhookEvents:
    """The follower's projection: no read model, webhook messages instead."""

    name = NAME
    tables: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.created = 0

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        jobs = []
        finished: list[dict[str, Any]] = []  # in log order
        refund_pending: dict[uuid.UUID, dict[str, Any]] = {}  # failed or canceled, refund not seen yet
        for notified in batch:
            event = notified.event
            if isinstance(event, Account.JobRequested):
                webhook = requested_webhook(event.request)
                if webhook is not None:
                    url, names = webhook
                    watch = WebhookEvent.START in names or WebhookEvent.PROGRESS in names
                    jobs.append(
                        (
                            event.job_id,
                            event.originator_id,
                            url,
                            names,
                            event.timestamp,
                            notified.position,
                            watch,
                        )
                    )
            elif type(event) in _FINAL:
                entry = {
                    "job_id": event.job_id,
                    "key": _FINAL[type(event)],
                    "at": event.timestamp,
                    "position": notified.position,
                }
                finished.append(entry)
                if not isinstance(event, Account.JobCompleted):
                    refund_pending[event.job_id] = entry
            elif isinstance(event, Account.Refunded) and event.job_id in refund_pending:
                refund_pending.pop(event.job_id)["position"] = notified.position
        if jobs:
            store.register_jobs(cur, jobs)
        if not finished:
            return
        if refund_pending:  # the batch ended between a failure and its refund
            head = store.log_head(cur)
            for entry in refund_pending.values():
                entry["position"] = head
        registered = {row["job_id"]: row for row in store.close_jobs(cur, [e["job_id"] for e in finished])}
        messages: list[NewMessage] = []
        started: list[uuid.UUID] = []
        for entry in finished:
            job = registered.get(entry["job_id"])
            if job is None:
                continue
            wanted = set(job["events"])
            if not job["started"] and job["progress_started_at"] is not None:
                started.append(job["job_id"])
                job["started"] = True
                if WebhookEvent.START in wanted:
                    messages.append(_message(job, EventType.STARTED, "started", job["progress_started_at"]))
            if WebhookEvent.COMPLETED in wanted:
                messages.append(
                    _message(job, EventType.COMPLETED, entry["key"], entry["at"], position=entry["position"])
                )
        if started:
            store.mark_started(cur, started)
        self.created += store.insert_messages(cur, messages)


def _message(
    job: Mapping[str, Any], event_type: EventType, key: str, at: Any, position: int | None = None
) -> NewMessage:
    return NewMessage(
        job_id=job["job_id"],
        user_id=job["user_id"],
        event_type=event_type,
        key=key,
        url=job["url"],
        event_at=at,
        requested_at=job["requested_at"],
        position=job["position"] if position is None else position,
    )


class WebhookFollower:
    """The follower in a thread of its own (``start``, ``stop``), or ``catch_up()`` in the
    caller's."""

    def __init__(self, url: str, *, poll_interval: float, batch_size: int = 500) -> None:
        self.projection = WebhookEvents()
        self.runner = ProjectionRunner(
            url, self.projection, poll_interval=poll_interval, batch_size=batch_size
        )

    def start(self) -> WebhookFollower:
        self.runner.start()
        return self

    def catch_up(self) -> int:
        return self.runner.catch_up()

    def stop(self) -> None:
        self.runner.stop()


class ProgressWatcher(BackgroundLoop):
    """Every ``interval / 2`` seconds, the progress news of the open jobs with webhooks."""

    def __init__(self, url: str, *, interval: float, retention_days: int) -> None:
        super().__init__("webhook-progress")
        self.url = url
        self.interval = interval
        self.retention_days = retention_days
        self.created = 0
        self.errors = 0
        self._db = ReopeningConnection(url)
        self._pruned_at = 0.0

    def scan(self) -> int:
        """One pass; returns how many messages it created."""
        conn = self._db.get()
        messages: list[NewMessage] = []
        with conn.transaction(), conn.cursor() as cur:
            updates = []
            for row in store.watched_progress(cur):
                names = set(row["events"])
                sent, sent_at, count = row["progress_sent"], row["progress_sent_at"], row["progress_events"]
                if not row["started"] and WebhookEvent.START in names:
                    messages.append(_message(row, EventType.STARTED, "started", row["started_at"]))
                if WebhookEvent.PROGRESS not in names:
                    sent = max(sent, row["progress"])  # nothing to send: the row leaves the scan
                elif row["progress"] > sent and (
                    sent_at is None or row["now"] - sent_at >= timedelta(seconds=self.interval)
                ):
                    count += 1
                    messages.append(_message(row, EventType.PROGRESS, str(count), row["updated_at"]))
                    sent, sent_at = row["progress"], row["now"]
                updates.append((True, sent, sent_at, count, row["job_id"]))
            if updates:
                store.update_progress(cur, updates)
            store.insert_messages(cur, messages)
        self.created += len(messages)
        return len(messages)

    def prune(self) -> int:
        deleted = store.prune(self._db.get(), self.retention_days)
        if deleted:
            log.info(
                "webhooks: deleted %d deliveries finished over %d days ago", deleted, self.retention_days
            )
        return deleted

    def run(self) -> None:
        while not self.stopping:
            try:
                self.scan()
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    self._pruned_at = time.monotonic()
                    self.prune()
            except Exception:  # the database above all: logged, retried with a new connection
                self.errors += 1
                log.exception("webhooks: progress scan failed; retrying")
                self._db.close()
            self.stop_event.wait(self.interval / 2)
        self._db.close()
