"""Records the workers' progress messages (``vto.jobs.progress``) in ``job_progress``, so the
API can show a queued job as ``running``. Progress moves no points, so it is not a ledger
event; the upsert is idempotent and keeps the highest progress seen, whatever the order of
delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from infra.database import ReopeningConnection
from infra.queue.base import Message, MessageQueue, PipelineOptions
from pipeline.consume import TopicConsumer, send_to_dead_letter
from pipeline.messages import JobProgress

UPSERT = (
    "INSERT INTO job_progress (job_id, started_at, progress, updated_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET progress = greatest(job_progress.progress, excluded.progress), "
    "started_at = least(job_progress.started_at, excluded.started_at), updated_at = excluded.updated_at"
)

# The progress rows of finished jobs leave the open set (migration 0023), which the API's
# queue positions read: run by the sweeper on every pass. Only bounds that set's size: the
# API joins it with the jobs read model's status anyway.
CLOSE_FINISHED = (
    "UPDATE job_progress p SET open = false FROM vto_job j "
    "WHERE p.open AND j.job_id = p.job_id AND j.status <> 'queued'"
)


class ProgressRecorder(TopicConsumer):
    def __init__(
        self, queue: MessageQueue, url: str, options: PipelineOptions, *, name: str = "progress"
    ) -> None:
        self.url = url
        self._db = ReopeningConnection(url)
        super().__init__(queue, options.topics.progress, f"{options.ingestor_group}-progress", options, name)

    def stop(self) -> None:
        super().stop()
        self._db.close()

    def handle(self, message: Message) -> str:
        try:
            progress = JobProgress.from_dict(message.json_value())
            at = datetime.fromisoformat(progress.at) if progress.at else datetime.now(UTC)
        except ValueError as exc:  # InvalidMessage included
            return send_to_dead_letter(self.publisher, self.topics.dead_letter, message, exc, self.name)
        try:
            self._db.get().execute(UPSERT, (progress.job_id, at, progress.progress, datetime.now(UTC)))
        except psycopg.OperationalError:
            self._db.close()  # reconnect on the next message; this one is redelivered
            raise
        return "recorded"
