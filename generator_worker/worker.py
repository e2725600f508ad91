"""The generator worker: a consumer group on ``vto.jobs.requested``.

For each request: skip a job that is no longer open (canceled, failed, expired or already
completed, read from the ledger account); republish the outcome an earlier delivery already
reached (``job_attempts``); else run the job's attempts, store the outputs, record the
outcome, publish the result (``succeeded`` with outputs, or ``failed`` with an error) and
progress messages, flush, then commit the request's offset. A crash anywhere before the commit
means the request is delivered again: outputs are stored under deterministic keys (a rerun
overwrites them) and the ingestor applies a job's result at most once.

Every job ends, whatever its generation does:
- an attempt is counted in PostgreSQL before it starts (``attempts.JobAttempts``), so a job
  gets at most ``VTO_WORKER_MAX_ATTEMPTS`` attempts in all, across redeliveries, rebalances
  and crashes; a delivery that finds them used up fails the job (``attempts_exhausted``);
- a retryable error (``ResourceError``, ``storage_error``) is tried again after a back-off
  (tenacity; doubling from ``VTO_WORKER_RETRY_BACKOFF_S``) while attempts remain, then the job
  fails with that error;
- an input error (``InvalidInputError`` and its kinds) fails the job at once;
- an exception no backend declares (``IndexError``, ``ValueError``, ``cv2.error``...) fails the
  job at once as ``internal_error`` (its message names the type; the traceback is logged and
  the failure counted in ``failures``);
- generation runs in a thread of its own; a job still running after ``VTO_JOB_TIMEOUT_S``
  (measured from the start of the delivery, back-offs included) is abandoned: the job fails
  with ``timeout``. The abandoned computation may still finish in the background; its result
  is dropped (nothing reads it, and outputs are stored by this thread only).
A failed job is refunded by the ingestor. A job the worker gives up on for a reason other than
its inputs (attempts used up, ``internal_error``, ``timeout``, ``backend_unavailable``) also
sends its request to the dead-letter topic with the reason. Errors of the worker's own
infrastructure (PostgreSQL, Kafka) are not the job's fault: they propagate, the request is
rewound and handled again after a back-off, and they use no attempt. Undecodable requests go
to the dead-letter topic.

A job whose order set a deadline (``deadline_at``) is not started once the deadline has passed,
its generation is abandoned at the deadline, and no outcome is published for it when, after
its generation, the job was canceled meanwhile (by its user, or by the sweeper at its
deadline) or its deadline has passed: the sweeper cancels and refunds it (refund cause
``deadline``), and a result must not settle it first (docs/job-deadlines.md).

The trace context the request's record headers carry (``infra.tracing``: the API's request
id and ``traceparent``) is written in the worker's log lines about the job and sent on, as a
span of the worker's, in the headers of its result, progress and dead-letter messages."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import Any
from uuid import UUID

from tenacity import RetryCallState, retry_if_exception

from generator_worker.attempts import JobAttempts
from generator_worker.generation import (
    AttemptsExhaustedError,
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    GenerationError,
    GenerationOptions,
    GenerationRequest,
    GenerationResult,
    GenerationTimeoutError,
    Generator,
    InternalError,
    InvalidInputError,
    JobKind,
    PoseHint,
    StorageFailedError,
)
from generator_worker.gpu_batch import ConcurrentConsumerLoop
from infra.queue.base import Message, MessageQueue, PipelineOptions
from infra.storage import ObjectNotFound, Storage
from infra.threads import Stopping, backoff
from infra.tracing import TraceContext, describe
from ledger.application import Clock, utc_now
from ledger.status import ReservationStatus
from pipeline.consume import TopicConsumer, send_to_dead_letter
from pipeline.messages import DeadLetter, InvalidMessage, JobProgress, JobRequest, JobResult

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


def read_input(storage: Storage, key: str) -> bytes:
    """An input's bytes; ``ObjectNotFound`` and an invalid key (``ValueError``) are the job's
    fault, anything else the storage's (``StorageFailedError``, retryable)."""
    try:
        return storage.get(key)
    except (ObjectNotFound, ValueError):
        raise
    except Exception as exc:
        log.warning("reading input %s failed", key, exc_info=True)
        raise StorageFailedError(f"could not read input {key} ({type(exc).__name__})") from exc


def build_request(job: JobRequest, storage: Storage) -> GenerationRequest:
    """The generator's request from the message's storage keys; ``InvalidInputError`` when
    the inputs are missing or malformed (not retryable)."""
    try:
        kind = JobKind(job.kind)
        inputs = job.inputs
        garments = tuple(
            GarmentImage(
                read_input(storage, str(g["key"])),
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
            model_photo=read_input(storage, str(model_key)),
            background=read_input(storage, str(background_key)) if background_key else None,
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
    """One member of the worker group. ``start()`` runs it in a thread; ``stop()``.

    ``batch`` > 1 (a batching GPU backend, ``VTO_GPU_BATCH``; see ``gpu_batch``): take up to
    ``batch`` requests per poll and handle them concurrently, so their generations can share
    a model call. 1 (default): one request at a time, as polled."""

    def __init__(
        self,
        queue: MessageQueue,
        generator: Generator,
        storage: Storage,
        job_status: ReservationLookup,
        attempts: JobAttempts,
        options: PipelineOptions,
        *,
        name: str = "worker",
        batch: int = 1,
        clock: Clock = utc_now,
    ) -> None:
        self.generator = generator
        self.clock = clock  # the wall clock a job's deadline is read against
        self.storage = storage
        self.job_status = job_status
        self.attempts = attempts
        self.jobs: list[UUID] = []  # jobs this worker generated (tests, metrics)
        self.failures: Counter[str] = Counter()  # failed jobs, by error code
        self.abandoned = 0  # generations abandoned at the job timeout (maybe still running)
        self.dropped = 0  # outcomes not published: the job was canceled, or its deadline passed
        self._lock = threading.Lock()
        super().__init__(
            queue,
            options.topics.requested,
            options.worker_group,
            options,
            name,
            config=options.worker_consumer,
        )
        if batch > 1:
            config = dataclasses.replace(
                options.worker_consumer,
                max_poll_records=max(batch, options.worker_consumer.max_poll_records),
            )
            self.loop = ConcurrentConsumerLoop(
                name,
                lambda: queue.consumer([options.topics.requested], options.worker_group, config),
                self.handle,
                poll_timeout=options.poll_timeout_s,
                max_records=config.max_poll_records,
                workers=config.max_poll_records,
            )

    @property
    def stop_event(self) -> threading.Event:
        return self.loop.stop_event

    def stop(self) -> None:
        super().stop()
        self.attempts.close()

    # ------------------------------------------------------------------ one message
    def handle(self, message: Message) -> str:
        try:
            job = JobRequest.from_dict(message.json_value())
        except (ValueError, InvalidMessage) as exc:
            return send_to_dead_letter(self.publisher, self.topics.dead_letter, message, exc, self.name)
        received = TraceContext.from_message(message)
        span = None if received is None else received.child()  # this worker's, sent on
        trace = describe(received)
        status = self.job_status(job.user_id, job.job_id)
        if status is None or not status.open:
            log.info("%s: job %s is %s; skipped (%s)", self.name, job.job_id, status or "unknown", trace)
            return "skipped"
        if self._past_deadline(job):
            log.info("%s: job %s is past its deadline; skipped (%s)", self.name, job.job_id, trace)
            return "past_deadline"
        earlier = self.attempts.outcome(job.job_id)
        if earlier is not None:
            # An earlier delivery reached this outcome but its publish or commit did not
            # happen: publish it again (the ingestor applies it once).
            log.info("%s: job %s: republishing its outcome (%s)", self.name, job.job_id, trace)
            self._publish(job, earlier.result, earlier.dead_letter, span)
            return "republished"
        log.info("%s: job %s (%s) started (%s)", self.name, job.job_id, job.kind, trace)
        self._progress(job, 0.0, span)
        result, letter = self.run_job(job, message, span)
        dropped = self._dropped(job)
        if dropped is not None:
            log.info("%s: job %s %s; its outcome is dropped (%s)", self.name, job.job_id, dropped, trace)
            with self._lock:
                self.dropped += 1
            return "dropped"
        dead_letter = None if letter is None else letter.to_dict()
        self.attempts.finish(job.job_id, result.to_dict(), dead_letter)
        self._publish(job, result.to_dict(), dead_letter, span)
        with self._lock:
            self.jobs.append(job.job_id)
        log.info("%s: job %s %s (%s)", self.name, job.job_id, result.status.value, trace)
        return result.status.value

    def _past_deadline(self, job: JobRequest) -> bool:
        return job.deadline_at is not None and self.clock() >= job.deadline_at

    def _dropped(self, job: JobRequest) -> str | None:
        """Why a job's outcome must not be published (None: publish it): the job was canceled
        meanwhile (by its user, or by the sweeper at its deadline), or its deadline has passed
        (the sweeper cancels and refunds it; a result must not settle it first). A job the
        sweeper expired meanwhile still gets its outcome: a success is delivered free."""
        if self.job_status(job.user_id, job.job_id) is ReservationStatus.CANCELED:
            return "was canceled meanwhile"
        if self._past_deadline(job):
            return "passed its deadline"
        return None

    def _publish(
        self,
        job: JobRequest,
        result: dict[str, Any],
        dead_letter: dict[str, Any] | None,
        span: TraceContext | None = None,
    ) -> None:
        headers = None if span is None else span.headers()
        if dead_letter is not None:
            self.publisher.publish(self.topics.dead_letter, str(job.job_id), dead_letter, headers)
        self.publisher.publish(self.topics.results, str(job.job_id), result, headers)
        self.publisher.flush(60)

    def _progress(self, job: JobRequest, fraction: float, span: TraceContext | None = None) -> None:
        message = JobProgress.of(job.job_id, job.user_id, fraction)
        headers = None if span is None else span.headers()
        self.publisher.publish(self.topics.progress, str(job.job_id), message.to_dict(), headers)

    # ------------------------------------------------------------------ the job's attempts
    def run_job(
        self, job: JobRequest, message: Message, span: TraceContext | None = None
    ) -> tuple[JobResult, DeadLetter | None]:
        """The job's outcome: its result and, when the worker gave up for a reason other than
        the job's inputs, the dead letter of its request. Raises ``Stopping`` when the process
        stops meanwhile, and what the worker's own infrastructure raises. ``span``: the trace
        context its progress messages carry."""
        deadline = time.monotonic() + self.options.job_timeout_s
        if job.deadline_at is not None:  # the order's deadline: abandoned then (dropped by handle)
            left = (job.deadline_at - self.clock()).total_seconds()
            deadline = min(deadline, time.monotonic() + max(0.0, left))
        limit = self.options.max_attempts
        made = 0  # the job's attempts so far, earlier deliveries' included

        def attempt() -> list[dict[str, Any]]:
            """One attempt, counted durably before it starts: generate within the deadline,
            store the outputs. Raises ``_Failed`` (``final`` when no retry may follow)."""
            nonlocal made
            if time.monotonic() >= deadline:
                raise _Failed(GenerationTimeoutError(self._timeout_text()), final=True)
            counted = self.attempts.begin(job.job_id)
            if counted.number > limit:
                made = counted.number - 1
                raise _Failed(self._exhausted(made, counted.last_error), final=True, exhausted=True)
            made = counted.number
            try:
                try:
                    return self._store(job, self._generate_within(job, deadline))
                except (GenerationError, Stopping):
                    raise
                except Exception as exc:  # a backend's output the worker cannot use: its bug
                    raise self._internal(job, exc) from exc
            except Stopping:
                self._give_back(job)
                raise
            except GenerationError as error:
                self.attempts.record_error(job.job_id, _error_dict(error))
                exhausted = error.retryable and made >= limit
                raise _Failed(error, final=exhausted or not error.retryable, exhausted=exhausted) from error

        retrying = backoff(
            self.stop_event,
            self.options.retry_backoff_s,
            self.options.retry_backoff_max_s,
            retry=retry_if_exception(lambda error: isinstance(error, _Failed) and not error.final),
            before_sleep=lambda state: self._log_retry(job, state),
        )
        try:
            outputs = retrying(attempt)
        except _Failed as failed:
            return self._failed(job, message, failed, made)
        self._progress(job, 1.0, span)
        return JobResult.succeeded(job.job_id, job.user_id, outputs), None

    @staticmethod
    def _exhausted(made: int, last_error: dict[str, Any] | None) -> AttemptsExhaustedError:
        last = f"; the last one failed with {last_error.get('code')}" if last_error else ""
        return AttemptsExhaustedError(f"{made} attempts were made without an outcome{last}")

    def _failed(
        self, job: JobRequest, message: Message, failed: _Failed, attempts: int
    ) -> tuple[JobResult, DeadLetter | None]:
        error = failed.error
        with self._lock:  # requests of a batch are handled concurrently
            self.failures[error.code] += 1
        text = error.message
        if failed.exhausted and not isinstance(error, AttemptsExhaustedError):
            text = f"{text} (gave up after {attempts} attempts)"
        trace = describe(TraceContext.from_message(message))
        log.warning("%s: job %s failed: %s: %s (%s)", self.name, job.job_id, error.code, text, trace)
        result = JobResult.failed(job.job_id, job.user_id, error.code, text, error.retryable)
        if isinstance(error, InvalidInputError):
            return result, None  # the job's own inputs: nothing for an operator to look at
        reason = AttemptsExhaustedError.code if failed.exhausted else error.code
        detail = f"{error.code}: {text}"
        if isinstance(error, InternalError):
            detail += f" [{type(error.cause).__name__}: {error.cause}]"
        log.error(
            "%s: job %s: request sent to %s (%s; %s)",
            self.name,
            job.job_id,
            self.topics.dead_letter,
            reason,
            trace,
        )
        return result, DeadLetter.of(message, detail, self.name, reason=reason, attempts=attempts)

    def _give_back(self, job: JobRequest) -> None:
        """A clean stop is not the job's fault: its attempt is not counted."""
        try:
            self.attempts.release(job.job_id)
        except Exception:  # the attempt stays counted; the process is stopping
            log.warning("%s: job %s: could not give its attempt back", self.name, job.job_id, exc_info=True)

    def _timeout_text(self) -> str:
        return f"the job did not finish within the job timeout ({self.options.job_timeout_s:g} s)"

    def _generate_within(self, job: JobRequest, deadline: float) -> GenerationResult:
        """Load the inputs and generate in a thread of its own; wait for it until the deadline
        (``GenerationTimeoutError``: the thread is abandoned and its result dropped) or the
        process stops (``Stopping``). An exception no backend declares -> ``InternalError``."""
        future: Future[GenerationResult] = Future()

        def generate() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._generate_once(job))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

        thread = threading.Thread(target=generate, name=f"{self.name}-job-{job.job_id}", daemon=True)
        thread.start()
        while not futures_wait([future], timeout=max(0.0, min(deadline - time.monotonic(), _WAIT_SLICE_S)))[
            0
        ]:
            if self.stop_event.is_set():
                raise Stopping
            if time.monotonic() >= deadline:
                with self._lock:
                    self.abandoned += 1
                log.error(
                    "%s: job %s still generating at the job timeout; abandoned (its result will be dropped)",
                    self.name,
                    job.job_id,
                )
                raise GenerationTimeoutError(self._timeout_text())
        error = future.exception()
        if error is None:
            return future.result()
        if isinstance(error, GenerationError) or not isinstance(error, Exception):
            raise error
        raise self._internal(job, error) from error

    def _internal(self, job: JobRequest, error: Exception) -> InternalError:
        """An exception no backend declares: logged with its traceback (and counted in
        ``failures`` once the job fails), the job's error names its type only."""
        log.error(
            "%s: job %s: unexpected %s in the generator; the job fails (%s)",
            self.name,
            job.job_id,
            type(error).__name__,
            InternalError.code,
            exc_info=error,
        )
        return InternalError(error)

    def _generate_once(self, job: JobRequest) -> GenerationResult:
        request = build_request(job, self.storage)
        return self.generator.generate(request)

    def _store(self, job: JobRequest, generated: GenerationResult) -> list[dict[str, Any]]:
        outputs = []
        for index, output in enumerate(generated.outputs):
            if not isinstance(output.data, bytes) or output.media_type not in EXTENSIONS:
                raise ValueError(f"output {index} is not the bytes of a known media type")
            key = output_key(job, index, output.media_type)
            try:
                self.storage.put(key, output.data, output.media_type)
            except Exception as exc:
                log.warning("%s: job %s: storing %s failed", self.name, job.job_id, key, exc_info=True)
                raise StorageFailedError(f"could not store output {index} ({type(exc).__name__})") from exc
            duration = None
            if output.media_type.startswith("video/"):  # at the rate the clip was encoded at
                seconds = output.duration_s
                if seconds is None:
                    seconds = output.frames / max(1, int(job.options.get("fps") or 24))
                duration = round(seconds, 3)
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
        return outputs

    def _log_retry(self, job: JobRequest, state: RetryCallState) -> None:
        failed = state.outcome.exception() if state.outcome is not None else None
        code = failed.error.code if isinstance(failed, _Failed) else failed
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s: job %s: %s; trying again in %.1f s", self.name, job.job_id, code, wait)


# How often a worker waiting for its generation thread looks at its stop event.
_WAIT_SLICE_S = 0.25


def _error_dict(error: GenerationError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "retryable": error.retryable}


class _Failed(Exception):
    """An attempt failed with ``error``; ``final``: no retry may follow (not retryable, the
    deadline passed, or no attempt remains: ``exhausted``)."""

    def __init__(self, error: GenerationError, *, final: bool, exhausted: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.final = final
        self.exhausted = exhausted
