"""The job pipeline inside ``vto serve``: relay, worker, ingestor and sweeper in the API's
process, on the in-process queue unless Kafka is configured."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from generator_worker.pipeline.messages import JobRequest
from generator_worker.pipeline.runtime import Pipeline
from infra.queue.base import MessageQueue, Topics

log = logging.getLogger(__name__)


def republish_open_jobs(url: str, queue: MessageQueue, topics: Topics) -> int:
    """The in-process queue does not survive a restart, while the relay's position does: put
    every job still queued back on the queue (the worker skips what has finished since, and
    the ledger applies each result once). Returns how many were published."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_id, user_id, kind, request, created_at FROM vto_job "
            "WHERE status IN ('queued', 'running') ORDER BY created_at"
        ).fetchall()
    publisher = queue.publisher()
    for job_id, user_id, kind, request, created_at in rows:
        message = JobRequest.from_event(user_id, job_id, kind, request or {}, created_at)
        publisher.publish(topics.requested, str(job_id), message.to_dict())
    publisher.flush()
    return len(rows)


def start_pipeline(services: Any) -> Callable[[], None]:
    """A ``vto serve`` component: start the pipeline beside the API; return its stop."""
    pipeline = Pipeline.build(services.settings, services.url, services.ledger, storage=services.storage)
    if services.settings.kafka_bootstrap_servers is None and pipeline.queue is not None:
        count = republish_open_jobs(services.url, pipeline.queue, Topics())
        if count:
            log.info("republished %d open jobs to the in-process queue", count)
    pipeline.start()
    return pipeline.stop
