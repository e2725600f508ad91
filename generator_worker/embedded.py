"""The job pipeline inside ``vto serve``: relay, worker, ingestor and sweeper in the API's
process, on the in-process queue unless Kafka is configured."""

from __future__ import annotations

import logging

import psycopg

from generator_worker.runtime import Pipeline
from infra.queue.base import MessageQueue, Topics
from infra.settings import Settings
from infra.storage import Storage
from ledger.application import LedgerApplication
from ledger.status import JobStatus
from pipeline.messages import JobRequest

log = logging.getLogger(__name__)


def republish_open_jobs(url: str, queue: MessageQueue, topics: Topics) -> int:
    """The in-process queue does not survive a restart, while the relay's position does: put
    every job still queued back on the queue (the worker skips what has finished since, and
    the ledger applies each result once). Returns how many were published."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_id, user_id, kind, request, created_at FROM vto_job "
            "WHERE status = %s ORDER BY created_at",
            (JobStatus.QUEUED.value,),
        ).fetchall()
    publisher = queue.publisher()
    for job_id, user_id, kind, request, created_at in rows:
        message = JobRequest.from_event(user_id, job_id, kind, request or {}, created_at)
        publisher.publish(topics.requested, str(job_id), message.to_dict())
    publisher.flush()
    return len(rows)


def start_pipeline(settings: Settings, url: str, ledger: LedgerApplication, storage: Storage) -> Pipeline:
    """Start the whole pipeline beside the API (``vto serve``); the caller stops it."""
    pipeline = Pipeline.build(settings, url, ledger, storage=storage)
    if settings.kafka_bootstrap_servers is None and pipeline.queue is not None:
        count = republish_open_jobs(url, pipeline.queue, pipeline.options.topics)
        if count:
            log.info("republished %d open jobs to the in-process queue", count)
    return pipeline.start()
