"""The outbox relay, a pipeline process: publishes every ``JobRequested`` of the ledger to
``vto.jobs.requested``.

The ledger's event store is the outbox: a job request is in it once its reservation commits,
and only then can the relay see it. The relay is a projection runner (``projections.runner``)
whose "read model" is Kafka: for each batch of the notification log it publishes the job
requests, flushes (waits for the broker's acknowledgement), and only then moves its tracking
position (row ``outbox`` of ``projection_tracking``) in the batch's transaction. A crash
before the commit republishes that batch (at-least-once; the worker skips jobs that are no
longer open and the ingestor applies each result once); a restart resumes after the committed
position, so nothing is lost and the log is not replayed. The tracking row's lock also keeps
two relays from publishing the same batch concurrently.

Each request goes out with the trace context recorded with the job (``infra.tracing``: the
API's request id and ``traceparent``; a new trace for a job ordered without one) in its record
headers, as a span of the relay's, and the relay logs it with the job id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from infra.queue.base import PipelineOptions, Publisher, Topics
from infra.tracing import TraceContext
from ledger.account import Account
from pipeline.messages import JobRequest
from projections.events import Notified
from projections.runner import ProjectionRunner

log = logging.getLogger(__name__)

NAME = "outbox"


class OutboxProjection:
    """A projection that publishes instead of writing tables."""

    name = NAME
    tables: tuple[str, ...] = ()

    def __init__(self, publisher: Publisher, topics: Topics, flush_timeout: float = 30.0) -> None:
        self.publisher = publisher
        self.topics = topics
        self.flush_timeout = flush_timeout
        self.published = 0

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        count = 0
        for notified in batch:
            event = notified.event
            if isinstance(event, Account.JobRequested):
                request = dict(event.request)
                message = JobRequest.from_event(
                    event.originator_id, event.job_id, event.kind, request, event.timestamp
                )
                recorded = TraceContext.from_dict(request.get("trace"))
                span = TraceContext.new() if recorded is None else recorded.child()
                self.publisher.publish(
                    self.topics.requested, str(event.job_id), message.to_dict(), span.headers()
                )
                log.info("outbox: job %s published to %s (%s)", event.job_id, self.topics.requested, span)
                count += 1
        if count:
            # Raises when the broker did not take them: the transaction rolls back and the
            # position stays, so the batch is published again.
            self.publisher.flush(self.flush_timeout)
            self.published += count
            log.debug("outbox: published %d job requests up to position %d", count, batch[-1].position)


class OutboxRelay:
    """``start()`` follows the log in a thread (woken by LISTEN, polling as a fallback);
    ``catch_up()`` publishes everything pending in the caller's thread; ``stop()``."""

    def __init__(
        self,
        url: str,
        publisher: Publisher,
        options: PipelineOptions,
        *,
        batch_size: int = 200,
    ) -> None:
        self.projection = OutboxProjection(publisher, options.topics)
        self.runner = ProjectionRunner(
            url, self.projection, batch_size=batch_size, poll_interval=options.relay_poll_interval_s
        )

    @property
    def position(self) -> int:
        return self.runner.position

    @property
    def published(self) -> int:
        return self.projection.published

    def start(self) -> OutboxRelay:
        self.runner.start()
        return self

    def catch_up(self) -> int:
        return self.runner.catch_up()

    def wait_for(self, position: int, timeout: float) -> bool:
        return self.runner.wait_for(position, timeout)

    def stop(self) -> None:
        self.runner.stop()
        self.projection.publisher.close()
