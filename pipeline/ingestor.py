"""The result ingestor: a consumer group on ``vto.jobs.results`` that applies each result to
the ledger (``complete_job`` or ``fail_job`` + refund), then commits the offset.

Both ledger commands are idempotent on the job id, so a result delivered twice (a redelivery,
two workers that ran the same job) has one effect; a late success after the sweeper expired
the job is delivered free (the ledger decides). A result that is not valid JSON, or names a
job the ledger does not know (or that the ledger refuses: any ``LedgerError``, which would be
refused again), goes to the dead-letter topic. A failure of the database is retried (the
consume loop rewinds the result and backs off). Each outcome is logged with the trace context
the result's record headers carry (``infra.tracing``)."""

from __future__ import annotations

import logging

from infra.queue.base import Message, MessageQueue, PipelineOptions
from infra.tracing import TraceContext, describe
from ledger.application import LedgerApplication
from ledger.errors import LedgerError
from ledger.status import JobStatus
from pipeline.consume import TopicConsumer, send_to_dead_letter
from pipeline.messages import InvalidMessage, JobResult

log = logging.getLogger(__name__)


class Ingestor(TopicConsumer):
    def __init__(
        self,
        queue: MessageQueue,
        ledger: LedgerApplication,
        options: PipelineOptions,
        *,
        name: str = "ingestor",
    ) -> None:
        self.ledger = ledger
        super().__init__(queue, options.topics.results, options.ingestor_group, options, name)

    def handle(self, message: Message) -> str:
        """``applied`` (the ledger changed), ``duplicate`` (it already had this job's
        outcome) or ``dead_letter``."""
        try:
            result = JobResult.from_dict(message.json_value())
        except (ValueError, InvalidMessage) as exc:
            return send_to_dead_letter(self.publisher, self.topics.dead_letter, message, exc, self.name)
        try:
            if result.status is JobStatus.SUCCEEDED:
                changed = self.ledger.complete_job(result.user_id, result.job_id, result.outputs)
            else:
                assert result.error is not None
                changed = self.ledger.fail_job(result.user_id, result.job_id, result.error)
        except LedgerError as exc:  # AccountNotFound, JobNotFound...: the message's own fault
            return send_to_dead_letter(self.publisher, self.topics.dead_letter, message, exc, self.name)
        outcome = "applied" if changed.value else "duplicate"
        log.info(
            "%s: job %s %s: %s (%s)",
            self.name,
            result.job_id,
            result.status.value,
            outcome,
            describe(TraceContext.from_message(message)),
        )
        return outcome
