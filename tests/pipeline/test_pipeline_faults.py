"""Every job ends (issue 12): poison inputs, unexpected exceptions, bounded attempts that
survive a crash, the job timeout, storage failures; and the consume loop under consumer and
commit failures. On the in-process queue with real PostgreSQL (the Kafka versions are in
``test_pipeline_kafka.py`` and ``test_pipeline_broker_restart.py``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from generator_worker.attempts import JobAttempts
from generator_worker.generation import (
    GeneratedOutput,
    GenerationRequest,
    GenerationResult,
    InjectedFailureError,
    InternalError,
)
from generator_worker.worker import Worker
from infra.queue.base import CommitFailed, Consumer, Message, PipelineOptions
from infra.queue.memory import InProcessPublisher, InProcessQueue
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.account import Account
from ledger.application import LedgerApplication
from pipeline.consume import ConsumerLoop
from pipeline.ingestor import Ingestor
from pipeline.messages import DeadLetter, JobRequest, JobResult
from tests.factories import ledger_events, new_user
from tests.pipeline.conftest import TinyGenerator, build_pipeline, job_request, job_status, wait_until

pytestmark = pytest.mark.timeout(120)

POISON_SEED = 666  # a job with this seed makes ``ScriptedGenerator`` raise ``poison``


class ScriptedGenerator(TinyGenerator):
    """TinyGenerator, except for jobs with ``POISON_SEED``: they raise ``poison()``, or wait
    for ``release`` when ``block`` is set (a job that runs too long, or a crash mid-job)."""

    def __init__(self, poison: Callable[[], BaseException] | None = None, *, block: bool = False) -> None:
        super().__init__()
        self.poison = poison
        self.block = block
        self.release = threading.Event()
        self.poison_calls = 0
        self.finished_late = threading.Event()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if request.options.seed == POISON_SEED:
            self.poison_calls += 1
            if self.block:
                self.release.wait(60)
                result = super().generate(request)
                self.finished_late.set()
                return result
            assert self.poison is not None
            raise self.poison()
        return super().generate(request)


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def quick(options: PipelineOptions) -> PipelineOptions:
    """Options of a fresh prefix, 2 attempts, short back-offs."""
    return replace(options, max_attempts=2, retry_backoff_s=0.01, retry_backoff_max_s=0.05)


def _order_job(
    ledger: LedgerApplication, queue: Any, options: PipelineOptions, request: dict[str, Any]
) -> tuple[uuid.UUID, uuid.UUID]:
    """A user with one credit reserves an image job, and its request is on the queue (as the
    relay would put it there): (user, job id)."""
    user = new_user(ledger, credits=1)
    job_id = uuid.uuid4()
    ledger.request_job(user, job_id, "image", request)
    message = JobRequest.from_event(user, job_id, "image", request, ledger.clock())
    queue.publisher().publish(options.topics.requested, str(job_id), message.to_dict())
    return user, job_id


def _results(queue: InProcessQueue, options: PipelineOptions) -> dict[uuid.UUID, list[JobResult]]:
    found: dict[uuid.UUID, list[JobResult]] = {}
    for message in queue.messages(options.topics.results):
        result = JobResult.from_dict(message.json_value())
        found.setdefault(result.job_id, []).append(result)
    return found


def _letters(queue: InProcessQueue, options: PipelineOptions) -> list[DeadLetter]:
    return [DeadLetter.from_dict(m.json_value()) for m in queue.messages(options.topics.dead_letter)]


def _refunds(ledger: LedgerApplication, user: uuid.UUID, job_id: uuid.UUID) -> int:
    return sum(isinstance(e, Account.Refunded) and e.job_id == job_id for e in ledger_events(ledger, user))


# --------------------------------------------------------------------------- poison jobs


def test_a_poison_job_fails_refunded_and_the_job_behind_it_in_its_partition_succeeds(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    """An ``IndexError`` from the generator (the garment fitting's bug of issue 12) used to
    rewind the request forever, blocking its partition."""
    queue = InProcessQueue(partitions=1)  # one partition: the second job waits behind the first
    generator = ScriptedGenerator(lambda: IndexError("index 904 is out of bounds for axis 1 with size 900"))
    user = new_user(pg_ledger, credits=2)
    poison, behind = uuid.uuid4(), uuid.uuid4()
    with build_pipeline(pg_url, pg_ledger, queue, quick, storage, generator) as pipeline:
        pg_ledger.request_job(user, poison, "image", job_request(inputs, seed=POISON_SEED))
        pg_ledger.request_job(user, behind, "image", job_request(inputs))
        wait_until(
            lambda: (
                job_status(pg_ledger, user, poison) == "failed"
                and job_status(pg_ledger, user, behind) == "succeeded"
            ),
            20,
            "the poison job to fail and the next one to succeed",
        )
    assert generator.poison_calls == 1  # not retried
    (failed,) = [e for e in ledger_events(pg_ledger, user) if isinstance(e, Account.JobFailed)]
    assert failed.job_id == poison
    assert failed.error["code"] == "internal_error"
    assert failed.error["retryable"] is False
    assert "IndexError" in failed.error["message"]
    assert "Traceback" not in failed.error["message"] and "904" not in failed.error["message"]
    assert _refunds(pg_ledger, user, poison) == 1
    assert pg_ledger.account(user).credits == 1  # the poison job refunded, the other charged
    (letter,) = _letters(queue, quick)
    assert (letter.key, letter.reason, letter.attempts) == (str(poison), "internal_error", 1)
    assert "IndexError" in letter.error
    (worker,) = pipeline.workers
    assert worker.failures == {"internal_error": 1}
    assert worker.loop.errors == 0  # nothing was rewound


def _cv2_error() -> BaseException:
    from generator_worker.generation.cvcompat import cv2

    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (1, 1))
    except cv2.error as error:
        return error
    raise AssertionError("cv2.resize of an empty image did not raise")


class _Unexpected(Exception):
    pass


@pytest.mark.parametrize(
    "poison",
    [
        lambda: ValueError("a thin-plate spline needs at least 3 point pairs"),
        _cv2_error,
        lambda: ZeroDivisionError("division by zero"),
        lambda: _Unexpected("whatever"),
    ],
    ids=["ValueError", "cv2.error", "ZeroDivisionError", "custom"],
)
def test_an_unexpected_exception_type_is_not_retried(
    pg_url: str,
    pg_ledger: LedgerApplication,
    quick: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    poison: Callable[[], BaseException],
) -> None:
    queue = InProcessQueue()
    generator = ScriptedGenerator(poison)
    _user, _job_id = _order_job(pg_ledger, queue, quick, job_request(inputs, seed=POISON_SEED))
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), quick)
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["failed"] == 1, 20, "the job to fail")
    finally:
        worker.stop()
    assert generator.poison_calls == 1
    ((result,),) = _results(queue, quick).values()
    assert result.error is not None
    assert result.error["code"] == "internal_error" and result.error["retryable"] is False
    assert result.error["message"] == InternalError(poison()).message
    assert "Traceback" not in result.error["message"]
    (letter,) = _letters(queue, quick)
    assert letter.reason == "internal_error"


# --------------------------------------------------------------------------- attempts


def test_a_storage_failure_is_retried_within_the_attempts_then_fails_the_job(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    class BrokenStorage(LocalStorage):
        def put(self, key: str, data: bytes, content_type: str) -> None:
            raise OSError(28, "No space left on device")

    broken = BrokenStorage(storage.root, b"test-secret")
    queue = InProcessQueue()
    generator = TinyGenerator()
    _user, _job_id = _order_job(pg_ledger, queue, quick, job_request(inputs))
    worker = Worker(queue, generator, broken, pg_ledger.reservation_status, JobAttempts(pg_url), quick)
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["failed"] == 1, 20, "the job to fail")
    finally:
        worker.stop()
    assert generator.calls == quick.max_attempts
    ((result,),) = _results(queue, quick).values()
    assert result.error is not None and result.error["code"] == "storage_error"
    assert "gave up after 2 attempts" in result.error["message"]
    (letter,) = _letters(queue, quick)
    assert (letter.reason, letter.attempts) == ("attempts_exhausted", 2)


class CrashingAttempts(JobAttempts):
    """A worker process killed mid-job never gives its attempt back."""

    def release(self, job_id: uuid.UUID) -> None:
        pass


def test_the_attempt_count_survives_worker_crashes(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    """Each worker of the group is "killed" mid-job (its attempt was counted, the request
    stays uncommitted); the job gets ``max_attempts`` attempts in all, then fails, refunded
    (by the ingestor) and dead-lettered, instead of crash-looping the group."""
    queue = InProcessQueue()
    generator = ScriptedGenerator(block=True)
    user, job_id = _order_job(pg_ledger, queue, quick, job_request(inputs, seed=POISON_SEED))

    def worker() -> Worker:
        return Worker(
            queue, generator, storage, pg_ledger.reservation_status, CrashingAttempts(pg_url), quick
        )

    try:
        for crash in range(1, quick.max_attempts + 1):
            crashing = worker().start()
            wait_until(lambda n=crash: generator.poison_calls == n, 20, f"attempt {crash} to start")  # type: ignore[misc]
            crashing.stop()  # mid-job: uncommitted, its attempt stays counted
            assert crashing.loop.outcomes == {}
        last = worker().start()
        try:
            wait_until(lambda: last.loop.outcomes["failed"] == 1, 20, "the job to fail")
        finally:
            last.stop()
    finally:
        generator.release.set()
    assert generator.poison_calls == quick.max_attempts  # never more, whatever the restarts
    ((result,),) = _results(queue, quick).values()
    assert result.error is not None
    assert result.error["code"] == "attempts_exhausted" and result.error["retryable"] is False
    (letter,) = _letters(queue, quick)
    assert (letter.reason, letter.attempts, letter.key) == ("attempts_exhausted", 2, str(job_id))

    ingestor = Ingestor(queue, pg_ledger, quick).start()
    try:
        wait_until(
            lambda: job_status(pg_ledger, user, job_id) == "failed", 20, "the ingestor to fail the job"
        )
    finally:
        ingestor.stop()
    assert _refunds(pg_ledger, user, job_id) == 1
    assert pg_ledger.account(user).credits == 1


def test_a_clean_stop_mid_job_gives_its_attempt_back(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    queue = InProcessQueue()
    generator = ScriptedGenerator(block=True)
    _user, job_id = _order_job(pg_ledger, queue, quick, job_request(inputs, seed=POISON_SEED))
    attempts = JobAttempts(pg_url)
    try:
        for n in range(1, 4):  # more stops than attempts: none of them counts
            worker = Worker(
                queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), quick
            )
            worker.start()
            wait_until(lambda n=n: generator.poison_calls == n, 20, f"delivery {n}")  # type: ignore[misc]
            worker.stop()
        assert attempts.begin(job_id).number == 1  # every stopped attempt was given back
    finally:
        generator.release.set()
        attempts.close()


@pytest.fixture
def blocking() -> Iterator[ScriptedGenerator]:
    generator = ScriptedGenerator(block=True)
    yield generator
    generator.release.set()


def test_a_job_past_the_job_timeout_is_abandoned_and_refunded(
    pg_url: str,
    pg_ledger: LedgerApplication,
    quick: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    blocking: ScriptedGenerator,
) -> None:
    queue = InProcessQueue(partitions=1)
    options = replace(quick, job_timeout_s=1.0)
    user = new_user(pg_ledger, credits=2)
    slow, behind = uuid.uuid4(), uuid.uuid4()
    with build_pipeline(pg_url, pg_ledger, queue, options, storage, blocking) as pipeline:
        pg_ledger.request_job(user, slow, "image", job_request(inputs, seed=POISON_SEED))
        pg_ledger.request_job(user, behind, "image", job_request(inputs))
        wait_until(
            lambda: (
                job_status(pg_ledger, user, slow) == "failed"
                and job_status(pg_ledger, user, behind) == "succeeded"
            ),
            20,
            "the slow job to be abandoned and the next one to succeed",
        )
        (worker,) = pipeline.workers
        assert worker.abandoned == 1
        # The abandoned computation finishes in the background; its result is dropped.
        blocking.release.set()
        wait_until(blocking.finished_late.is_set, 10, "the abandoned generation to finish")
    assert blocking.poison_calls == 1  # a timeout is not retried
    results = _results(queue, options)
    assert [r.status for r in results[slow]] == ["failed"]
    error = results[slow][0].error
    assert error is not None and error["code"] == "timeout" and error["retryable"] is False
    assert _refunds(pg_ledger, user, slow) == 1
    assert pg_ledger.account(user).credits == 1
    (letter,) = _letters(queue, options)
    assert letter.reason == "timeout"


class FlushFailsOnce(InProcessQueue):
    """Its publishers' first flush fails (the broker did not acknowledge)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def publisher(self) -> InProcessPublisher:
        return _FlushFailsOnce(self)


class _FlushFailsOnce(InProcessPublisher):
    def __init__(self, queue: FlushFailsOnce) -> None:
        super().__init__(queue)
        self.owner = queue

    def flush(self, timeout: float | None = None) -> None:
        if self.owner.fail:
            self.owner.fail = False
            raise TimeoutError("Kafka did not acknowledge a message in time")


def test_an_outcome_already_reached_is_republished_not_generated_again(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    """The worker stored its outcome, then its publish failed (a broker restart): the
    redelivered request publishes that outcome without another attempt."""

    queue = FlushFailsOnce()
    generator = TinyGenerator()
    _user, job_id = _order_job(pg_ledger, queue, quick, job_request(inputs))
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), quick)
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["republished"] == 1, 20, "the outcome to be republished")
    finally:
        worker.stop()
    assert generator.calls == 1
    assert worker.loop.errors == 1
    statuses = [r.status for r in _results(queue, quick)[job_id]]
    assert statuses == ["succeeded", "succeeded"]  # the first was appended before its flush failed


def test_retryable_errors_use_the_attempts_then_fail(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    queue = InProcessQueue()
    generator = ScriptedGenerator(lambda: InjectedFailureError("injected"))
    _user, _job_id = _order_job(pg_ledger, queue, quick, job_request(inputs, seed=POISON_SEED))
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), quick)
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["failed"] == 1, 20, "the job to fail")
    finally:
        worker.stop()
    assert generator.poison_calls == 2
    ((result,),) = _results(queue, quick).values()
    assert result.error is not None
    assert (result.error["code"], result.error["retryable"]) == ("injected_failure", True)
    (letter,) = _letters(queue, quick)
    assert (letter.reason, letter.attempts) == ("attempts_exhausted", 2)
    assert letter.error.startswith("injected_failure")


# --------------------------------------------------------------------------- the consume loop


class FlakyFactory:
    """Consumers of an in-process queue; the first ``failures`` creations raise (no broker),
    and the first consumer's first poll raises too."""

    def __init__(self, queue: InProcessQueue, failures: int) -> None:
        self.queue = queue
        self.failures = failures
        self.created = 0

    def __call__(self) -> Consumer:
        if self.failures:
            self.failures -= 1
            from kafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9")
        self.created += 1
        consumer = self.queue.consumer(["t"], "g")
        if self.created == 1:
            poll = consumer.poll

            def failing_poll(timeout: float, max_records: int = 100) -> list[Message]:
                consumer.poll = poll  # type: ignore[method-assign]
                raise ConnectionResetError("the broker went away")

            consumer.poll = failing_poll  # type: ignore[method-assign]
        return consumer


def test_a_consumer_loop_outlives_failures_to_create_or_poll_its_consumer() -> None:
    queue = InProcessQueue(partitions=1)
    queue.publisher().publish("t", "k", {"i": 1})
    factory = FlakyFactory(queue, failures=3)
    seen: list[int] = []

    def handle(message: Message) -> str:
        seen.append(message.json_value()["i"])
        return "ok"

    loop = ConsumerLoop("test", factory, handle, poll_timeout=0.05, backoff=0.01, backoff_max=0.05)
    loop.start()
    try:
        wait_until(lambda: loop.outcomes["ok"] == 1, 10, "the message handled")
        assert loop.running
        queue.publisher().publish("t", "k", {"i": 2})
        wait_until(lambda: loop.outcomes["ok"] == 2, 10, "the next message handled")
    finally:
        loop.stop()
    assert seen == [1, 2]
    assert loop.consumer_failures == 4  # three creations, one poll
    assert loop.consumers_started == 2


class CommitFailsOnce:
    """A consumer whose first commit the broker refuses."""

    def __init__(self, inner: Consumer) -> None:
        self.inner = inner
        self.failures = 1

    def commit(self, message: Message) -> None:
        if self.failures:
            self.failures -= 1
            raise CommitFailed("the group rebalanced")
        self.inner.commit(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_commit_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    queue = InProcessQueue(partitions=1)
    for i in range(2):
        queue.publisher().publish("t", "k", {"i": i})
    loop = ConsumerLoop(
        "test",
        lambda: CommitFailsOnce(queue.consumer(["t"], "g")),  # type: ignore[arg-type,return-value]
        lambda message: "ok",
        poll_timeout=0.05,
        backoff=0.01,
    )
    loop.start()
    try:
        wait_until(lambda: loop.outcomes["ok"] == 2, 10, "both messages handled")
    finally:
        loop.stop()
    assert loop.commit_failures == 1
    assert loop.errors == 0
    assert queue._committed[("g", "t", 0)] == 2  # the next commit covers the failed one
    assert any("not committed" in r.getMessage() for r in caplog.records)


def test_the_kafka_adapter_raises_commit_failed() -> None:
    from kafka.errors import CommitFailedError, KafkaTimeoutError

    from infra.kafka.client import KafkaConsumerAdapter

    class FakeKafkaConsumer:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def commit(self, offsets: Any) -> None:
            raise self.error

    for error in (CommitFailedError("rebalanced"), KafkaTimeoutError("coordinator gone")):
        adapter = KafkaConsumerAdapter(FakeKafkaConsumer(error))
        with pytest.raises(CommitFailed, match="t:0@5"):
            adapter.commit(Message("t", 0, 5, "k", b"{}"))


def test_an_output_the_worker_cannot_use_fails_the_job(
    pg_url: str, pg_ledger: LedgerApplication, quick: PipelineOptions, storage: LocalStorage, inputs: Any
) -> None:
    """A backend's bug may also show in what it returns (here an output without bytes)."""

    class Garbage(TinyGenerator):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            self.calls += 1
            output = GeneratedOutput(None, "image/png", 1, 1)  # type: ignore[arg-type]
            return GenerationResult((output,), "garbage", {})

    queue = InProcessQueue()
    generator = Garbage()
    _user, _job_id = _order_job(pg_ledger, queue, quick, job_request(inputs))
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), quick)
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["failed"] == 1, 20, "the job to fail")
    finally:
        worker.stop()
    assert generator.calls == 1
    ((result,),) = _results(queue, quick).values()
    assert result.error is not None and result.error["code"] == "internal_error"
