"""The generator worker: a consumer group on ``vto.jobs.requested``.

For each request: skip a job that is no longer open (canceled, failed, expired or already
completed, read from the ledger account); load its inputs from storage; run the generator,
retrying retryable errors with exponential back-off up to ``max_attempts``; store the
outputs; publish the result (``succeeded`` with outputs, or ``failed`` with an error) and
progress messages; flush; then commit the request's offset. A crash anywhere before the
commit means the request is delivered again: outputs are stored under deterministic keys (a
rerun overwrites them) and the ingestor applies a job's result at most once. An undecodable
request goes to the dead-letter topic."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from tenacity import RetryCallState, retry_if_exception

from generator_worker.generation import (
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    GenerationError,
    GenerationOptions,
    GenerationRequest,
    GenerationResult,
    Generator,
    InvalidInputError,
    JobKind,
    PoseHint,
)
from generator_worker.pipeline.consume import TopicConsumer, send_to_dead_letter
from generator_worker.pipeline.messages import InvalidMessage, JobProgress, JobRequest, JobResult
from infra.queue.base import Message, MessageQueue, PipelineOptions
from infra.storage import ObjectNotFound, Storage
from infra.threads import backoff
from ledger.status import ReservationStatus

log = logging.getLogger(__name__)

# The ledger's status of a job's reservation (``LedgerApplication.reservation_status``).
ReservationLookup = Callable[[UUID, UUID], ReservationStatus | None]
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "video/mp4": "mp4"}
_OPTION_FIELDS = {
    "width": int,
    "height": int,
    "seed": int,
    "num_outputs": int,
    "image_format": str,
    "jpeg_quality": int,
    "fps": int,
    "seconds_per_output": float,
}


def output_key(job: JobRequest, index: int, media_type: str) -> str:
    return f"outputs/{job.user_id}/{job.job_id}/{index}.{EXTENSIONS.get(media_type, 'bin')}"


def build_request(job: JobRequest, storage: Storage) -> GenerationRequest:
    """The generator's request from the message's storage keys; ``InvalidInputError`` when
    the inputs are missing or malformed (not retryable)."""
    try:
        kind = JobKind(job.kind)
        inputs = job.inputs
        garments = tuple(
            GarmentImage(
                storage.get(str(g["key"])),
                GarmentCategory(g.get("category", "top")),
                GarmentSide(g.get("side", "front")),
            )
            for g in inputs.get("garments") or []
        )
        model_key = inputs.get("model")
        if not model_key:
            raise InvalidInputError("inputs.model (the model photo's storage key) is required")
        background_key = inputs.get("background")
        option_values: dict[str, Any] = {}
        for name, convert in _OPTION_FIELDS.items():
            if job.options.get(name) is not None:
                option_values[name] = convert(job.options[name])
        return GenerationRequest(
            kind=kind,
            garments=garments,
            model_photo=storage.get(str(model_key)),
            background=storage.get(str(background_key)) if background_key else None,
            pose_hint=PoseHint(job.pose) if job.pose else PoseHint.AUTO,
            options=GenerationOptions(**option_values),
        )
    except ObjectNotFound as exc:
        raise InvalidInputError(f"input not found in storage: {exc.args[0]}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, GenerationError):
            raise
        raise InvalidInputError(f"malformed inputs: {exc}") from exc


class Worker(TopicConsumer):
    """One member of the worker group. ``start()`` runs it in a thread; ``stop()``."""

    def __init__(
        self,
        queue: MessageQueue,
        generator: Generator,
        storage: Storage,
        job_status: ReservationLookup,
        options: PipelineOptions,
        *,
        name: str = "worker",
    ) -> None:
        self.generator = generator
        self.storage = storage
        self.job_status = job_status
        self.jobs: list[UUID] = []  # jobs this worker generated (tests, metrics)
        self._lock = threading.Lock()
        super().__init__(queue, options.topics.requested, options.worker_group, options, name)

    @property
    def stop_event(self) -> threading.Event:
        return self.loop.stop_event

    # ------------------------------------------------------------------ one message
    def handle(self, message: Message) -> str:
        try:
            job = JobRequest.from_dict(message.json_value())
        except (ValueError, InvalidMessage) as exc:
            return send_to_dead_letter(self.publisher, self.topics.dead_letter, message, exc, self.name)
        status = self.job_status(job.user_id, job.job_id)
        if status is None or not status.open:
            log.info("%s: job %s is %s; skipped", self.name, job.job_id, status or "unknown")
            return "skipped"
        self._progress(job, 0.0)
        result = self.generate(job)
        self.publisher.publish(self.topics.results, str(job.job_id), result.to_dict())
        self.publisher.flush(60)
        with self._lock:
            self.jobs.append(job.job_id)
        return result.status.value

    def _progress(self, job: JobRequest, fraction: float) -> None:
        message = JobProgress.of(job.job_id, job.user_id, fraction)
        self.publisher.publish(self.topics.progress, str(job.job_id), message.to_dict())

    def generate(self, job: JobRequest) -> JobResult:
        """Run the generator with retries; store the outputs. Raises ``Stopping`` when the
        process stops during a back-off (the request stays uncommitted)."""
        retrying = backoff(
            self.stop_event,
            self.options.retry_backoff_s,
            self.options.retry_backoff_max_s,
            retry=retry_if_exception(lambda error: isinstance(error, GenerationError) and error.retryable),
            attempts=self.options.max_attempts,
            before_sleep=lambda state: self._log_retry(job, state),
        )
        try:
            generated = retrying(self._generate_once, job)
        except GenerationError as error:
            attempt = retrying.statistics.get("attempt_number", 1)
            log.warning("%s: job %s failed (%s, attempt %d)", self.name, job.job_id, error.code, attempt)
            return JobResult.failed(job.job_id, job.user_id, error.code, error.message, error.retryable)
        outputs = []
        for index, output in enumerate(generated.outputs):
            key = output_key(job, index, output.media_type)
            self.storage.put(key, output.data, output.media_type)
            duration = None
            if output.media_type.startswith("video/"):
                duration = round(output.frames / max(1, int(job.options.get("fps") or 24)), 3)
            outputs.append(
                {
                    "storage_key": key,
                    "media_type": output.media_type,
                    "width": output.width,
                    "height": output.height,
                    "duration": duration,
                    "size": output.size_bytes,
                }
            )
        self._progress(job, 1.0)
        return JobResult.succeeded(job.job_id, job.user_id, outputs)

    def _log_retry(self, job: JobRequest, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        code = error.code if isinstance(error, GenerationError) else error
        log.info("%s: job %s: %s; retrying (attempt %d)", self.name, job.job_id, code, state.attempt_number)

    def _generate_once(self, job: JobRequest) -> GenerationResult:
        request = build_request(job, self.storage)
        return self.generator.generate(request)
